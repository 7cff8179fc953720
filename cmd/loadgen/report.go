package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report is everything one bench run measured.
type report struct {
	meta   [][2]string
	rounds int
	loads  []loadRow // in the order measured
	starts []startRun
	memory memoryFacts
}

// loadRow is one scenario at one client count.
type loadRow struct {
	sc    scenario
	round int // 1-based
	r     Result
	cpu   []procCPU // servers' and client's CPU over the window; nil if unread
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

// rowGroup is every round of one scenario at one client count.
type rowGroup struct {
	sc      scenario
	clients int
	rows    []loadRow // in round order
}

// groups gathers the rows by scenario and client count, in the order
// first measured.
func (r *report) groups() []rowGroup {
	var out []rowGroup
	for _, l := range r.loads {
		i := slices.IndexFunc(out, func(g rowGroup) bool { return g.sc.name == l.sc.name && g.clients == l.r.Clients })
		if i < 0 {
			out = append(out, rowGroup{sc: l.sc, clients: l.r.Clients})
			i = len(out) - 1
		}
		out[i].rows = append(out[i].rows, l)
	}
	return out
}

// median returns the round with the median ops/s (the lower one of the
// two middle rounds when there is an even number).
func (g rowGroup) median() loadRow {
	rows := slices.Clone(g.rows)
	slices.SortStableFunc(rows, func(a, b loadRow) int { return cmpFloat(a.r.OpsPerSec(), b.r.OpsPerSec()) })
	return rows[(len(rows)-1)/2]
}

// opsRange is "min–max" ops/s over the rounds.
func (g rowGroup) opsRange() string {
	lo, hi := g.rows[0].r.OpsPerSec(), g.rows[0].r.OpsPerSec()
	for _, l := range g.rows[1:] {
		lo, hi = min(lo, l.r.OpsPerSec()), max(hi, l.r.OpsPerSec())
	}
	return fmt.Sprintf("%.0f–%.0f", lo, hi)
}

// pairedRatios compares scenario name with the floor at n clients round by
// round, so both sides of each ratio were measured close together. It
// returns p50 ratios (row / floor) and ops/s ratios (row / floor), one per
// round in which both were measured.
func (r *report) pairedRatios(name string, n int) (p50, ops []float64) {
	for _, l := range r.loads {
		if l.sc.name != name || l.r.Clients != n {
			continue
		}
		for _, f := range r.loads {
			if f.sc.name == floorScenario && f.r.Clients == n && f.round == l.round {
				if f.r.P50 > 0 {
					p50 = append(p50, float64(l.r.P50)/float64(f.r.P50))
				}
				if f.r.OpsPerSec() > 0 {
					ops = append(ops, l.r.OpsPerSec()/f.r.OpsPerSec())
				}
			}
		}
	}
	return p50, ops
}

// medianFloat returns the lower median of xs, which must not be empty.
func medianFloat(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// spread is " (rounds: a, b, c)" for several values, formatted by f, or
// "" for one.
func spread(xs []float64, f func(float64) string) string {
	if len(xs) < 2 {
		return ""
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return " (rounds: " + strings.Join(parts, ", ") + ")"
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
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

	groups := r.groups()
	b.WriteString("\n## Load\n\n")
	fmt.Fprintf(&b, "Each row is the median round by ops/s of %d; *ops/s range* spans all rounds. The ratios compare each row with the echo floor at the same client count, round by round, and give the median of those per-round ratios.\n\n", r.rounds)
	b.WriteString("| scenario | clients | ops/s | ops/s range | p50 | p90 | p99 | max | errors | p50 / floor | ops/s / floor |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |\n")
	for _, g := range groups {
		m := g.median()
		p50Ratio, opsRatio := "—", "—"
		if g.sc.name != floorScenario {
			p50s, opss := r.pairedRatios(g.sc.name, g.clients)
			if len(p50s) > 0 {
				p50Ratio = fmt.Sprintf("%.2f×", medianFloat(p50s))
			}
			if len(opss) > 0 {
				opsRatio = fmt.Sprintf("%.1f %%", medianFloat(opss)*100)
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			g.sc.title, g.clients, m.r.OpsPerSec(), g.opsRange(), fmtDur(m.r.P50), fmtDur(m.r.P90), fmtDur(m.r.P99),
			fmtDur(m.r.Max), errorsText(m.r.Errors), p50Ratio, opsRatio)
	}

	b.WriteString("\n## CPU per call\n\n")
	b.WriteString("CPU time (user + system, from `/proc/<pid>/stat`, 10 ms ticks) each process used over the measured window of the median round, divided by the calls made. *Cores busy*: the CPU these processes used over the window, then what the rest of the machine used (from `/proc/stat`, without interrupt and softirq time), in cores; a large second number means something else was running and the row is noisy.\n\n")
	b.WriteString("| scenario | clients | CPU per call | cores busy: ours / others |\n| --- | ---: | --- | ---: |\n")
	for _, g := range groups {
		m := g.median()
		fmt.Fprintf(&b, "| %s | %d | %s | %s |\n", g.sc.title, g.clients, m.cpuText(), m.coresBusy())
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
	times := func(x float64) string { return fmt.Sprintf("%.2f×", x) }
	if p50s, _ := r.pairedRatios(cartScenario, targetLowClients); len(p50s) > 0 {
		m := medianFloat(p50s)
		rows = append(rows, targetRow{what, times(m) + spread(p50s, times), limit, verdict(m <= targetP50Ratio)})
	} else {
		rows = append(rows, notMeasured(what, limit))
	}

	what = fmt.Sprintf("AddItem ops/s / echo ops/s, %d clients", targetHighClients)
	limit = fmt.Sprintf("≥ %.0f %%", targetOpsRatio*100)
	pct := func(x float64) string { return fmt.Sprintf("%.1f %%", x*100) }
	if _, opss := r.pairedRatios(cartScenario, targetHighClients); len(opss) > 0 {
		m := medianFloat(opss)
		rows = append(rows, targetRow{what, pct(m) + spread(opss, pct), limit, verdict(m >= targetOpsRatio)})
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
