package crdte2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	presencepb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
)

// BenchmarkMonitorFanout measures how a change of one presence entity
// fans out to many streamed Monitor subscribers through the real proxy:
// CLOUDSTATE_FANOUT_SUBSCRIBERS (default 1000) monitors of one user, spread
// over 10 client connections. Each iteration is one update, alternately a
// Connect call opened and that call cancelled, and waits until every
// subscriber has received the new status. The delivery latency of a
// subscriber is the time from the update call returning (client.Connect
// returned, or cancel() returned) to that subscriber's Recv returning the
// change. It reports p50/p99/max of those latencies and the proxy's VmRSS
// with the subscribers attached:
//
//	go test ./test/crdt -run '^$' -bench MonitorFanout -benchtime 40x
func BenchmarkMonitorFanout(b *testing.B) {
	subs := 1000
	if v := os.Getenv("CLOUDSTATE_FANOUT_SUBSCRIBERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("CLOUDSTATE_FANOUT_SUBSCRIBERS=%q is not a positive number", v)
		}
		subs = n
	}
	const conns = 10
	const user = "hub"
	s := startStack(b, bins.presence, "--log-level", "warn")
	idleKB := rssKB(b, s.proxy.Pid())
	fnIdleKB := rssKB(b, s.fn.Pid())

	clients := make([]presencepb.PresenceClient, conns)
	for i := range clients {
		clients[i] = presencepb.NewPresenceClient(dial(b, s.proxy.addr))
	}
	type arrival struct {
		at     time.Time
		online bool
	}
	ctx, cancel := context.WithCancel(context.Background())
	arrivals := make(chan arrival, subs)
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	for i := 0; i < subs; i++ {
		stream, err := clients[i%conns].Monitor(ctx, &presencepb.User{Name: user})
		if err != nil {
			b.Fatalf("Monitor %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				st, err := stream.Recv()
				if err != nil {
					return
				}
				select {
				case arrivals <- arrival{time.Now(), st.GetOnline()}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	// collect waits for one status from every subscriber.
	collect := func(want bool, since time.Time, lat []time.Duration) []time.Duration {
		timer := time.NewTimer(60 * time.Second)
		defer timer.Stop()
		for got := 0; got < subs; got++ {
			select {
			case a := <-arrivals:
				if a.online != want {
					b.Fatalf("a subscriber got online=%v, want %v", a.online, want)
				}
				if !since.IsZero() {
					lat = append(lat, a.at.Sub(since))
				}
			case <-timer.C:
				b.Fatalf("%d of %d subscribers got online=%v within 60s", got, subs, want)
			}
		}
		return lat
	}
	collect(false, time.Time{}, nil) // every subscriber's first status
	loadedKB := rssKB(b, s.proxy.Pid())
	fnLoadedKB := rssKB(b, s.fn.Pid())

	updater := presencepb.NewPresenceClient(s.conn)
	lat := make([]time.Duration, 0, b.N*subs)
	var disconnect context.CancelFunc
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if disconnect == nil {
			cctx, ccancel := context.WithCancel(ctx)
			stream, err := updater.Connect(cctx, &presencepb.User{Name: user})
			if err != nil {
				ccancel()
				b.Fatalf("Connect: %v", err)
			}
			sent := time.Now()
			disconnect = ccancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if _, err := stream.Recv(); err != nil {
						return
					}
				}
			}()
			lat = collect(true, sent, lat)
		} else {
			disconnect()
			sent := time.Now()
			disconnect = nil
			lat = collect(false, sent, lat)
		}
	}
	b.StopTimer()
	peakKB := rssKB(b, s.proxy.Pid())
	if disconnect != nil {
		disconnect()
	}

	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds()), "p50-µs")
	b.ReportMetric(float64(pct(0.99).Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	b.ReportMetric(float64(loadedKB)/1024, "proxy-RSS-MiB")
	b.Logf("%d subscribers over %d connections, %d updates, %d deliveries: latency min %v, p10 %v, p50 %v, p90 %v, p99 %v, max %v",
		subs, conns, b.N, len(lat), lat[0], pct(0.10), pct(0.50), pct(0.90), pct(0.99), lat[len(lat)-1])
	b.Logf("proxy VmRSS: idle %s, with the subscribers attached %s, after the updates %s; presence function VmRSS: idle %s, attached %s",
		kb(idleKB), kb(loadedKB), kb(peakKB), kb(fnIdleKB), kb(fnLoadedKB))
}

// rssKB reads a process's VmRSS in kB from /proc.
func rssKB(tb testing.TB, pid int) int {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatalf("read memory of pid %d: %v", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				tb.Fatalf("VmRSS of pid %d: %q", pid, rest)
			}
			return n
		}
	}
	tb.Fatalf("no VmRSS for pid %d", pid)
	return 0
}

func kb(n int) string { return fmt.Sprintf("%.1f MiB", float64(n)/1024) }
