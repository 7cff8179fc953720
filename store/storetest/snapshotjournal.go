package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/cloudstate-go/cloudstate/store"
)

// RunSnapshotJournal runs the conformance tests of store.SnapshotJournal
// against the stores returned by open, which must return a fresh, empty store
// on every call. A store that implements it runs RunJournal and RunSnapshots
// as well.
func RunSnapshotJournal(t *testing.T, open func(tb testing.TB) store.SnapshotJournal) {
	t.Run("Both", func(t *testing.T) { testWithSnapshotBoth(t, open(t)) })
	t.Run("ConflictSavesNoSnapshot", func(t *testing.T) { testWithSnapshotConflict(t, open(t)) })
	t.Run("OlderSnapshotIgnored", func(t *testing.T) { testWithSnapshotOlderIgnored(t, open(t)) })
	t.Run("SnapshotWithoutPayload", func(t *testing.T) { testWithSnapshotNoPayload(t, open(t)) })
	t.Run("ContextCanceled", func(t *testing.T) { testWithSnapshotCanceled(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testWithSnapshotConcurrent(t, open(t)) })
}

// mustAppendWithSnapshot appends with a snapshot and fails the test on error.
func mustAppendWithSnapshot(tb testing.TB, s store.SnapshotJournal, pid string, evs []store.Event, sn store.Snapshot) {
	tb.Helper()
	if err := s.AppendWithSnapshot(context.Background(), pid, evs, sn); err != nil {
		tb.Fatalf("AppendWithSnapshot(%q, seq %d..%d, snapshot %d): %v", pid, evs[0].Seq, evs[len(evs)-1].Seq, sn.Seq, err)
	}
}

func testWithSnapshotBoth(t *testing.T, s store.SnapshotJournal) {
	const pid = "with-snap|1"
	first := events("both", 1, 2, 3)
	mustAppendWithSnapshot(t, s, pid, first, snap(3, "both"))
	checkEvents(t, "after the first append", replayAll(t, s, pid, 0), first)
	checkLatest(t, s, pid, snap(3, "both"))

	// Plain appends and saves mix with it.
	mustAppend(t, s, pid, events("both", 4))
	mustAppendWithSnapshot(t, s, pid, events("both", 5, 6), snap(6, "both"))
	mustSave(t, s, pid, snap(6, "replaced"))
	mustAppendWithSnapshot(t, s, pid, events("both", 7), snap(7, "both"))
	checkEvents(t, "after four writes", replayAll(t, s, pid, 0), events("both", seqRange(1, 7)...))
	checkLatest(t, s, pid, snap(7, "both"))
	if h := highest(t, s, pid); h != 7 {
		t.Fatalf("HighestSeq = %d, want 7", h)
	}
}

// testWithSnapshotConflict checks that a refused append saves nothing of its
// snapshot, whether the snapshot would have been newer or not.
func testWithSnapshotConflict(t *testing.T, s store.SnapshotJournal) {
	const pid = "with-snap|conflict"
	mustAppendWithSnapshot(t, s, pid, events("kept", 1, 2), snap(2, "kept"))
	for _, tc := range []struct {
		name string
		seqs []int64
	}{
		{"ExistingSeq", []int64{2, 3}},
		{"Gap", []int64{4, 5}},
		{"FromOne", []int64{1, 2, 3, 4, 5, 6}},
	} {
		last := tc.seqs[len(tc.seqs)-1]
		err := s.AppendWithSnapshot(context.Background(), pid, events("lost", tc.seqs...), snap(last, "lost"))
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("%s: AppendWithSnapshot(seq %v): %v, want store.ErrConflict", tc.name, tc.seqs, err)
		}
		checkEvents(t, tc.name, replayAll(t, s, pid, 0), events("kept", 1, 2))
		checkLatest(t, s, pid, snap(2, "kept"))
	}
}

// testWithSnapshotOlderIgnored checks that a snapshot older than the stored
// one is left out while the events go in.
func testWithSnapshotOlderIgnored(t *testing.T, s store.SnapshotJournal) {
	const pid = "with-snap|older"
	mustSave(t, s, pid, snap(10, "newer"))
	mustAppendWithSnapshot(t, s, pid, events("older", 1, 2), snap(2, "older"))
	checkEvents(t, "events", replayAll(t, s, pid, 0), events("older", 1, 2))
	checkLatest(t, s, pid, snap(10, "newer"))
}

