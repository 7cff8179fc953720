package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/store"
)

// TestBatching has many entities append at once and checks that the
// committer really gathered them: fewer commits than writes.
func TestBatching(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	const writers, perWriter = 64, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			pid := fmt.Sprintf("batch|%d", w)
			for seq := int64(1); seq <= perWriter; seq++ {
				if err := s.Append(ctx, pid, []store.Event{ev(seq, "x")}); err != nil {
					t.Errorf("Append(%s, %d): %v", pid, seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("stats: %+v", st)
	if st.Writes != writers*perWriter {
		t.Fatalf("Stats.Writes = %d, want %d", st.Writes, writers*perWriter)
	}
	if st.AvgBatch <= 1 || st.MaxBatch <= 1 || st.Commits >= st.Writes {
		t.Fatalf("no group commit: %+v", st)
	}
	// Each commit is a round trip to the server ending in a durable commit.
	if st.AvgCommit <= 0 {
		t.Fatalf("commits were not timed: %+v", st)
	}
	for w := range writers {
		if h, err := s.HighestSeq(ctx, fmt.Sprintf("batch|%d", w)); err != nil || h != perWriter {
			t.Fatalf("HighestSeq(batch|%d) = %d, %v", w, h, err)
		}
	}
}

// newOp builds an op the way write does, for tests that drive commit
// directly.
func newOp(kind opKind, key string, sql string, args ...any) *op {
	o := &op{kind: kind, key: []byte(key), sql: sql, args: args, done: make(chan opResult, 1)}
	o.state.Store(opTaken)
	return o
}

func appendOp(pid string, first int64, texts ...string) *op {
	evs := make([]store.Event, len(texts))
	for i, x := range texts {
		evs[i] = ev(first+int64(i), x)
	}
	a, size, err := newAppend(pid, evs)
	if err != nil {
		panic(err)
	}
	o := &op{kind: kindAppend, key: a.pid, size: size, app: a, done: make(chan opResult, 1)}
	o.state.Store(opTaken)
	return o
}

func result(t *testing.T, o *op) opResult {
	t.Helper()
	select {
	case r := <-o.done:
		return r
	default:
		t.Fatalf("op %q got no answer", o.key)
		return opResult{}
	}
}

// TestBatchConflictsAreIsolated commits one batch mixing writes that apply
// with writes that are fenced off: it is one commit, and only the fenced
// writes report zero rows.
func TestBatchConflictsAreIsolated(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	if err := s.Append(ctx, "iso|existing", []store.Event{ev(1, "first")}); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()

	value := []byte("v")
	ops := []*op{
		appendOp("iso|new", 1, "a", "b"),            // applies
		appendOp("iso|existing", 1, "dup"),          // seq exists
		appendOp("iso|existing", 3, "gap"),          // gap after 1
		appendOp("iso|existing", 2, "next", "more"), // applies
		appendOp("iso|new", 1, "again"),             // loses to the first op of this batch
		newOp(kindValue, "iso|v", insertValueSQL, []byte("iso|v"), "t", value),
		newOp(kindValue, "iso|v", insertValueSQL, []byte("iso|v"), "t", value), // loses
		newOp(kindValue, "iso|w", updateValueSQL, []byte("iso|w"), int64(3), "t", value),
		newOp(kindSnapshot, "iso|s", saveSnapshotSQL, []byte("iso|s"), int64(5), "t", value),
	}
	want := []int64{1, 0, 0, 1, 0, 1, 0, 0, 1}
	s.commit(append([]*op(nil), ops...))
	for i, o := range ops {
		r := result(t, o)
		if r.err != nil || r.rows != want[i] {
			t.Errorf("op %d (kind %d, %q): rows %d, err %v; want rows %d", i, o.kind, o.key, r.rows, r.err, want[i])
		}
	}
	after := s.Stats()
	if after.Commits != before.Commits+1 || after.Fallbacks != before.Fallbacks {
		t.Fatalf("stats before %+v, after %+v: want exactly one more commit and no fallback", before, after)
	}
	checkSeqs(t, s, "iso|existing", "first", "next", "more")
	checkSeqs(t, s, "iso|new", "a", "b")
}

// TestBatchAppendsWithSnapshots commits one batch of appends carrying
// snapshots, two of them to one entity: one commit, the fenced-off append
// saves no snapshot, and the second append of an entity sees the first.
func TestBatchAppendsWithSnapshots(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	if err := s.Append(ctx, "snapb|old", []store.Event{ev(1, "first")}); err != nil {
		t.Fatal(err)
	}
	withSnap := func(o *op, seq int64, text string) *op {
		o.app.snap = &snapshotWrite{seq: seq, typeURL: "type.googleapis.com/test.State", value: []byte(text)}
		return o
	}
	before := s.Stats()
	ops := []*op{
		withSnap(appendOp("snapb|a", 1, "a1", "a2"), 2, "a@2"),       // applies
		withSnap(appendOp("snapb|a", 3, "a3"), 3, "a@3"),             // applies, after the first
		withSnap(appendOp("snapb|old", 1, "dup"), 1, "lost"),         // seq exists: no snapshot
		appendOp("snapb|b", 1, "b1"),                                 // applies, no snapshot
		withSnap(appendOp("snapb|c", 2, "gap"), 2, "lost"),           // gap: nothing
		withSnap(appendOp("snapb|d", 1, "d1", "d2", "d3"), 3, "d@3"), // applies
	}
	want := []int64{1, 1, 0, 1, 0, 1}
	s.commit(append([]*op(nil), ops...))
	for i, o := range ops {
		if r := result(t, o); r.err != nil || r.rows != want[i] {
			t.Errorf("op %d (%q): rows %d, err %v; want rows %d", i, o.key, r.rows, r.err, want[i])
		}
	}
	if after := s.Stats(); after.Commits != before.Commits+1 || after.Fallbacks != before.Fallbacks {
		t.Fatalf("stats before %+v, after %+v: want exactly one more commit and no fallback", before, after)
	}
	checkSeqs(t, s, "snapb|a", "a1", "a2", "a3")
	checkSeqs(t, s, "snapb|old", "first")
	checkSeqs(t, s, "snapb|b", "b1")
	checkSeqs(t, s, "snapb|c")
	checkSeqs(t, s, "snapb|d", "d1", "d2", "d3")
	for pid, want := range map[string]string{"snapb|a": "a@3", "snapb|d": "d@3", "snapb|old": "", "snapb|b": "", "snapb|c": ""} {
		snap, ok, err := s.LatestSnapshot(ctx, pid)
		switch {
		case err != nil:
			t.Fatal(err)
		case want == "" && ok:
			t.Errorf("%s has snapshot %q, want none", pid, snap.Payload.GetValue())
		case want != "" && (!ok || string(snap.Payload.GetValue()) != want):
			t.Errorf("%s has snapshot %v (ok %v), want %q", pid, snap.Payload, ok, want)
		}
	}
}

// TestBatchFallback puts a statement that fails into a batch: the batch
// rolls back as a whole, then every other write is committed on its own.
func TestBatchFallback(t *testing.T) {
	s := openTest(t)
	ok1 := appendOp("fb|1", 1, "one")
	bad := newOp(kindAppend, "fb|bad", `SELECT 1/0`)
	ok2 := appendOp("fb|2", 1, "two")

	// Sent alone, the batch is one transaction: the failing statement takes
	// the others with it.
	if err := s.send([]*op{ok1, bad, ok2}); err == nil {
		t.Fatal("send of a batch with a failing statement succeeded")
	}
	for _, pid := range []string{"fb|1", "fb|2"} {
		if h, err := s.HighestSeq(t.Context(), pid); err != nil || h != 0 {
			t.Fatalf("after the failed batch, HighestSeq(%s) = %d, %v; want 0 (rolled back)", pid, h, err)
		}
	}

	s.commit([]*op{ok1, bad, ok2})
	if r := result(t, bad); r.err == nil {
		t.Fatalf("failing statement reported success")
	}
	for _, o := range []*op{ok1, ok2} {
		if r := result(t, o); r.err != nil || r.rows != 1 {
			t.Fatalf("op %q after fallback: rows %d, err %v", o.key, r.rows, r.err)
		}
	}
	if st := s.Stats(); st.Fallbacks != 1 {
		t.Fatalf("Stats.Fallbacks = %d, want 1", st.Fallbacks)
	}
	checkSeqs(t, s, "fb|1", "one")
	checkSeqs(t, s, "fb|2", "two")
}

// TestPrimaryKeyFence writes a duplicate row with a plain INSERT, as a
// writer that skipped the fences would: the unique violation is reported as
// store.ErrConflict.
func TestPrimaryKeyFence(t *testing.T) {
	s := openTest(t)
	if err := s.Append(t.Context(), "pk|1", []store.Event{ev(1, "x")}); err != nil {
		t.Fatal(err)
	}
	dup := newOp(kindAppend, "pk|1", `INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes) VALUES ($1, 1, $2, 't', '')`,
		[]byte("pk|1"), []byte("pk"))
	s.commit([]*op{dup})
	if r := result(t, dup); !errors.Is(r.err, store.ErrConflict) {
		t.Fatalf("duplicate primary key: %v, want ErrConflict", r.err)
	}
}

// checkSeqs replays pid and compares the payload texts with want.
func checkSeqs(t *testing.T, s *Store, pid string, want ...string) {
	t.Helper()
	var got []string
	err := s.Replay(t.Context(), pid, 0, func(e store.Event) error {
		if e.Seq != int64(len(got)+1) {
			return fmt.Errorf("seq %d after %d events", e.Seq, len(got))
		}
		got = append(got, string(e.Payload.Value))
		return nil
	})
	if err != nil {
		t.Fatalf("Replay(%s): %v", pid, err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Replay(%s) = %v, want %v", pid, got, want)
	}
}

// TestInvalidWrites are refused before they reach the batch, without being
// mistaken for conflicts.
func TestInvalidWrites(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	bad := &anypb.Any{TypeUrl: "type.googleapis.com/x\x00y", Value: []byte("v")}
	checks := map[string]error{
		"append NUL type URL": s.Append(ctx, "inv|1", []store.Event{{Seq: 1, Payload: bad}}),
		"append nil payload":  s.Append(ctx, "inv|1", []store.Event{{Seq: 1}}),
		"snapshot NUL":        s.SaveSnapshot(ctx, "inv|1", store.Snapshot{Seq: 1, Payload: bad}),
	}
	_, checks["put NUL"] = s.PutValue(ctx, "inv|1", 0, bad)
	_, checks["put nil"] = s.PutValue(ctx, "inv|1", 0, nil)
	for name, err := range checks {
		if !errors.Is(err, errInvalid) || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: %v, want an invalid-write error", name, err)
		}
	}
	if st := s.Stats(); st.Writes != 0 {
		t.Fatalf("invalid writes reached the committer: %+v", st)
	}
}

// TestClose answers writes racing with Close either with success or
// ErrClosed, and every call after it with ErrClosed.
func TestClose(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for w := range 32 {
		wg.Go(func() {
			for seq := int64(1); ; seq++ {
				err := s.Append(ctx, fmt.Sprintf("close|%d", w), []store.Event{ev(seq, "x")})
				mu.Lock()
				switch {
				case err == nil:
					outcomes["ok"]++
				case errors.Is(err, ErrClosed):
					outcomes["closed"]++
				default:
					outcomes[err.Error()]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	eventually(t, 10*time.Second, "some writes", func() bool { return s.Stats().Writes > 100 })
	s.Close()
	wg.Wait()
	s.Close() // idempotent
	if len(outcomes) != 2 || outcomes["closed"] != 32 {
		t.Fatalf("outcomes %v, want only successes and one ErrClosed per writer", outcomes)
	}
	if err := s.Append(ctx, "close|after", []store.Event{ev(1, "x")}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
}

// TestContextCancelWhileQueued holds the store's only connection so that the
// committer is stuck with one write while a second waits in the queue. The
// queued write's caller cancels and gets its write back: it is never sent.
// The taken write's caller cancels too, but waits and learns that its write
// committed.
func TestContextCancelWhileQueued(t *testing.T) {
	s := openTest(t, WithPoolConfig(func(c *pgxpool.Config) { c.MaxConns = 1 }))
	held, err := s.pool.Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	takenCtx, cancelTaken := context.WithCancel(t.Context())
	takenDone := make(chan error, 1)
	go func() { takenDone <- s.Append(takenCtx, "cancel|taken", []store.Event{ev(1, "x")}) }()
	eventually(t, 10*time.Second, "the committer to take the first write", func() bool { return s.stats.taken.Load() == 1 })

	queuedCtx, cancelQueued := context.WithCancel(t.Context())
	queuedDone := make(chan error, 1)
	go func() { queuedDone <- s.Append(queuedCtx, "cancel|queued", []store.Event{ev(1, "y")}) }()
	eventually(t, 10*time.Second, "the second write to be queued", func() bool { return len(s.queue) == 1 })

	cancelQueued()
	if err := <-queuedDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled queued write: %v, want context.Canceled", err)
	}
	if n := s.stats.taken.Load(); n != 1 {
		t.Fatalf("committer took %d writes while stuck, want 1", n)
	}
	cancelTaken()
	held.Release()
	if err := <-takenDone; err != nil {
		t.Fatalf("canceled write that the committer had taken: %v, want its outcome (success)", err)
	}
	checkSeqs(t, s, "cancel|taken", "x")
	checkSeqs(t, s, "cancel|queued")
}

// TestBatchByteBudget sends large values at once: batches stop growing at
// maxBatchBytes.
func TestBatchByteBudget(t *testing.T) {
	s := openTest(t)
	big := &anypb.Any{TypeUrl: "t", Value: make([]byte, 1<<20)}
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := s.PutValue(t.Context(), fmt.Sprint("big|", i), 0, big); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if st := s.Stats(); st.Writes != 16 || st.MaxBatch > 4 {
		t.Fatalf("stats %+v: want 16 writes in batches of at most 4 MiB", st)
	}
}
