package storetest

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// benchPayload is the size of the event value in the benchmarks, about a
// small domain event.
const benchPayload = 64

// BenchJournal runs the journal benchmarks against the stores returned by
// open, which must return a fresh, empty journal on every call:
//
//   - AppendParallel: one event to a new entity per operation, from
//     GOMAXPROCS goroutines, so every append is to a distinct id (the proxy's
//     hot path: many entities each persisting their own events).
//   - AppendSeq: successive events of one entity from one goroutine.
//   - Replay1000: replay of an entity with 1000 events.
func BenchJournal(b *testing.B, open func(tb testing.TB) store.Journal) {
	b.Run("AppendParallel", func(b *testing.B) {
		j := open(b)
		ctx := context.Background()
		value := make([]byte, benchPayload)
		var goroutines atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			prefix := "bench|" + strconv.FormatInt(goroutines.Add(1), 10) + "|"
			for n := 0; pb.Next(); n++ {
				// A fresh event each time, as the proxy makes one per
				// persisted event; the value bytes are only read, so
				// sharing them is allowed.
				evs := []store.Event{{Seq: 1, Payload: &anypb.Any{TypeUrl: typeURL, Value: value}}}
				if err := j.Append(ctx, prefix+strconv.Itoa(n), evs); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("AppendSeq", func(b *testing.B) {
		j := open(b)
		ctx := context.Background()
		value := make([]byte, benchPayload)
		b.ReportAllocs()
		b.ResetTimer()
		for n := int64(1); n <= int64(b.N); n++ {
			evs := []store.Event{{Seq: n, Payload: &anypb.Any{TypeUrl: typeURL, Value: value}}}
			if err := j.Append(ctx, "bench|seq", evs); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("Replay1000", func(b *testing.B) {
		const n = 1000
		j := open(b)
		ctx := context.Background()
		const pid = "bench|replay"
		evs := make([]store.Event, 0, 100)
		for seq := int64(1); seq <= n; seq++ {
			evs = append(evs, store.Event{Seq: seq, Payload: &anypb.Any{TypeUrl: typeURL, Value: make([]byte, benchPayload)}})
			if len(evs) == cap(evs) {
				if err := j.Append(ctx, pid, evs); err != nil {
					b.Fatal(err)
				}
				evs = make([]store.Event, 0, 100)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			count := 0
			err := j.Replay(ctx, pid, 0, func(store.Event) error { count++; return nil })
			if err != nil {
				b.Fatal(err)
			}
			if count != n {
				b.Fatalf("replayed %d events, want %d", count, n)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	})
}

// BenchSnapshots runs the snapshot benchmarks against the stores returned by
// open: SaveParallel (a snapshot of a distinct entity per operation, from
// GOMAXPROCS goroutines) and Latest (loading one entity's snapshot).
func BenchSnapshots(b *testing.B, open func(tb testing.TB) store.SnapshotStore) {
	b.Run("SaveParallel", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		value := make([]byte, benchPayload)
		var goroutines atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			prefix := "bench|" + strconv.FormatInt(goroutines.Add(1), 10) + "|"
			for n := 0; pb.Next(); n++ {
				sn := store.Snapshot{Seq: 1, Payload: &anypb.Any{TypeUrl: typeURL, Value: value}}
				if err := s.SaveSnapshot(ctx, prefix+strconv.Itoa(n), sn); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})

	b.Run("Latest", func(b *testing.B) {
		s := open(b)
		ctx := context.Background()
		const pid = "bench|latest"
		if err := s.SaveSnapshot(ctx, pid, store.Snapshot{Seq: 1, Payload: &anypb.Any{TypeUrl: typeURL, Value: make([]byte, benchPayload)}}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := s.LatestSnapshot(ctx, pid); err != nil || !ok {
				b.Fatalf("LatestSnapshot: ok=%v err=%v", ok, err)
			}
		}
	})
}
