package main

import (
	"context"
	"os"
	"testing"
	"time"
)

// burn spins until this process has used at least d more CPU time, which
// on a busy machine may take much longer than d; it fails the test after
// 20 s.
func burn(t *testing.T, d time.Duration) {
	t.Helper()
	start, err := cpuTime(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for n := 0; ; n++ {
		if n%100000 == 0 {
			now, err := cpuTime(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			if now-start >= d {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("used only %v of CPU in 20s of spinning", now-start)
			}
		}
	}
}

func TestCPUTimeOfSelf(t *testing.T) {
	burn(t, 100*time.Millisecond) // fails unless the reading grows
	if _, err := cpuTime(-1); err == nil {
		t.Error("read the CPU time of pid -1")
	}
}

func TestCPUMeterPerCall(t *testing.T) {
	m := &cpuMeter{procs: []watched{{"self", os.Getpid()}}}
	if got, _ := m.result(10); got != nil {
		t.Errorf("result before any window = %v", got)
	}
	m.mark(true)
	burn(t, 50*time.Millisecond)
	m.mark(false)
	got, err := m.result(1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].name != "self" || got[0].used < 50*time.Millisecond || got[0].perCall != got[0].used/1000 {
		t.Errorf("result = %+v", got)
	}
	bad := &cpuMeter{procs: []watched{{"nobody", -1}}}
	bad.mark(true)
	bad.mark(false)
	if _, err := bad.result(1); err == nil {
		t.Error("a failed read was not reported")
	}
}

func TestRunCallsWindowHook(t *testing.T) {
	addr := startEchoServer(t)
	var marks []bool
	var at []time.Time
	start := time.Now()
	r, err := Run(context.Background(), RunConfig{
		Target: addr, Method: echoMethod, Clients: 2, Payload: "echo",
		Warmup: 100 * time.Millisecond, Duration: 100 * time.Millisecond,
		OnWindow: func(begin bool) { marks = append(marks, begin); at = append(at, time.Now()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(marks) != 2 || !marks[0] || marks[1] {
		t.Fatalf("hook calls = %v, want [true false]", marks)
	}
	if w := at[0].Sub(start); w < 100*time.Millisecond {
		t.Errorf("window began %v after start, before the 100ms warmup ended", w)
	}
	if w := at[1].Sub(start); w < 200*time.Millisecond || r.Ops == 0 {
		t.Errorf("window ended %v after start, before warmup and duration, with %d calls", w, r.Ops)
	}
}
