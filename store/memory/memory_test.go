package memory_test

import (
	"context"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
	"github.com/cloudstate-go/cloudstate/store/storetest"
)

func openJournal(testing.TB) store.Journal         { return memory.New() }
func openSnapshots(testing.TB) store.SnapshotStore { return memory.New() }

func TestJournal(t *testing.T)   { storetest.RunJournal(t, openJournal) }
func TestSnapshots(t *testing.T) { storetest.RunSnapshots(t, openSnapshots) }

func BenchmarkJournal(b *testing.B)   { storetest.BenchJournal(b, openJournal) }
func BenchmarkSnapshots(b *testing.B) { storetest.BenchSnapshots(b, openSnapshots) }

// TestJournalCopiesPayloads checks that neither the slice passed to Append nor
// the one handed to a Replay callback aliases stored data.
func TestJournalCopiesPayloads(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	in := &anypb.Any{TypeUrl: "type.googleapis.com/t.E", Value: []byte("abc")}
	if err := s.Append(ctx, "p|1", []store.Event{{Seq: 1, Payload: in}, {Seq: 2, Payload: in}}); err != nil {
		t.Fatal(err)
	}
	in.Value[0] = 'X'
	in.TypeUrl = "changed"

	for range 2 {
		var got []string
		err := s.Replay(ctx, "p|1", 0, func(e store.Event) error {
			got = append(got, e.Payload.TypeUrl+" "+string(e.Payload.Value))
			// Scribble on what we were given, including past its length.
			e.Payload.Value[0] = 'Y'
			_ = append(e.Payload.Value[:1], 'Z', 'Z')
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := "type.googleapis.com/t.E abc"
		if len(got) != 2 || got[0] != want || got[1] != want {
			t.Fatalf("replayed %q, want two of %q", got, want)
		}
	}
}

// TestSnapshotCopiesPayloads is TestJournalCopiesPayloads for snapshots.
func TestSnapshotCopiesPayloads(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	in := &anypb.Any{TypeUrl: "type.googleapis.com/t.S", Value: []byte("state")}
	if err := s.SaveSnapshot(ctx, "p|1", store.Snapshot{Seq: 3, Payload: in}); err != nil {
		t.Fatal(err)
	}
	in.Value[0] = 'X'
	for range 2 {
		got, ok, err := s.LatestSnapshot(ctx, "p|1")
		if err != nil || !ok {
			t.Fatalf("LatestSnapshot: ok=%v err=%v", ok, err)
		}
		if string(got.Payload.Value) != "state" || got.Seq != 3 {
			t.Fatalf("LatestSnapshot = seq %d %q, want seq 3 %q", got.Seq, got.Payload.Value, "state")
		}
		got.Payload.Value[0] = 'Y'
	}
}

// TestMissingPayload checks that a nil payload is refused without writing,
// and is not mistaken for a conflict.
func TestMissingPayload(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	err := s.Append(ctx, "p|1", []store.Event{{Seq: 1, Payload: &anypb.Any{}}, {Seq: 2}})
	if err == nil {
		t.Fatal("Append with a nil payload succeeded")
	}
	if h, _ := s.HighestSeq(ctx, "p|1"); h != 0 {
		t.Fatalf("Append with a nil payload wrote up to seq %d", h)
	}
	if err := s.SaveSnapshot(ctx, "p|1", store.Snapshot{Seq: 1}); err == nil {
		t.Fatal("SaveSnapshot with a nil payload succeeded")
	}
}

// TestEmptyAppend checks that appending no events is a no-op.
func TestEmptyAppend(t *testing.T) {
	ctx := context.Background()
	s := memory.New()
	if err := s.Append(ctx, "p|1", nil); err != nil {
		t.Fatalf("Append(nil) = %v, want nil", err)
	}
	if h, _ := s.HighestSeq(ctx, "p|1"); h != 0 {
		t.Fatalf("HighestSeq after empty append = %d, want 0", h)
	}
}
