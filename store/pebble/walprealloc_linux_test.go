//go:build linux

package pebble_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
)

// TestWALExtendedAhead: the write-ahead log is extended over its
// preallocated blocks, so that synced appends stay inside the file's size
// (walprealloc_linux.go), and a store closed without flushing, its log
// ending in zeros, opens again with every event.
func TestWALExtendedAhead(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev := func(seq int64) []store.Event {
		return []store.Event{{Seq: seq, Payload: &anypb.Any{TypeUrl: "type.googleapis.com/test.E", Value: []byte("event")}}}
	}
	const n = 50
	for i := int64(1); i <= n; i++ {
		if err := s.Append(ctx, "cart-1", ev(i)); err != nil {
			t.Fatal(err)
		}
	}
	logs, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no WAL files in %s (%v)", dir, err)
	}
	var biggest int64
	for _, l := range logs {
		fi, err := os.Stat(l)
		if err != nil {
			t.Fatal(err)
		}
		biggest = max(biggest, fi.Size())
	}
	// 50 small events are a few kB of log; the preallocation is about
	// 110 % of the 4 MiB memtable.
	if biggest < 1<<20 {
		t.Errorf("largest WAL is %d bytes; want it extended over its preallocation (>= 1 MiB)", biggest)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = pebble.Open(dir)
	if err != nil {
		t.Fatalf("reopen with a zero-padded WAL: %v", err)
	}
	defer s.Close()
	var got int64
	if err := s.Replay(ctx, "cart-1", 0, func(e store.Event) error {
		got++
		if e.Seq != got {
			t.Fatalf("replayed seq %d, want %d", e.Seq, got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("replayed %d events, want %d", got, n)
	}
}
