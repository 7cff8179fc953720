package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report is everything one bench run measured.
type report struct {
	meta    [][2]string
	clients []int
	loads   []loadRow
	starts  []startRun
	memory  memoryFacts
}

// loadRow is one scenario at one client count.
type loadRow struct {
	sc  scenario
	r   Result
	cpu []procCPU // servers' and client's CPU over the window; nil if unread
	// others is the CPU the rest of the machine used over the window.
	others time.Duration
}

// cpuText is "proxy 85µs + function 60µs + client 30µs".
func (l loadRow) cpuText() string {
	if len(l.cpu) == 0 {
		return "—"
	}
	parts := make([]string, len(l.cpu))
	for i, c := range l.cpu {
		parts[i] = c.name + " " + fmtDur(c.perCall)
	}
	return strings.Join(parts, " + ")
}

// coresBusy is "1.95 / 0.03": the CPU the watched processes, then the
// rest of the machine, used over the window, in cores (2.00 is two cores
// fully busy).
func (l loadRow) coresBusy() string {
	if len(l.cpu) == 0 || l.r.Elapsed <= 0 {
		return "—"
	}
	var used time.Duration
	for _, c := range l.cpu {
		used += c.used
	}
	w := l.r.Elapsed.Seconds()
	return fmt.Sprintf("%.2f / %.2f", used.Seconds()/w, l.others.Seconds()/w)
}

// startRun is one proxy start: the time from starting the process to the
// first 200 from /ready, polled every millisecond, and the proxy's own
// since_start from its ready log line.
type startRun struct {
	polled, logged time.Duration
}

// memoryFacts are a fresh proxy's resident memory, in kB, at idle and with
// carts active entities.
type memoryFacts struct {
	carts      int
	touchTook  time.Duration
	idleKB     int64
	loadedKB   int64
	peakKB     int64 // VmHWM: the most the proxy ever held
	functionKB int64 // the user function's, with the same entities
}

// The targets, from the issue that set them.
const (
	targetP50Ratio    = 2.5  // proxied p50 at 1 client ≤ 2.5 × echo p50
	targetOpsRatio    = 0.40 // proxied ops/s at 32 clients ≥ 40 % of echo's
	targetStartReady  = 100 * time.Millisecond
	targetRSSBytes    = 150e6 // with 10,000 active carts
	targetRSSCarts    = 10000
	targetLowClients  = 1
	targetHighClients = 32
)

// find returns the row of scenario name at n clients.
func (r *report) find(name string, n int) (Result, bool) {
	for _, l := range r.loads {
		if l.sc.name == name && l.r.Clients == n {
			return l.r, true
		}
	}
	return Result{}, false
}

// median returns the nearest-rank median of ds.
func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return percentile(s, 50)
}

func fmtKB(kb int64) string { return fmt.Sprintf("%.1f MB", float64(kb)*1024/1e6) }

// markdown renders the report: the load table with ratios to the floor,
// the targets, and the proxy's start-up and memory numbers.
func (r *report) markdown() string {
	var b strings.Builder
	b.WriteString("# Cloudstate proxy benchmark\n\n")
	for _, m := range r.meta {
		fmt.Fprintf(&b, "- %s: %s\n", m[0], m[1])
	}

	b.WriteString("\n## Load\n\n")
	b.WriteString("Ratios compare each row with the echo floor at the same client count.\n\n")
	b.WriteString("| scenario | clients | ops/s | p50 | p90 | p99 | max | errors | p50 / floor | ops/s / floor |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, l := range r.loads {
		p50Ratio, opsRatio := "—", "—"
		if floor, ok := r.find(floorScenario, l.r.Clients); ok && l.sc.name != floorScenario {
			p50Ratio = ratioText(l.r.P50, floor.P50)
			opsRatio = percentText(l.r.OpsPerSec(), floor.OpsPerSec())
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
			l.sc.title, l.r.Clients, l.r.OpsPerSec(), fmtDur(l.r.P50), fmtDur(l.r.P90), fmtDur(l.r.P99),
			fmtDur(l.r.Max), errorsText(l.r.Errors), p50Ratio, opsRatio)
	}

	b.WriteString("\n## CPU per call\n\n")
	b.WriteString("CPU time (user + system, from `/proc/<pid>/stat`, 10 ms ticks) each process used over the measured window, divided by the calls made. *Cores busy*: the CPU these processes used over the window, then what the rest of the machine used (from `/proc/stat`, without interrupt and softirq time), in cores; a large second number means something else was running and the row is noisy.\n\n")
	b.WriteString("| scenario | clients | CPU per call | cores busy: ours / others |\n| --- | ---: | --- | ---: |\n")
	for _, l := range r.loads {
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", l.sc.title, l.r.Clients, l.cpuText(), l.coresBusy())
	}

	b.WriteString("\n## Targets\n\n")
	b.WriteString("| target | measured | limit | met |\n| --- | ---: | ---: | --- |\n")
	for _, t := range r.targets() {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.what, t.measured, t.limit, t.met)
	}

	if len(r.starts) > 0 {
		b.WriteString("\n## Proxy start to ready\n\n")
		b.WriteString("The user function is already up. *polled*: from starting the process to the first 200 from `GET /ready`, polled every 1 ms. *logged*: `since_start` in the proxy's `cloudstate proxy ready` log line, from the start of `main`.\n\n")
		b.WriteString("| run | polled | logged |\n| ---: | ---: | ---: |\n")
		var polled, logged []time.Duration
		for i, s := range r.starts {
			fmt.Fprintf(&b, "| %d | %s | %s |\n", i+1, fmtDur(s.polled), fmtDur(s.logged))
			polled = append(polled, s.polled)
			logged = append(logged, s.logged)
		}
		fmt.Fprintf(&b, "| min | %s | %s |\n", fmtDur(slices.Min(polled)), fmtDur(slices.Min(logged)))
		fmt.Fprintf(&b, "| median | %s | %s |\n", fmtDur(median(polled)), fmtDur(median(logged)))
	}

	if m := r.memory; m.carts > 0 {
		b.WriteString("\n## Proxy memory\n\n")
		fmt.Fprintf(&b, "A fresh proxy (`--passivation-timeout 10m`), VmRSS from `/proc/<pid>/status`; MB = 10⁶ bytes. Idle is read %v after ready; loaded right after %d distinct carts each received one AddItem (took %s), all still active.\n\n", idleSettle, m.carts, fmtDur(m.touchTook))
		b.WriteString("| measure | value |\n| --- | ---: |\n")
		fmt.Fprintf(&b, "| proxy RSS, idle | %s |\n", fmtKB(m.idleKB))
		fmt.Fprintf(&b, "| proxy RSS, %d active carts | %s |\n", m.carts, fmtKB(m.loadedKB))
		fmt.Fprintf(&b, "| proxy peak RSS (VmHWM) | %s |\n", fmtKB(m.peakKB))
		fmt.Fprintf(&b, "| proxy RSS per active cart | %.1f kB |\n", float64(m.loadedKB-m.idleKB)*1024/1e3/float64(m.carts))
		fmt.Fprintf(&b, "| user function RSS, same carts | %s |\n", fmtKB(m.functionKB))
	}
	return b.String()
}

