package gcpace

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{live: 4 << 20, headroom: 32 << 20, want: 800},
		{live: 32 << 20, headroom: 32 << 20, want: 100},
		{live: 200 << 20, headroom: 32 << 20, want: 100},
		{live: 0, headroom: 32 << 20, want: 100_000},
		{live: 1 << 10, headroom: 32 << 20, want: 100_000},
	} {
		if got := Percent(c.live, c.headroom); got != c.want {
			t.Errorf("Percent(%d, %d) = %d, want %d", c.live, c.headroom, got, c.want)
		}
	}
}

// TestRunRaisesAndRestores runs the pacer against this test binary's small
// heap: GOGC must rise well above 100 while it runs and come back after.
func TestRunRaisesAndRestores(t *testing.T) {
	t.Setenv("GOGC", "")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); Run(ctx, 64<<20) }()
	runtime.GC() // a fresh live-heap reading
	deadline := time.Now().Add(5 * time.Second)
	var seen int
	for time.Now().Before(deadline) {
		// SetGCPercent returns the value in force; put it straight back.
		seen = debug.SetGCPercent(-1)
		debug.SetGCPercent(seen)
		if seen > 200 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if seen <= 200 {
		t.Fatalf("GOGC stayed at %d with a small heap and 64 MiB headroom", seen)
	}
	cancel()
	<-done
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("GOGC after Run = %d, want the 100 it started from", got)
	}
}

func TestRunOffWhenGOGCSet(t *testing.T) {
	t.Setenv("GOGC", "50")
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	Run(context.Background(), 64<<20) // returns at once
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("Run changed GOGC to %d although GOGC was set", got)
	}
}
