// Package gcpace keeps the garbage collector from running many times a
// second while the proxy's live heap is small.
//
// Go starts the next collection when the heap has grown by GOGC percent of
// what the last one left live (100 % by default, with a 4 MiB floor). A
// proxy serving thousands of calls a second with a few megabytes live
// collects tens of times a second, and marking, assists and sweeping cost a
// seventh of its CPU. Pacer raises GOGC while the live heap is small so that
// a collection starts only after Headroom bytes of new allocation, and lets
// GOGC fall back to 100 as the live heap grows past Headroom: a proxy holding
// many entities pays no extra memory for it. Setting GOGC in the
// environment turns the pacer off, so an operator's choice always wins.
package gcpace

import (
	"context"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultHeadroom is how much a small heap may grow between collections.
const DefaultHeadroom = 32 << 20

// checkEvery is how often the live heap is read. Heaps of a proxy change
// slowly (entities activate and passivate); a few reads a second follow
// them closely enough.
const checkEvery = 250 * time.Millisecond

const liveHeapMetric = "/gc/heap/live:bytes"

// Percent returns the GOGC percentage that lets a heap with live bytes
// grow by at least headroom bytes before the next collection, and never
// less than Go's default 100.
func Percent(live, headroom uint64) int {
	if live == 0 {
		live = 1
	}
	p := headroom * 100 / live
	switch {
	case p < 100:
		return 100
	case p > 100_000:
		return 100_000
	}
	return int(p)
}

// Run adjusts GOGC until ctx ends, then restores the previous setting. It
// does nothing when GOGC is set in the environment or headroom is zero.
func Run(ctx context.Context, headroom uint64) {
	if headroom == 0 || os.Getenv("GOGC") != "" {
		return
	}
	sample := []metrics.Sample{{Name: liveHeapMetric}}
	current := debug.SetGCPercent(100)
	defer debug.SetGCPercent(current)
	current = 100
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			want := Percent(sample[0].Value.Uint64(), headroom)
			// Small drifts are not worth a new pacing target.
			if want > current*11/10 || want < current*9/10 {
				debug.SetGCPercent(want)
				current = want
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