// testWithSnapshotNoPayload checks that a snapshot the store cannot hold does
// not stop the events.
func testWithSnapshotNoPayload(t *testing.T, s store.SnapshotJournal) {
	const pid = "with-snap|no-payload"
	err := s.AppendWithSnapshot(context.Background(), pid, events("np", 1), store.Snapshot{Seq: 1})
	if !errors.Is(err, store.ErrSnapshotNotSaved) || errors.Is(err, store.ErrConflict) {
		t.Fatalf("AppendWithSnapshot with a snapshot without payload: %v, want store.ErrSnapshotNotSaved", err)
	}
	checkEvents(t, "events", replayAll(t, s, pid, 0), events("np", 1))
	if _, ok, err := s.LatestSnapshot(context.Background(), pid); err != nil || ok {
		t.Fatalf("LatestSnapshot after a snapshot without payload: ok=%v, err=%v; want none", ok, err)
	}
}

func testWithSnapshotCanceled(t *testing.T, s store.SnapshotJournal) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	const pid = "with-snap|canceled"
	if err := s.AppendWithSnapshot(canceled, pid, events("c", 1), snap(1, "c")); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendWithSnapshot with a canceled context: %v, want context.Canceled", err)
	}
	if h := highest(t, s, pid); h != 0 {
		t.Fatalf("AppendWithSnapshot with a canceled context wrote up to seq %d", h)
	}
	if _, ok, err := s.LatestSnapshot(context.Background(), pid); err != nil || ok {
		t.Fatalf("AppendWithSnapshot with a canceled context stored a snapshot (ok=%v, err=%v)", ok, err)
	}
}

// testWithSnapshotConcurrent has many entities write events with a snapshot
// every third append, all at once, as the proxy's entities do; and two
// writers race for each seq of one shared entity, where exactly one may win
// and the snapshot must be the winner's.
func testWithSnapshotConcurrent(t *testing.T, s store.SnapshotJournal) {
	const perID = 12
	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			pid := fmt.Sprintf("with-snap|c%d", w)
			for seq := int64(1); seq <= perID; seq++ {
				evs := events(pid, seq)
				var err error
				if seq%3 == 0 {
					err = s.AppendWithSnapshot(ctx, pid, evs, snap(seq, pid))
				} else {
					err = s.Append(ctx, pid, evs)
				}
				if err != nil {
					t.Errorf("%s seq %d: %v", pid, seq, err)
					return
				}
			}
		})
	}
	const shared = "with-snap|shared"
	winners := make([][2]int, perID+1)
	var mu sync.Mutex
	for w := range 2 {
		wg.Go(func() {
			for seq := int64(1); seq <= perID; seq++ {
				tag := fmt.Sprint("writer", w)
				err := s.AppendWithSnapshot(ctx, shared, events(tag, seq), snap(seq, tag))
				switch {
				case err == nil:
					mu.Lock()
					winners[seq][w] = 1
					mu.Unlock()
				case errors.Is(err, store.ErrConflict):
				default:
					t.Errorf("shared seq %d: %v", seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for w := range concurrency {
		pid := fmt.Sprintf("with-snap|c%d", w)
		checkEvents(t, pid, replayAll(t, s, pid, 0), events(pid, seqRange(1, perID)...))
		checkLatest(t, s, pid, snap(perID, pid))
	}
	got := replayAll(t, s, shared, 0)
	if len(got) == 0 {
		t.Fatal("no writer won any seq of the shared entity")
	}
	for seq := int64(1); seq <= perID; seq++ {
		want := 0
		if seq <= int64(len(got)) {
			want = 1
			if got[seq-1].Seq != seq {
				t.Fatalf("shared entity replays seq %d at position %d", got[seq-1].Seq, seq)
			}
		}
		if n := winners[seq][0] + winners[seq][1]; n != want {
			t.Fatalf("shared seq %d: %d writers were told they won, want %d (%d events stored)", seq, n, want, len(got))
		}
	}
	last := got[len(got)-1]
	sn, ok, err := s.LatestSnapshot(ctx, shared)
	if err != nil || !ok {
		t.Fatalf("LatestSnapshot(shared): ok=%v, err=%v", ok, err)
	}
	tag := "writer0"
	if winners[last.Seq][1] == 1 {
		tag = "writer1"
	}
	if sn.Seq != last.Seq || string(sn.Payload.GetValue()) != string(snap(last.Seq, tag).Payload.GetValue()) {
		t.Fatalf("shared snapshot is seq %d %q, want the last winner's: seq %d by %s", sn.Seq, sn.Payload.GetValue(), last.Seq, tag)
	}
}
