package main

import (
	"strings"
	"testing"
	"time"
)

func TestReportTargets(t *testing.T) {
	floor := scenarios[0]
	cart := scenario{name: cartScenario, title: "AddItem"}
	res := func(clients int, ops int64, p50 time.Duration) Result {
		return Result{Clients: clients, Elapsed: time.Second, Ops: ops, P50: p50, P90: p50, P99: p50, Max: p50}
	}
	r := &report{
		loads: []loadRow{
			{sc: floor, r: res(1, 10000, 100*time.Microsecond)},
			{sc: floor, r: res(32, 40000, 800*time.Microsecond)},
			{sc: cart, r: res(1, 5000, 200*time.Microsecond)},
			{sc: cart, r: res(32, 12000, 2*time.Millisecond), cpu: []procCPU{
				{name: "proxy", used: 500 * time.Millisecond, perCall: 41 * time.Microsecond},
				{name: "client", used: 250 * time.Millisecond, perCall: 20 * time.Microsecond},
			}},
		},
		starts: []startRun{{30 * time.Millisecond, 25 * time.Millisecond}, {150 * time.Millisecond, 140 * time.Millisecond}, {40 * time.Millisecond, 35 * time.Millisecond}},
		memory: memoryFacts{carts: 10000, idleKB: 10000, loadedKB: 200000, peakKB: 210000, functionKB: 50000},
	}
	got := r.targets()
	want := []struct{ measured, met string }{
		{"2.00× (200µs / 100µs)", "yes"},
		{"30.0 % (12000 / 40000)", "**no**"},
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
	for _, s := range []string{"| AddItem | 32 | 12000 |", "2.50× |", "30.0 %", "| median | 40.0ms | 35.0ms |", "| min | 30.0ms | 25.0ms |", "19.5 kB",
		"| AddItem | 32 | proxy 41.0µs + client 20.0µs | 0.75 / 0.00 |", "| AddItem | 1 | — | — |"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
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
