package pebble_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

// openAt opens a Store in dir, with Pebble's and the Store's log messages
// discarded, and closes it when the test ends.
func openAt(tb testing.TB, dir string, opts ...pebble.Option) *pebble.Store {
	tb.Helper()
	opts = append([]pebble.Option{pebble.WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	s, err := pebble.Open(dir, opts...)
	if err != nil {
		tb.Fatalf("Open(%s): %v", dir, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// openTemp opens a Store in a new temporary directory.
func openTemp(tb testing.TB) *pebble.Store { return openAt(tb, tb.TempDir()) }

func openJournal(tb testing.TB) store.Journal         { return openTemp(tb) }
func openSnapshots(tb testing.TB) store.SnapshotStore { return openTemp(tb) }
func openValues(tb testing.TB) store.ValueStore       { return openTemp(tb) }

func TestJournal(t *testing.T)   { storetest.RunJournal(t, openJournal) }
func TestSnapshots(t *testing.T) { storetest.RunSnapshots(t, openSnapshots) }
func TestValues(t *testing.T)    { storetest.RunValues(t, openValues) }

func TestSnapshotJournal(t *testing.T) {
	storetest.RunSnapshotJournal(t, func(tb testing.TB) store.SnapshotJournal { return openTemp(tb) })
}

func payloadOf(text string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.T", Value: []byte(text)}
}

// TestReopen writes every kind of record, closes the store and checks that a
// new Store on the same directory reads them all back.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for seq := int64(1); seq <= 5; seq++ {
		if err := s.Append(ctx, "shop|cart-1", []store.Event{{Seq: seq, Payload: payloadOf(fmt.Sprint("event ", seq))}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SaveSnapshot(ctx, "shop|cart-1", store.Snapshot{Seq: 4, Payload: payloadOf("snapshot 4")}); err != nil {
		t.Fatal(err)
	}
	kept, err := s.PutValue(ctx, "value|kept", 0, payloadOf("kept"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.PutValue(ctx, "value|deleted", 0, payloadOf("deleted"))
	if err != nil {
		t.Fatal(err)
	}
	tombstone, err := s.DeleteValue(ctx, "value|deleted", v)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAt(t, dir)
	var got []string
	err = s.Replay(ctx, "shop|cart-1", 0, func(e store.Event) error {
		got = append(got, fmt.Sprintf("%d:%s", e.Seq, e.Payload.Value))
		return nil
	})
	if want := "[1:event 1 2:event 2 3:event 3 4:event 4 5:event 5]"; err != nil || fmt.Sprint(got) != want {
		t.Fatalf("Replay after reopen = %v, %v; want %s", got, err, want)
	}
	if h, err := s.HighestSeq(ctx, "shop|cart-1"); err != nil || h != 5 {
		t.Fatalf("HighestSeq after reopen = %d, %v; want 5", h, err)
	}
	snap, ok, err := s.LatestSnapshot(ctx, "shop|cart-1")
	if err != nil || !ok || snap.Seq != 4 || string(snap.Payload.Value) != "snapshot 4" {
		t.Fatalf("LatestSnapshot after reopen = %+v, %v, %v; want seq 4", snap, ok, err)
	}
	if got, err := s.GetValue(ctx, "value|kept"); err != nil || got.Version != kept || string(got.Payload.GetValue()) != "kept" {
		t.Fatalf("GetValue(kept) after reopen = %v at %d, %v; want %q at %d", got.Payload, got.Version, err, "kept", kept)
	}
	if got, err := s.GetValue(ctx, "value|deleted"); err != nil || got.Version != tombstone || got.Payload != nil {
		t.Fatalf("GetValue(deleted) after reopen = %v at %d, %v; want none at %d", got.Payload, got.Version, err, tombstone)
	}
	// The fencing state survived too.
	if err := s.Append(ctx, "shop|cart-1", []store.Event{{Seq: 5, Payload: payloadOf("again")}}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Append of an existing seq after reopen: %v, want store.ErrConflict", err)
	}
	if _, err := s.PutValue(ctx, "value|deleted", v, payloadOf("stale")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("PutValue at the version before the delete, after reopen: %v, want store.ErrConflict", err)
	}
}

// TestLockedDirectory opens a directory twice in one process: the second
// Open must fail with a clear error until the first Store is closed.
func TestLockedDirectory(t *testing.T) {
	dir := t.TempDir()
	first, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	second, err := pebble.Open(dir)
	if err == nil {
		second.Close()
		t.Fatal("second Open of an open directory succeeded")
	}
	checkLockedError(t, err, dir, os.Getpid())

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openAt(t, dir)
}

// checkLockedError checks the error of an Open refused because holder has
// the directory.
func checkLockedError(t *testing.T, err error, dir string, holder int) {
	t.Helper()
	if !errors.Is(err, pebble.ErrLocked) {
		t.Fatalf("Open of a directory in use: %v, want an error wrapping ErrLocked", err)
	}
	msg := err.Error()
	for _, want := range []string{dir, "in use by another cloudstate proxy", fmt.Sprintf("pid %d", holder)} {
		if !strings.Contains(msg, want) {
			t.Fatalf("Open of a directory in use: error %q does not say %q", msg, want)
		}
	}
}

// TestUnreadableDirectory opens a directory without permissions.
func TestUnreadableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, which ignores directory permissions, so the directory would be usable")
	}
	dir := filepath.Join(t.TempDir(), "locked-out")
	if err := os.Mkdir(dir, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	s, err := pebble.Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a directory with mode 0 succeeded")
	}
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open of a directory with mode 0: %v, want an error naming it and wrapping fs.ErrPermission", err)
	}
}

// TestNotADirectory opens a path that is a file.
func TestNotADirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("not a store"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := pebble.Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a regular file succeeded")
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of a regular file: error %q does not name it", err)
	}
}

// TestForeignDatabase opens a Pebble database that this package did not
// write: Open must refuse it rather than read its keys as ours.
func TestForeignDatabase(t *testing.T) {
	dir := t.TempDir()
	db, err := pebbledb.Open(dir, &pebbledb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set([]byte("someone else's key"), []byte("x"), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := pebble.Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a foreign Pebble database succeeded")
	}
	if !strings.Contains(err.Error(), "format marker") {
		t.Fatalf("Open of a foreign Pebble database: %v, want an error about the format marker", err)
	}
	// The failed Open released the directory.
	db, err = pebbledb.Open(dir, &pebbledb.Options{})
	if err != nil {
		t.Fatalf("reopening after the refused Open: %v", err)
	}
	db.Close()
}

// TestClose checks that Close is idempotent and that calls after it fail
// with ErrClosed.
func TestClose(t *testing.T) {
	ctx := context.Background()
	s, err := pebble.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	checks := map[string]error{
		"Append":         s.Append(ctx, "p|1", []store.Event{{Seq: 1, Payload: payloadOf("x")}}),
		"Replay":         s.Replay(ctx, "p|1", 0, func(store.Event) error { return nil }),
		"SaveSnapshot":   s.SaveSnapshot(ctx, "p|1", store.Snapshot{Seq: 1, Payload: payloadOf("x")}),
		"DeleteValue":    func() error { _, err := s.DeleteValue(ctx, "v|1", 0); return err }(),
		"PutValue":       func() error { _, err := s.PutValue(ctx, "v|1", 0, payloadOf("x")); return err }(),
		"GetValue":       func() error { _, err := s.GetValue(ctx, "v|1"); return err }(),
		"HighestSeq":     func() error { _, err := s.HighestSeq(ctx, "p|1"); return err }(),
		"LatestSnapshot": func() error { _, _, err := s.LatestSnapshot(ctx, "p|1"); return err }(),
	}
	for name, err := range checks {
		if !errors.Is(err, pebble.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestCloseUnderLoad closes the store while many goroutines append. Every
// append must either succeed or fail with ErrClosed, and after reopening,
// every acknowledged event must be there.
func TestCloseUnderLoad(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	const writers = 32
	acked := make([]int64, writers)
	var wg sync.WaitGroup
	started := make(chan struct{}, writers)
	for w := range writers {
		wg.Go(func() {
			pid := fmt.Sprintf("close|%d", w)
			for seq := int64(1); ; seq++ {
				err := s.Append(ctx, pid, []store.Event{{Seq: seq, Payload: payloadOf(fmt.Sprint(seq))}})
				if errors.Is(err, pebble.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Append(%s, %d): %v", pid, seq, err)
					return
				}
				acked[w] = seq
				if seq == 2 {
					started <- struct{}{}
				}
			}
		})
	}
	for range writers {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()

	s = openAt(t, dir)
	for w := range writers {
		pid := fmt.Sprintf("close|%d", w)
		if h, err := s.HighestSeq(ctx, pid); err != nil || h < acked[w] {
			t.Errorf("HighestSeq(%s) = %d, %v after reopen; %d were acknowledged", pid, h, err, acked[w])
		}
	}
}

// TestReplayCallbackCallsStore checks that a replay callback may read and
// write the store, as an entity recovering its state might.
func TestReplayCallbackCallsStore(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	if err := s.Append(ctx, "p|1", []store.Event{{Seq: 1, Payload: payloadOf("a")}, {Seq: 2, Payload: payloadOf("b")}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	err := s.Replay(ctx, "p|1", 0, func(e store.Event) error {
		n++
		if _, err := s.HighestSeq(ctx, "p|1"); err != nil {
			return err
		}
		return s.Append(ctx, "p|2", []store.Event{{Seq: e.Seq, Payload: e.Payload}})
	})
	if err != nil || n != 2 {
		t.Fatalf("Replay with a callback using the store: %d events, %v", n, err)
	}
	if h, _ := s.HighestSeq(ctx, "p|2"); h != 2 {
		t.Fatalf("HighestSeq(p|2) = %d, want 2", h)
	}
}

// TestGroupCommit appends from many goroutines at once and checks, through
// Stats, that concurrent writes shared WAL syncs.
func TestGroupCommit(t *testing.T) {
	ctx := t.Context()
	s := openTemp(t)
	before := s.Stats()
	const writers, perWriter = 64, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			pid := fmt.Sprintf("group|%d", w)
			for seq := int64(1); seq <= perWriter; seq++ {
				if err := s.Append(ctx, pid, []store.Event{{Seq: seq, Payload: payloadOf("x")}}); err != nil {
					t.Errorf("Append(%s, %d): %v", pid, seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	t.Logf("stats: %+v, average batch %.1f", st, st.AvgBatch())
	if st.Writes-before.Writes != writers*perWriter || st.Conflicts != 0 {
		t.Fatalf("Stats = %+v, want %d more writes and no conflicts", st, writers*perWriter)
	}
	if syncs := st.Syncs - before.Syncs; syncs < 1 || syncs >= writers*perWriter {
		t.Fatalf("Stats = %+v: %d writes took %d WAL syncs; %d concurrent writers never shared one", st, writers*perWriter, syncs, writers)
	}
	// Every sync is a system call to the disk, so they took some time; the
	// average is what the close log reports.
	if st.SyncTime <= before.SyncTime || st.AvgSync() <= 0 {
		t.Fatalf("Stats = %+v: WAL syncs were not timed", st)
	}
}

// TestFencesDropped keeps the fencing state of only two keys in memory while
// writing many, so that most writes find their key's state dropped and load
// it again: fencing must hold all the same.
func TestFencesDropped(t *testing.T) {
	ctx := t.Context()
	s := openAt(t, t.TempDir(), pebble.WithFences(2))
	const ids = 10
	for seq := int64(1); seq <= 3; seq++ {
		for i := range ids {
			pid := fmt.Sprint("drop|", i)
			if err := s.Append(ctx, pid, []store.Event{{Seq: seq, Payload: payloadOf("x")}}); err != nil {
				t.Fatalf("Append(%s, %d): %v", pid, seq, err)
			}
			if _, err := s.PutValue(ctx, pid, seq-1, payloadOf("x")); err != nil {
				t.Fatalf("PutValue(%s, %d): %v", pid, seq-1, err)
			}
			if err := s.SaveSnapshot(ctx, pid, store.Snapshot{Seq: seq, Payload: payloadOf(fmt.Sprint(seq))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range ids {
		pid := fmt.Sprint("drop|", i)
		for _, seq := range []int64{1, 3, 5} {
			if err := s.Append(ctx, pid, []store.Event{{Seq: seq, Payload: payloadOf("again")}}); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Append(%s, %d) after 3 events: %v, want store.ErrConflict", pid, seq, err)
			}
		}
		if _, err := s.PutValue(ctx, pid, 2, payloadOf("stale")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("PutValue(%s) at version 2 of 3: %v, want store.ErrConflict", pid, err)
		}
		if err := s.SaveSnapshot(ctx, pid, store.Snapshot{Seq: 2, Payload: payloadOf("older")}); err != nil {
			t.Fatal(err)
		}
		if snap, ok, err := s.LatestSnapshot(ctx, pid); err != nil || !ok || snap.Seq != 3 {
			t.Fatalf("LatestSnapshot(%s) = %+v, %v, %v; want seq 3 (the older save ignored)", pid, snap, ok, err)
		}
	}
	if st := s.Stats(); st.Conflicts != 4*ids {
		t.Fatalf("Stats = %+v, want %d conflicts", st, 4*ids)
	}
	if _, err := pebble.Open(t.TempDir(), pebble.WithFences(0)); err == nil {
		t.Fatal("Open with WithFences(0) succeeded")
	}
}

// TestMissingPayload checks that writes without a payload are refused
// without writing, and not as conflicts.
func TestMissingPayload(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	for name, err := range map[string]error{
		"Append":       s.Append(ctx, "p|1", []store.Event{{Seq: 1, Payload: payloadOf("x")}, {Seq: 2}}),
		"SaveSnapshot": s.SaveSnapshot(ctx, "p|1", store.Snapshot{Seq: 1}),
		"PutValue":     func() error { _, err := s.PutValue(ctx, "v|1", 0, nil); return err }(),
	} {
		if err == nil || errors.Is(err, store.ErrConflict) {
			t.Errorf("%s without a payload: %v, want an error that is not a conflict", name, err)
		}
	}
	if h, _ := s.HighestSeq(ctx, "p|1"); h != 0 {
		t.Fatalf("Append with a missing payload wrote up to seq %d", h)
	}
	if v, _ := s.GetValue(ctx, "v|1"); v.Version != 0 {
		t.Fatalf("PutValue(nil) wrote version %d", v.Version)
	}
}

// TestCanceledWritesWriteNothing cancels writes at random moments, before
// and while they are committed. A write that returns the
// context's error must have written nothing, and one that succeeds must be
// stored: there is no "maybe written".
func TestCanceledWritesWriteNothing(t *testing.T) {
	s := openTemp(t)
	const writers, perWriter = 32, 40
	type outcome struct {
		key string
		err error
	}
	outcomes := make(chan outcome, writers*perWriter)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for n := range perWriter {
				// Timeouts from 0 to about two fsyncs, so that some
				// expire before the call, some while it waits for its
				// key's fence and some while it is being committed.
				timeout := time.Duration((w*perWriter+n)%40) * 10 * time.Microsecond
				ctx, cancel := context.WithTimeout(t.Context(), timeout)
				key := fmt.Sprintf("cancel|%d|%d", w, n)
				_, err := s.PutValue(ctx, key, 0, payloadOf(key))
				cancel()
				outcomes <- outcome{key, err}
			}
		})
	}
	wg.Wait()
	close(outcomes)

	var ok, canceled int
	for o := range outcomes {
		v, err := s.GetValue(t.Context(), o.key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case o.err == nil:
			ok++
			if v.Version != 1 {
				t.Fatalf("PutValue(%s) succeeded but the stored version is %d", o.key, v.Version)
			}
		case errors.Is(o.err, context.DeadlineExceeded):
			canceled++
			if v.Version != 0 {
				t.Fatalf("PutValue(%s) returned %v but wrote version %d", o.key, o.err, v.Version)
			}
		default:
			t.Fatalf("PutValue(%s): %v", o.key, o.err)
		}
	}
	t.Logf("%d writes succeeded, %d were canceled", ok, canceled)
	if ok == 0 || canceled == 0 {
		t.Fatalf("%d writes succeeded and %d were canceled; the test needs both", ok, canceled)
	}
}
