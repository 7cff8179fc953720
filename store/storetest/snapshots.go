package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// RunSnapshots runs the conformance tests of store.SnapshotStore against the
// stores returned by open. open must return a fresh, empty store on every
// call.
func RunSnapshots(t *testing.T, open func(tb testing.TB) store.SnapshotStore) {
	t.Run("Missing", func(t *testing.T) { testSnapshotMissing(t, open(t)) })
	t.Run("LatestWins", func(t *testing.T) { testSnapshotLatestWins(t, open(t)) })
	t.Run("OlderIgnored", func(t *testing.T) { testSnapshotOlderIgnored(t, open(t)) })
	t.Run("IndependentIDs", func(t *testing.T) { testSnapshotIndependentIDs(t, open(t)) })
	t.Run("Payloads", func(t *testing.T) { testSnapshotPayloads(t, open(t)) })
	t.Run("ContextCanceled", func(t *testing.T) { testSnapshotContextCanceled(t, open(t)) })
	t.Run("Concurrent", func(t *testing.T) { testSnapshotConcurrent(t, open(t)) })
}

func snap(seq int64, tag string) store.Snapshot {
	return store.Snapshot{Seq: seq, Payload: payload("snapshot %s@%d", tag, seq)}
}

func mustSave(tb testing.TB, s store.SnapshotStore, pid string, sn store.Snapshot) {
	tb.Helper()
	if err := s.SaveSnapshot(context.Background(), pid, sn); err != nil {
		tb.Fatalf("SaveSnapshot(%q, seq %d): %v", pid, sn.Seq, err)
	}
}

// checkLatest loads the snapshot of pid and compares it with want.
func checkLatest(tb testing.TB, s store.SnapshotStore, pid string, want store.Snapshot) {
	tb.Helper()
	got, ok, err := s.LatestSnapshot(context.Background(), pid)
	if err != nil {
		tb.Fatalf("LatestSnapshot(%q): %v", pid, err)
	}
	if !ok {
		tb.Fatalf("LatestSnapshot(%q): none, want seq %d", pid, want.Seq)
	}
	if got.Seq != want.Seq {
		tb.Fatalf("LatestSnapshot(%q) has seq %d, want %d", pid, got.Seq, want.Seq)
	}
	checkPayload(tb, fmt.Sprintf("LatestSnapshot(%q)", pid), got.Payload, want.Payload)
}

func testSnapshotMissing(t *testing.T, s store.SnapshotStore) {
	got, ok, err := s.LatestSnapshot(context.Background(), "snap|unknown")
	if err != nil || ok {
		t.Fatalf("LatestSnapshot of an unknown id = %+v, %v, %v; want ok=false and no error", got, ok, err)
	}
}

func testSnapshotLatestWins(t *testing.T, s store.SnapshotStore) {
	const pid = "snap|1"
	for _, seq := range []int64{1, 5, 6, 100} {
		sn := snap(seq, "latest")
		mustSave(t, s, pid, sn)
		checkLatest(t, s, pid, sn)
	}
	// Only a lower seq is ignored; an equal one replaces the stored snapshot.
	again := snap(100, "again")
	mustSave(t, s, pid, again)
	checkLatest(t, s, pid, again)
}

func testSnapshotOlderIgnored(t *testing.T, s store.SnapshotStore) {
	const pid = "snap|older"
	newer := snap(10, "newer")
	mustSave(t, s, pid, newer)
	for _, seq := range []int64{9, 1, 0} {
		mustSave(t, s, pid, snap(seq, "older"))
		checkLatest(t, s, pid, newer)
	}
}

func testSnapshotIndependentIDs(t *testing.T, s store.SnapshotStore) {
	ids := []string{"a|1", "a|10", "a|1|0", "a|", "a", "a%", "a_", "ü|🙂"}
	for i, pid := range ids {
		mustSave(t, s, pid, snap(int64(i+1), pid))
	}
	for i, pid := range ids {
		checkLatest(t, s, pid, snap(int64(i+1), pid))
	}
	if _, ok, err := s.LatestSnapshot(context.Background(), "a|100"); err != nil || ok {
		t.Fatalf("LatestSnapshot of unwritten id %q: ok=%v err=%v, want ok=false", "a|100", ok, err)
	}
}

func testSnapshotPayloads(t *testing.T, s store.SnapshotStore) {
	large := make([]byte, 1<<20)
	if _, err := rand.Read(large); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]*anypb.Any{
		"Text":       {TypeUrl: "type.googleapis.com/shop.Cart", Value: []byte("cart")},
		"EmptyValue": {TypeUrl: "type.googleapis.com/shop.Cart"},
		"Binary":     {TypeUrl: "type.googleapis.com/shop.Cart", Value: []byte{0, 1, 0xff, '\n', 0}},
		"Large1MiB":  {TypeUrl: "type.googleapis.com/blob.Large", Value: large},
	} {
		pid := "snap-payload|" + name
		sn := store.Snapshot{Seq: 7, Payload: p}
		mustSave(t, s, pid, sn)
		checkLatest(t, s, pid, sn)
	}
}

func testSnapshotContextCanceled(t *testing.T, s store.SnapshotStore) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	const pid = "snap|canceled"
	if err := s.SaveSnapshot(canceled, pid, snap(1, "canceled")); !errors.Is(err, context.Canceled) {
		t.Fatalf("SaveSnapshot with a canceled context: err = %v, want context.Canceled", err)
	}
	if _, ok, err := s.LatestSnapshot(context.Background(), pid); err != nil || ok {
		t.Fatalf("SaveSnapshot with a canceled context stored a snapshot (ok=%v, err=%v)", ok, err)
	}
	mustSave(t, s, pid, snap(1, "kept"))
	if _, _, err := s.LatestSnapshot(canceled, pid); !errors.Is(err, context.Canceled) {
		t.Fatalf("LatestSnapshot with a canceled context: err = %v, want context.Canceled", err)
	}
}

// testSnapshotConcurrent saves snapshots of one id from many goroutines in
// scrambled order while others read: the highest seq must end up stored, and
// no reader may see the seq go backwards.
func testSnapshotConcurrent(t *testing.T, s store.SnapshotStore) {
	const perWriter = 8
	const pid = "snap|concurrent"
	ctx := t.Context()

	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			for i := range perWriter {
				// Writers interleave seqs so that low ones often arrive late.
				seq := int64((i*concurrency+w*7)%(concurrency*perWriter) + 1)
				if err := s.SaveSnapshot(ctx, pid, snap(seq, "concurrent")); err != nil {
					t.Errorf("SaveSnapshot(seq %d): %v", seq, err)
					return
				}
			}
		})
	}
	for range 4 {
		wg.Go(func() {
			last := int64(0)
			for range 200 {
				sn, ok, err := s.LatestSnapshot(ctx, pid)
				if err != nil {
					t.Errorf("LatestSnapshot: %v", err)
					return
				}
				if !ok {
					continue
				}
				if sn.Seq < last {
					t.Errorf("LatestSnapshot went back from seq %d to %d", last, sn.Seq)
					return
				}
				want := snap(sn.Seq, "concurrent")
				if string(sn.Payload.GetValue()) != string(want.Payload.GetValue()) {
					t.Errorf("LatestSnapshot seq %d has payload %q, want %q", sn.Seq, sn.Payload.GetValue(), want.Payload.GetValue())
					return
				}
				last = sn.Seq
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	checkLatest(t, s, pid, snap(concurrency*perWriter, "concurrent"))
}