// targetRow is one line of the targets table.
type targetRow struct{ what, measured, limit, met string }

// targets evaluates the targets on what was measured; a target
// whose inputs were not measured says so.
func (r *report) targets() []targetRow {
	notMeasured := func(what, limit string) targetRow { return targetRow{what, "not measured", limit, "—"} }
	verdict := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	var rows []targetRow

	what := fmt.Sprintf("AddItem p50 / echo p50, %d client", targetLowClients)
	limit := fmt.Sprintf("≤ %.1f×", targetP50Ratio)
	es, ok1 := r.find(cartScenario, targetLowClients)
	floor, ok2 := r.find(floorScenario, targetLowClients)
	if ok1 && ok2 && floor.P50 > 0 {
		ratio := float64(es.P50) / float64(floor.P50)
		rows = append(rows, targetRow{what, fmt.Sprintf("%.2f× (%s / %s)", ratio, fmtDur(es.P50), fmtDur(floor.P50)), limit, verdict(ratio <= targetP50Ratio)})
	} else {
		rows = append(rows, notMeasured(what, limit))
	}

	what = fmt.Sprintf("AddItem ops/s / echo ops/s, %d clients", targetHighClients)
	limit = fmt.Sprintf("≥ %.0f %%", targetOpsRatio*100)
	es, ok1 = r.find(cartScenario, targetHighClients)
	floor, ok2 = r.find(floorScenario, targetHighClients)
	if ok1 && ok2 && floor.OpsPerSec() > 0 {
		ratio := es.OpsPerSec() / floor.OpsPerSec()
		rows = append(rows, targetRow{what, fmt.Sprintf("%.1f %% (%.0f / %.0f)", ratio*100, es.OpsPerSec(), floor.OpsPerSec()), limit, verdict(ratio >= targetOpsRatio)})
	} else {
		rows = append(rows, notMeasured(what, limit))
	}

	what = "proxy start to ready, median (polled)"
	limit = "< " + fmtDur(targetStartReady)
	if len(r.starts) > 0 {
		var polled []time.Duration
		for _, s := range r.starts {
			polled = append(polled, s.polled)
		}
		m := median(polled)
		rows = append(rows, targetRow{what + fmt.Sprintf(" of %d", len(polled)), fmtDur(m), limit, verdict(m < targetStartReady)})
	} else {
		rows = append(rows, notMeasured(what, limit))
	}

	what = fmt.Sprintf("proxy RSS with %d active carts", targetRSSCarts)
	limit = fmt.Sprintf("< %.0f MB", targetRSSBytes/1e6)
	if m := r.memory; m.carts == targetRSSCarts {
		rows = append(rows, targetRow{what, fmtKB(m.loadedKB), limit, verdict(float64(m.loadedKB)*1024 < targetRSSBytes)})
	} else {
		rows = append(rows, notMeasured(what, limit))
	}
	return rows
}

// ratioText is a/b as "1.83×".
func ratioText(a, b time.Duration) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f×", float64(a)/float64(b))
}

// percentText is a/b as "45.2 %".
func percentText(a, b float64) string {
	if b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f %%", a/b*100)
}
