package store_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
	"github.com/cloudstate-go/cloudstate/store/pebble"
)

func payload(text string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.T", Value: []byte(text)}
}

func openPebble(t *testing.T) *pebble.Store {
	t.Helper()
	s, err := pebble.Open(t.TempDir(), pebble.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestAppendWithSnapshotFallback uses a store without SnapshotJournal: the
// events are appended, then the snapshot saved; a refused append saves no
// snapshot, and a snapshot that cannot be saved leaves the events in place.
func TestAppendWithSnapshotFallback(t *testing.T) {
	ctx := context.Background()
	m := memory.New()
	const pid = "p|1"
	if err := store.AppendWithSnapshot(ctx, m, m, pid, []store.Event{{Seq: 1, Payload: payload("e1")}}, store.Snapshot{Seq: 1, Payload: payload("s1")}); err != nil {
		t.Fatal(err)
	}
	if snap, ok, err := m.LatestSnapshot(ctx, pid); err != nil || !ok || snap.Seq != 1 {
		t.Fatalf("LatestSnapshot = %+v, %v, %v; want seq 1", snap, ok, err)
	}
	err := store.AppendWithSnapshot(ctx, m, m, pid, []store.Event{{Seq: 1, Payload: payload("again")}}, store.Snapshot{Seq: 9, Payload: payload("s9")})
	if !errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrSnapshotNotSaved) {
		t.Fatalf("AppendWithSnapshot of an existing seq: %v, want only store.ErrConflict", err)
	}
	if snap, _, _ := m.LatestSnapshot(ctx, pid); snap.Seq != 1 {
		t.Fatalf("a refused append saved the snapshot at seq %d", snap.Seq)
	}
	err = store.AppendWithSnapshot(ctx, m, m, pid, []store.Event{{Seq: 2, Payload: payload("e2")}}, store.Snapshot{Seq: 2})
	if !errors.Is(err, store.ErrSnapshotNotSaved) {
		t.Fatalf("AppendWithSnapshot with a snapshot without payload: %v, want store.ErrSnapshotNotSaved", err)
	}
	if h, _ := m.HighestSeq(ctx, pid); h != 2 {
		t.Fatalf("HighestSeq = %d after a failed snapshot, want 2: the events must stay", h)
	}
}

// TestAppendWithSnapshotOtherStore gives a SnapshotJournal as the journal
// but another store for snapshots: the snapshot must go to that other store.
func TestAppendWithSnapshotOtherStore(t *testing.T) {
	ctx := context.Background()
	j := openPebble(t)
	snaps := memory.New()
	const pid = "p|1"
	if err := store.AppendWithSnapshot(ctx, j, snaps, pid, []store.Event{{Seq: 1, Payload: payload("e1")}}, store.Snapshot{Seq: 1, Payload: payload("s1")}); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := j.LatestSnapshot(ctx, pid); err != nil || ok {
		t.Fatalf("the journal's store got the snapshot (ok=%v, err=%v)", ok, err)
	}
	if snap, ok, err := snaps.LatestSnapshot(ctx, pid); err != nil || !ok || snap.Seq != 1 {
		t.Fatalf("snapshot store: LatestSnapshot = %+v, %v, %v; want seq 1", snap, ok, err)
	}
	if h, _ := j.HighestSeq(ctx, pid); h != 1 {
		t.Fatalf("HighestSeq = %d, want 1", h)
	}
}

// TestAppendWithSnapshotOneWrite checks that a SnapshotJournal given as both
// stores writes events and snapshot in one commit.
func TestAppendWithSnapshotOneWrite(t *testing.T) {
	ctx := context.Background()
	s := openPebble(t)
	before := s.Stats()
	if err := store.AppendWithSnapshot(ctx, s, s, "p|1", []store.Event{{Seq: 1, Payload: payload("e1")}}, store.Snapshot{Seq: 1, Payload: payload("s1")}); err != nil {
		t.Fatal(err)
	}
	if writes := s.Stats().Writes - before.Writes; writes != 1 {
		t.Fatalf("AppendWithSnapshot took %d writes, want 1", writes)
	}
	if snap, ok, err := s.LatestSnapshot(ctx, "p|1"); err != nil || !ok || snap.Seq != 1 {
		t.Fatalf("LatestSnapshot = %+v, %v, %v; want seq 1", snap, ok, err)
	}
}
