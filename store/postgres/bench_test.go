package postgres

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

func BenchmarkJournal(b *testing.B) {
	storetest.BenchJournal(b, func(tb testing.TB) store.Journal { return openTest(tb) })
}

func BenchmarkSnapshots(b *testing.B) {
	storetest.BenchSnapshots(b, func(tb testing.TB) store.SnapshotStore { return openTest(tb) })
}

// runGoroutines shares b.N operations among exactly n goroutines (unlike
// b.RunParallel, whose goroutine count is a multiple of GOMAXPROCS), so the
// numbers compare the same concurrency on any machine. op gets the
// goroutine's number and the operation's.
func runGoroutines(b *testing.B, n int, op func(g int, i int64) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for g := range n {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := op(g, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
}

// BenchmarkAppendConcurrency compares the store's group-committed Append of
// one 64-byte event to a new entity with the floor: the same row written by
// a single-row INSERT in its own autocommit transaction, with one pooled
// connection per goroutine (so PostgreSQL's own WAL group commit may help
// the floor as much as it can).
func BenchmarkAppendConcurrency(b *testing.B) {
	value := make([]byte, 64)
	const typeURL = "type.googleapis.com/bench.Event"
	for _, goroutines := range []int{1, 32, 128} {
		b.Run(fmt.Sprintf("Floor/goroutines=%d", goroutines), func(b *testing.B) {
			if goroutines > 32 {
				// One connection per goroutine would exceed a default
				// server's max_connections (100).
				b.Skip("the floor needs a connection per goroutine")
			}
			dsn, _ := testenv.PostgresSchema(b)
			openDSN(b, dsn) // migrate
			pcfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				b.Fatal(err)
			}
			pcfg.MaxConns = int32(goroutines)
			pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			ctx := context.Background()
			runGoroutines(b, goroutines, func(g int, i int64) error {
				pid := []byte("bench|" + strconv.FormatInt(i, 10))
				_, err := pool.Exec(ctx, `INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes) VALUES ($1, 1, $2, $3, $4)`,
					pid, tagOf(pid), typeURL, value)
				return err
			})
		})
		for _, committers := range []int{1, 2} {
			b.Run(fmt.Sprintf("GroupCommit/committers=%d/goroutines=%d", committers, goroutines), func(b *testing.B) {
				s := openTest(b, WithCommitters(committers))
				ctx := context.Background()
				runGoroutines(b, goroutines, func(g int, i int64) error {
					evs := []store.Event{{Seq: 1, Payload: &anypb.Any{TypeUrl: typeURL, Value: value}}}
					return s.Append(ctx, "bench|"+strconv.FormatInt(i, 10), evs)
				})
				st := s.Stats()
				b.ReportMetric(st.AvgBatch, "writes/commit")
				b.ReportMetric(float64(st.MaxBatch), "max-batch")
			})
		}
	}
}
