package main

import (
	"strings"
	"testing"
	"time"
)

func TestReportTargets(t *testing.T) {
	floor := scenarios[0]
	cart := scenario{name: cartScenario, title: "AddItem"}
	row := func(sc scenario, round, clients int, ops int64, p50 time.Duration) loadRow {
		return loadRow{sc: sc, round: round, r: Result{Clients: clients, Elapsed: time.Second, Ops: ops, P50: p50, P90: p50, P99: p50, Max: p50}}
	}
	withCPU := row(cart, 2, 32, 12000, 2*time.Millisecond)
	withCPU.cpu = []procCPU{
		{name: "proxy", used: 500 * time.Millisecond, perCall: 41 * time.Microsecond},
		{name: "client", used: 250 * time.Millisecond, perCall: 20 * time.Microsecond},
	}
	r := &report{
		rounds: 3,
		loads: []loadRow{
			// Round 1: a slow spell hits both sides alike.
			row(floor, 1, 1, 5000, 200*time.Microsecond),
			row(floor, 1, 32, 20000, 1600*time.Microsecond),
			row(cart, 1, 1, 2500, 400*time.Microsecond),
			row(cart, 1, 32, 6000, 4*time.Millisecond),
			// Round 2.
			row(floor, 2, 1, 10000, 100*time.Microsecond),
			row(floor, 2, 32, 40000, 800*time.Microsecond),
			row(cart, 2, 1, 5000, 250*time.Microsecond),
			withCPU,
			// Round 3.
			row(floor, 3, 1, 11000, 90*time.Microsecond),
			row(floor, 3, 32, 44000, 700*time.Microsecond),
			row(cart, 3, 1, 5500, 153*time.Microsecond),
			row(cart, 3, 32, 11000, 2*time.Millisecond),
		},
		starts: []startRun{{30 * time.Millisecond, 25 * time.Millisecond}, {150 * time.Millisecond, 140 * time.Millisecond}, {40 * time.Millisecond, 35 * time.Millisecond}},
		memory: memoryFacts{carts: 10000, idleKB: 10000, loadedKB: 200000, peakKB: 210000, functionKB: 50000},
	}
	got := r.targets()
	want := []struct{ measured, met string }{
		// Per-round p50 ratios 2.00, 2.50, 1.70: the median is 2.00.
		{"2.00× (rounds: 2.00×, 2.50×, 1.70×)", "yes"},
		// Per-round ops ratios 30 %, 30 %, 25 %: the median is 30 %.
		{"30.0 % (rounds: 30.0 %, 30.0 %, 25.0 %)", "**no**"},
		{"40.0ms", "yes"},
		{"204.8 MB", "**no**"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d targets, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].measured != w.measured || got[i].met != w.met {
			t.Errorf("target %q = %q %q, want %q %q", got[i].what, got[i].measured, got[i].met, w.measured, w.met)
		}
	}
	md := r.markdown()
	for _, s := range []string{
		// The median round of AddItem at 32 clients is round 3 (11000).
		"| AddItem | 32 | 11000 | 6000–12000 | 2.00ms |",
		"| echo, no proxy (floor) | 1 | 10000 | 5000–11000 | 100µs |",
		"| 2.00× | 50.0 % |", "| 2.50× | 30.0 % |",
		"| median | 40.0ms | 35.0ms |", "| min | 30.0ms | 25.0ms |", "19.5 kB",
		"| AddItem | 1 | — | — |",
	} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
	if g := r.groups(); len(g) != 4 || len(g[0].rows) != 3 || g[1].clients != 32 {
		t.Errorf("groups = %+v", g)
	}
}

func TestReportNotMeasured(t *testing.T) {
	r := &report{}
	for _, row := range r.targets() {
		if row.measured != "not measured" {
			t.Errorf("target %q = %q with nothing measured", row.what, row.measured)
		}
	}
}

func TestSelectScenarios(t *testing.T) {
	all, err := selectScenarios(nil)
	if err != nil || len(all) != len(scenarios) {
		t.Fatalf("all scenarios: %d, %v", len(all), err)
	}
	one, err := selectScenarios([]string{cartScenario})
	if err != nil || len(one) != 1 || one[0].method != cartAddMethod {
		t.Fatalf("select %s: %+v, %v", cartScenario, one, err)
	}
	if _, err := selectScenarios([]string{"nope"}); err == nil {
		t.Error("unknown scenario accepted")
	}
	if _, err := parseInts("1, 32"); err != nil {
		t.Error(err)
	}
	if _, err := parseInts("1,0"); err == nil {
		t.Error("zero clients accepted")
	}
}
