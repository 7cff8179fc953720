package pebble_test

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

func BenchmarkJournal(b *testing.B)   { storetest.BenchJournal(b, openJournal) }
func BenchmarkSnapshots(b *testing.B) { storetest.BenchSnapshots(b, openSnapshots) }
func BenchmarkValues(b *testing.B)    { storetest.BenchValues(b, openValues) }

// BenchmarkGroupCommit puts the store's appends next to what they are
// measured against, at 1 and 32 goroutines per GOMAXPROCS (run with -cpu 1
// for exactly 1 and 32 writers):
//
//   - Store: one-event appends to new entities.
//   - StoreWithSnapshot: the same, each with a snapshot in the same batch.
//   - PebbleSyncedSet: the floor, one Pebble Set with Sync per operation
//     and no checks. Pebble coalesces concurrent synced commits in its WAL
//     by itself; the store must keep up with that while also fencing.
//
// Each reports ops/s; the Store variants also report writes/sync, how many
// writes shared each WAL fsync.
func BenchmarkGroupCommit(b *testing.B) {
	for _, p := range []int{1, 32} {
		b.Run(fmt.Sprintf("Store/P%d", p), func(b *testing.B) {
			benchAppends(b, p, openTemp(b), false)
		})
		b.Run(fmt.Sprintf("StoreWithSnapshot/P%d", p), func(b *testing.B) {
			benchAppends(b, p, openTemp(b), true)
		})
		b.Run(fmt.Sprintf("PebbleSyncedSet/P%d", p), func(b *testing.B) {
			benchSyncedSets(b, p)
		})
	}
}

// benchAppends appends one event to a new entity per operation from
// p*GOMAXPROCS goroutines, with a snapshot if withSnapshot.
func benchAppends(b *testing.B, p int, s *pebble.Store, withSnapshot bool) {
	value := make([]byte, 64)
	var goroutines atomic.Int64
	before := s.Stats()
	b.SetParallelism(p)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		prefix := "bench|" + strconv.FormatInt(goroutines.Add(1), 10) + "|"
		for n := 0; pb.Next(); n++ {
			evs := []store.Event{{Seq: 1, Payload: &anypb.Any{TypeUrl: "type.googleapis.com/bench.Event", Value: value}}}
			var err error
			if withSnapshot {
				snap := store.Snapshot{Seq: 1, Payload: &anypb.Any{TypeUrl: "type.googleapis.com/bench.State", Value: value}}
				err = s.AppendWithSnapshot(b.Context(), prefix+strconv.Itoa(n), evs, snap)
			} else {
				err = s.Append(b.Context(), prefix+strconv.Itoa(n), evs)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	after := s.Stats()
	if syncs := after.Syncs - before.Syncs; syncs > 0 {
		b.ReportMetric(float64(after.Writes-before.Writes)/float64(syncs), "writes/sync")
	}
}

// benchSyncedSets writes one key per operation straight to Pebble with
// Sync, from p*GOMAXPROCS goroutines.
func benchSyncedSets(b *testing.B, p int) {
	db, err := pebbledb.Open(b.TempDir(), &pebbledb.Options{FormatMajorVersion: pebbledb.FormatNewest, Logger: quietLogger{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	value := make([]byte, 64+len("type.googleapis.com/bench.Event")+4)
	var goroutines atomic.Int64
	b.SetParallelism(p)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := goroutines.Add(1)
		for n := uint64(0); pb.Next(); n++ {
			key := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{'e'}, uint64(g)), n)
			if err := db.Set(key, value, pebbledb.Sync); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// quietLogger keeps Pebble's open messages out of benchmark output.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any)              {}
func (quietLogger) Errorf(string, ...any)             {}
func (quietLogger) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
