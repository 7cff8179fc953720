// Package storetest is the conformance suite for implementations of the
// interfaces in package store. Every implementation runs the same test bodies
// from its own test file:
//
//	func TestJournal(t *testing.T) {
//		storetest.RunJournal(t, func(testing.TB) store.Journal { return memory.New() })
//	}
//
// open must return a fresh, empty store each time it is called; the suite calls
// it once per subtest with that subtest's testing.TB, so an implementation can
// use tb.TempDir and tb.Cleanup to place and release its data. The same opener
// works for the benchmarks (BenchJournal, BenchSnapshots).
//
// The suite checks only what the interfaces promise. Behaviour that the
// interfaces leave open (for example whether a store copies payloads) belongs
// in the implementation's own tests.
package storetest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// typeURL is the type URL of the payloads the suite writes. Stores treat
// payloads as opaque, so it need not name a registered message.
const typeURL = "type.googleapis.com/storetest.Payload"

// payload returns an Any whose bytes identify it by text, so a failure message
// shows which event went where.
func payload(format string, args ...any) *anypb.Any {
	return &anypb.Any{TypeUrl: typeURL, Value: fmt.Appendf(nil, format, args...)}
}

// events builds events with the given sequence numbers and payloads derived
// from tag, so that histories written under different tags differ.
func events(tag string, seqs ...int64) []store.Event {
	out := make([]store.Event, len(seqs))
	for i, seq := range seqs {
		out[i] = store.Event{Seq: seq, Payload: payload("%s/%d", tag, seq)}
	}
	return out
}

// seqRange returns from, from+1, ..., to.
func seqRange(from, to int64) []int64 {
	var out []int64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// replayAll collects every event of pid after afterSeq, failing the test on
// error.
func replayAll(tb testing.TB, j store.Journal, pid string, afterSeq int64) []store.Event {
	tb.Helper()
	var out []store.Event
	err := j.Replay(context.Background(), pid, afterSeq, func(e store.Event) error {
		out = append(out, e)
		return nil
	})
	if err != nil {
		tb.Fatalf("Replay(%q, %d): %v", pid, afterSeq, err)
	}
	return out
}

// highest returns HighestSeq of pid, failing the test on error.
func highest(tb testing.TB, j store.Journal, pid string) int64 {
	tb.Helper()
	h, err := j.HighestSeq(context.Background(), pid)
	if err != nil {
		tb.Fatalf("HighestSeq(%q): %v", pid, err)
	}
	return h
}

// mustAppend appends and fails the test on error.
func mustAppend(tb testing.TB, j store.Journal, pid string, evs []store.Event) {
	tb.Helper()
	if err := j.Append(context.Background(), pid, evs); err != nil {
		tb.Fatalf("Append(%q, seq %d..%d): %v", pid, evs[0].Seq, evs[len(evs)-1].Seq, err)
	}
}

// checkEvents compares a replayed history with the expected one, event by
// event, including payload type URL and bytes.
func checkEvents(tb testing.TB, what string, got, want []store.Event) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%s: got %d events (%s), want %d (%s)", what, len(got), describe(got), len(want), describe(want))
	}
	for i := range want {
		if got[i].Seq != want[i].Seq {
			tb.Fatalf("%s: event %d has seq %d, want %d", what, i, got[i].Seq, want[i].Seq)
		}
		checkPayload(tb, fmt.Sprintf("%s: event seq %d", what, want[i].Seq), got[i].Payload, want[i].Payload)
	}
}

// checkPayload compares two payloads exactly; nil and empty bytes are the
// same value in proto3 and are accepted as equal.
func checkPayload(tb testing.TB, what string, got, want *anypb.Any) {
	tb.Helper()
	if got == nil {
		tb.Fatalf("%s: payload is nil", what)
	}
	if got.GetTypeUrl() != want.GetTypeUrl() {
		tb.Fatalf("%s: type_url %q, want %q", what, got.GetTypeUrl(), want.GetTypeUrl())
	}
	if !bytes.Equal(got.GetValue(), want.GetValue()) {
		tb.Fatalf("%s: value %s, want %s", what, short(got.GetValue()), short(want.GetValue()))
	}
	if !proto.Equal(got, want) {
		tb.Fatalf("%s: payload differs from the one written", what)
	}
}

// describe lists the sequence numbers of evs for failure messages.
func describe(evs []store.Event) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, e := range evs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprint(&b, e.Seq)
	}
	b.WriteByte(']')
	return b.String()
}

// short prints small byte slices whole and large ones by length, so a failed
// 1 MiB comparison does not flood the log.
func short(b []byte) string {
	if len(b) <= 64 {
		return fmt.Sprintf("%q", b)
	}
	return fmt.Sprintf("<%d bytes starting %q>", len(b), b[:32])
}
