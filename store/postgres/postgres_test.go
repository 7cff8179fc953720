package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

// openTest opens a store on a fresh schema that is dropped when tb ends.
func openTest(tb testing.TB, opts ...Option) *Store {
	tb.Helper()
	dsn, _ := testenv.PostgresSchema(tb)
	return openDSN(tb, dsn, opts...)
}

func openDSN(tb testing.TB, dsn string, opts ...Option) *Store {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Quiet by default (Close logs its counters); a test may pass its own.
	opts = append([]Option{WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	s, err := Open(ctx, dsn, opts...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// connect opens a plain connection for checks behind the store's back.
func connect(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newPool opens a pool on dsn, closed when tb ends.
func newPool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		tb.Fatalf("pool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func ev(seq int64, text string) store.Event {
	return store.Event{Seq: seq, Payload: &anypb.Any{TypeUrl: "type.googleapis.com/test.Event", Value: []byte(text)}}
}

func TestJournal(t *testing.T) {
	storetest.RunJournal(t, func(tb testing.TB) store.Journal { return openTest(tb) })
}

func TestSnapshotJournal(t *testing.T) {
	storetest.RunSnapshotJournal(t, func(tb testing.TB) store.SnapshotJournal { return openTest(tb) })
}

func TestSnapshots(t *testing.T) {
	storetest.RunSnapshots(t, func(tb testing.TB) store.SnapshotStore { return openTest(tb) })
}

func TestValues(t *testing.T) {
	storetest.RunValues(t, func(tb testing.TB) store.ValueStore { return openTest(tb) })
}

// TestReplayPages replays across page boundaries while the callback calls
// back into the store on a pool of one connection: Replay must not hold a
// connection while fn runs.
func TestReplayPages(t *testing.T) {
	s := openTest(t, withReplayPage(3), WithPoolConfig(func(c *pgxpool.Config) { c.MaxConns = 1 }))
	ctx := t.Context()
	const pid = "pages|1"
	var all []store.Event
	for seq := int64(1); seq <= 10; seq++ {
		all = append(all, ev(seq, fmt.Sprint("e", seq)))
	}
	if err := s.Append(ctx, pid, all[:7]); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, pid, all[7:]); err != nil {
		t.Fatal(err)
	}
	for _, after := range []int64{0, 2, 3, 4, 9, 10} {
		var got []int64
		err := s.Replay(ctx, pid, after, func(e store.Event) error {
			if h, err := s.HighestSeq(ctx, pid); err != nil || h != 10 {
				return fmt.Errorf("HighestSeq inside the callback = %d, %v", h, err)
			}
			if string(e.Payload.Value) != fmt.Sprint("e", e.Seq) {
				return fmt.Errorf("seq %d has payload %q", e.Seq, e.Payload.Value)
			}
			got = append(got, e.Seq)
			return nil
		})
		if err != nil {
			t.Fatalf("Replay after %d: %v", after, err)
		}
		if want := 10 - after; int64(len(got)) != want || (want > 0 && got[0] != after+1) {
			t.Fatalf("Replay after %d delivered %v", after, got)
		}
	}
}

// TestTagAndOrdering checks the columns kept for event-log consumers.
func TestTagAndOrdering(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	s := openDSN(t, dsn)
	ctx := t.Context()
	for _, pid := range []string{"shop|cart-1", "shop|cart|2", "plain"} {
		if err := s.Append(ctx, pid, []store.Event{ev(1, "a"), ev(2, "b")}); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := connect(t, dsn).Query(ctx, `SELECT persistence_id, sequence_number, tag, ordering FROM journal ORDER BY ordering`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		pid, tag      []byte
		seq, ordering int64
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.pid, &x.seq, &x.tag, &x.ordering)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"shop|cart-1": "shop", "shop|cart|2": "shop", "plain": "plain"}
	if len(got) != 6 {
		t.Fatalf("journal has %d rows, want 6", len(got))
	}
	for i, r := range got {
		if string(r.tag) != want[string(r.pid)] {
			t.Errorf("row %q seq %d has tag %q, want %q", r.pid, r.seq, r.tag, want[string(r.pid)])
		}
		// Within one append, ordering follows the sequence numbers.
		if i%2 == 1 && (got[i-1].seq != 1 || r.seq != 2 || string(got[i-1].pid) != string(r.pid)) {
			t.Errorf("rows %d and %d are not one append in order: %+v %+v", i-1, i, got[i-1], r)
		}
	}
}

func TestMigrationsWellFormed(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
}

// appliedVersions reads cloudstate_schema_migrations.
func appliedVersions(t *testing.T, dsn string) []int32 {
	t.Helper()
	rows, err := connect(t, dsn).Query(context.Background(), `SELECT version FROM cloudstate_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func checkAllApplied(t *testing.T, dsn string) {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	got := appliedVersions(t, dsn)
	if len(got) != len(ms) {
		t.Fatalf("cloudstate_schema_migrations holds %v, want versions 1..%d once each", got, len(ms))
	}
	for i, v := range got {
		if int(v) != i+1 {
			t.Fatalf("cloudstate_schema_migrations holds %v, want versions 1..%d once each", got, len(ms))
		}
	}
}

func TestMigrateFreshAndAgain(t *testing.T) {
	dsn, schema := testenv.PostgresSchema(t)
	ctx := t.Context()
	s1 := openDSN(t, dsn)
	checkAllApplied(t, dsn)
	var tables int
	err := connect(t, dsn).QueryRow(ctx, `SELECT count(*) FROM information_schema.tables
		WHERE table_schema = $1 AND table_name IN ('journal', 'snapshots', 'entity_values', 'cloudstate_schema_migrations')`, schema).Scan(&tables)
	if err != nil || tables != 4 {
		t.Fatalf("found %d of the 4 tables in schema %s (err %v)", tables, schema, err)
	}
	if err := s1.Append(ctx, "m|1", []store.Event{ev(1, "kept")}); err != nil {
		t.Fatal(err)
	}
	s1.Close()

	// Already migrated: nothing to apply, data kept.
	applied, err := migrate(ctx, newPool(t, dsn))
	if err != nil || len(applied) != 0 {
		t.Fatalf("migrate on a migrated schema applied %v, err %v; want nothing", applied, err)
	}
	s2 := openDSN(t, dsn)
	if h, err := s2.HighestSeq(ctx, "m|1"); err != nil || h != 1 {
		t.Fatalf("after reopening, HighestSeq = %d, %v; want 1", h, err)
	}
	checkAllApplied(t, dsn)
}

func TestMigrateConcurrent(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	ctx := t.Context()
	const openers = 4
	applied := make([][]int, openers)
	errs := make([]error, openers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range openers {
		pool := newPool(t, dsn) // one pool per "proxy"
		wg.Go(func() {
			<-start
			applied[i], errs[i] = migrate(ctx, pool)
		})
	}
	close(start)
	wg.Wait()
	ms, _ := migrations()
	migrators := 0
	for i := range openers {
		if errs[i] != nil {
			t.Fatalf("migrator %d: %v", i, errs[i])
		}
		switch len(applied[i]) {
		case 0:
		case len(ms):
			migrators++
		default:
			t.Fatalf("migrator %d applied %v, want all or nothing", i, applied[i])
		}
	}
	if migrators != 1 {
		t.Fatalf("%d migrators applied the migrations, want exactly 1 (applied: %v)", migrators, applied)
	}
	checkAllApplied(t, dsn)

	// And the full Open, concurrently, on the migrated schema.
	var opens sync.WaitGroup
	for range openers {
		opens.Go(func() {
			s, err := Open(ctx, dsn)
			if err != nil {
				t.Errorf("concurrent Open: %v", err)
				return
			}
			s.Close()
		})
	}
	opens.Wait()
}

// TestOpenConcurrentFresh opens four stores at once on an empty schema.
func TestOpenConcurrentFresh(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	ctx := t.Context()
	stores := make([]*Store, 4)
	var wg sync.WaitGroup
	for i := range stores {
		wg.Go(func() {
			s, err := Open(ctx, dsn)
			if err != nil {
				t.Errorf("Open %d: %v", i, err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			defer s.Close()
		}
	}
	if t.Failed() {
		return
	}
	checkAllApplied(t, dsn)
	// They share the data.
	if err := stores[0].Append(ctx, "shared|1", []store.Event{ev(1, "x")}); err != nil {
		t.Fatal(err)
	}
	if err := stores[3].Append(ctx, "shared|1", []store.Event{ev(1, "y")}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("second store appending the same seq: %v, want ErrConflict", err)
	}
}

func TestOpenUnreachable(t *testing.T) {
	testenv.PostgresDSN(t) // only meaningful where the test server exists
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// Port 1 on loopback: nothing listens there.
	_, err := Open(ctx, "postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open of an unreachable server: %v, want ErrUnavailable", err)
	}
}
