package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// RunJournal runs the conformance tests of store.Journal against the stores
// returned by open. open must return a fresh, empty journal on every call.
func RunJournal(t *testing.T, open func(tb testing.TB) store.Journal) {
	t.Run("AppendReplayOrder", func(t *testing.T) { testAppendReplayOrder(t, open(t)) })
	t.Run("ReplayAfter", func(t *testing.T) { testReplayAfter(t, open(t)) })
	t.Run("HighestSeq", func(t *testing.T) { testHighestSeq(t, open(t)) })
	t.Run("Conflict", func(t *testing.T) { testConflict(t, open) })
	t.Run("IndependentIDs", func(t *testing.T) { testIndependentIDs(t, open(t)) })
	t.Run("Payloads", func(t *testing.T) { testPayloads(t, open(t)) })
	t.Run("ReplayCallbackError", func(t *testing.T) { testReplayCallbackError(t, open(t)) })
	t.Run("ContextCanceled", func(t *testing.T) { testJournalContextCanceled(t, open(t)) })
	t.Run("ConcurrentDistinctIDs", func(t *testing.T) { testConcurrentDistinctIDs(t, open(t)) })
	t.Run("ConcurrentOneWinnerPerSeq", func(t *testing.T) { testConcurrentOneWinner(t, open(t)) })
	t.Run("ConcurrentSameIDBatches", func(t *testing.T) { testConcurrentSameIDBatches(t, open(t)) })
}

func testAppendReplayOrder(t *testing.T, j store.Journal) {
	const pid = "order|1"
	var want []store.Event
	for _, batch := range [][]int64{{1, 2, 3}, {4}, seqRange(5, 10), {11}} {
		evs := events("order", batch...)
		mustAppend(t, j, pid, evs)
		want = append(want, evs...)
		checkEvents(t, fmt.Sprintf("after appending %v", batch), replayAll(t, j, pid, 0), want)
	}
}

func testReplayAfter(t *testing.T, j store.Journal) {
	const pid = "after|1"
	all := events("after", seqRange(1, 10)...)
	mustAppend(t, j, pid, all[:4])
	mustAppend(t, j, pid, all[4:])

	for _, tc := range []struct {
		after int64
		want  []store.Event
	}{
		{after: -1, want: all},
		{after: 0, want: all},
		{after: 1, want: all[1:]},
		{after: 4, want: all[4:]},
		{after: 9, want: all[9:]},
		{after: 10, want: nil},
		{after: 1000, want: nil},
	} {
		checkEvents(t, fmt.Sprintf("Replay after %d", tc.after), replayAll(t, j, pid, tc.after), tc.want)
	}

	if got := replayAll(t, j, "after|unknown", 0); len(got) != 0 {
		t.Fatalf("Replay of an unknown id returned %d events, want none", len(got))
	}
}

func testHighestSeq(t *testing.T, j store.Journal) {
	if h := highest(t, j, "highest|unknown"); h != 0 {
		t.Fatalf("HighestSeq of an unknown id = %d, want 0", h)
	}
	const pid = "highest|1"
	mustAppend(t, j, pid, events("highest", 1))
	if h := highest(t, j, pid); h != 1 {
		t.Fatalf("HighestSeq after one event = %d, want 1", h)
	}
	mustAppend(t, j, pid, events("highest", 2, 3, 4))
	if h := highest(t, j, pid); h != 4 {
		t.Fatalf("HighestSeq after a batch up to 4 = %d, want 4", h)
	}
}

// testConflict appends a history of three events, then tries batches that
// must all be refused, and checks after each that nothing changed.
func testConflict(t *testing.T, open func(testing.TB) store.Journal) {
	for _, tc := range []struct {
		name string
		seqs []int64
	}{
		{"ExistingLast", []int64{3}},
		{"ExistingFirst", []int64{1}},
		{"ExistingBatch", []int64{2, 3, 4}},
		{"DuplicateInBatch", []int64{4, 4}},
		{"LaterEventCollides", []int64{4, 5, 3}},
		{"GapInBatch", []int64{4, 6}},
		{"GapAfterLast", []int64{5}},
		{"Descending", []int64{5, 4}},
		{"Zero", []int64{0}},
		{"Negative", []int64{-1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := open(t)
			const pid = "conflict|1"
			original := events("original", 1, 2, 3)
			mustAppend(t, j, pid, original)

			err := j.Append(context.Background(), pid, events("intruder", tc.seqs...))
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Append(seqs %v) after seqs 1..3: err = %v, want one wrapping store.ErrConflict", tc.seqs, err)
			}
			if h := highest(t, j, pid); h != 3 {
				t.Fatalf("HighestSeq after refused append = %d, want 3", h)
			}
			checkEvents(t, "history after refused append", replayAll(t, j, pid, 0), original)

			// The history stays writable at the right place.
			next := events("next", 4)
			mustAppend(t, j, pid, next)
			checkEvents(t, "history after next append", replayAll(t, j, pid, 0), append(original, next...))
		})
	}

	t.Run("NewIDNotStartingAtOne", func(t *testing.T) {
		j := open(t)
		for _, seqs := range [][]int64{{2}, {0, 1}, {2, 3}} {
			err := j.Append(context.Background(), "conflict|new", events("new", seqs...))
			if !errors.Is(err, store.ErrConflict) {
				t.Fatalf("Append(seqs %v) to a new id: err = %v, want one wrapping store.ErrConflict", seqs, err)
			}
		}
		if h := highest(t, j, "conflict|new"); h != 0 {
			t.Fatalf("HighestSeq after refused appends = %d, want 0", h)
		}
		if got := replayAll(t, j, "conflict|new", 0); len(got) != 0 {
			t.Fatalf("refused appends wrote %d events", len(got))
		}
	})
}

// testIndependentIDs writes histories under ids that are prefixes of each
// other or contain characters special to SQL LIKE, globs or key encodings, and
// checks that none leaks into another.
func testIndependentIDs(t *testing.T, j store.Journal) {
	ids := []string{
		"a|1", "a|10", "a|1|0", "a|", "a", "a|1 ", "A|1",
		"a%", "a_", "a\\", "a*", "a/1", "a\x01", "ü|🙂", "shop|cart-1",
	}
	for i, pid := range ids {
		mustAppend(t, j, pid, events(pid, seqRange(1, int64(i+1))...))
	}
	for i, pid := range ids {
		if h := highest(t, j, pid); h != int64(i+1) {
			t.Fatalf("HighestSeq(%q) = %d, want %d", pid, h, i+1)
		}
		checkEvents(t, fmt.Sprintf("Replay(%q)", pid), replayAll(t, j, pid, 0), events(pid, seqRange(1, int64(i+1))...))
	}
	if h := highest(t, j, "a|100"); h != 0 {
		t.Fatalf("HighestSeq of unwritten id %q = %d, want 0", "a|100", h)
	}
}

func testPayloads(t *testing.T, j store.Journal) {
	large := make([]byte, 1<<20)
	if _, err := rand.Read(large); err != nil {
		t.Fatal(err)
	}
	allBytes := make([]byte, 256)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	cases := []struct {
		name string
		p    *anypb.Any
	}{
		{"Text", &anypb.Any{TypeUrl: "type.googleapis.com/shop.ItemAdded", Value: []byte("item-1")}},
		{"EmptyValue", &anypb.Any{TypeUrl: "type.googleapis.com/shop.CartCleared"}},
		{"EmptyNonNilValue", &anypb.Any{TypeUrl: "type.googleapis.com/shop.CartCleared", Value: []byte{}}},
		{"AllByteValues", &anypb.Any{TypeUrl: "type.googleapis.com/bytes.All", Value: allBytes}},
		{"NULAndNewlines", &anypb.Any{TypeUrl: "p.example.com/x\ny", Value: []byte("\x00\n\r\x00")}},
		{"Large1MiB", &anypb.Any{TypeUrl: "type.googleapis.com/blob.Large", Value: large}},
		{"LongTypeURL", &anypb.Any{TypeUrl: "type.googleapis.com/" + string(bytes.Repeat([]byte("x"), 1000)), Value: []byte{1}}},
	}

	// Each payload alone, as the only event of its id.
	for _, c := range cases {
		pid := "payload|" + c.name
		mustAppend(t, j, pid, []store.Event{{Seq: 1, Payload: c.p}})
		checkEvents(t, c.name, replayAll(t, j, pid, 0), []store.Event{{Seq: 1, Payload: c.p}})
	}

	// All payloads in one batch, so a store that packs batches is exercised.
	var batch []store.Event
	for i, c := range cases {
		batch = append(batch, store.Event{Seq: int64(i + 1), Payload: c.p})
	}
	mustAppend(t, j, "payload|batch", batch)
	checkEvents(t, "batch of payloads", replayAll(t, j, "payload|batch", 0), batch)
}

func testReplayCallbackError(t *testing.T, j store.Journal) {
	const pid = "callback|1"
	mustAppend(t, j, pid, events("callback", seqRange(1, 5)...))
	stop := errors.New("storetest: stop here")
	var seen []int64
	err := j.Replay(context.Background(), pid, 0, func(e store.Event) error {
		seen = append(seen, e.Seq)
		if e.Seq == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Replay returned %v, want the callback's error", err)
	}
	if fmt.Sprint(seen) != "[1 2 3]" {
		t.Fatalf("callback saw seqs %v, want [1 2 3]", seen)
	}
}

func testJournalContextCanceled(t *testing.T, j store.Journal) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()

	const pid = "canceled|1"
	if err := j.Append(canceled, pid, events("canceled", 1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with a canceled context: err = %v, want context.Canceled", err)
	}
	if h := highest(t, j, pid); h != 0 {
		t.Fatalf("Append with a canceled context wrote up to seq %d", h)
	}

	mustAppend(t, j, pid, events("canceled", seqRange(1, 5)...))
	if _, err := j.HighestSeq(canceled, pid); !errors.Is(err, context.Canceled) {
		t.Fatalf("HighestSeq with a canceled context: err = %v, want context.Canceled", err)
	}
	calls := 0
	err := j.Replay(canceled, pid, 0, func(store.Event) error { calls++; return nil })
	if !errors.Is(err, context.Canceled) || calls != 0 {
		t.Fatalf("Replay with a canceled context: err = %v after %d callbacks, want context.Canceled and none", err, calls)
	}

	// Cancelling during a replay stops it before the next event.
	ctx, cancelMid := context.WithCancel(context.Background())
	defer cancelMid()
	var seen []int64
	err = j.Replay(ctx, pid, 0, func(e store.Event) error {
		seen = append(seen, e.Seq)
		if e.Seq == 2 {
			cancelMid()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Replay canceled at seq 2: err = %v, want context.Canceled", err)
	}
	if fmt.Sprint(seen) != "[1 2]" {
		t.Fatalf("Replay canceled at seq 2 delivered seqs %v, want [1 2]", seen)
	}
}

// concurrency is how many goroutines the concurrent tests run at once.
const concurrency = 64

// testConcurrentDistinctIDs has every goroutine write its own entity while
// reading another's, as entity goroutines of the proxy do.
func testConcurrentDistinctIDs(t *testing.T, j store.Journal) {
	const perID = 24
	ctx := t.Context()
	pidOf := func(w int) string { return fmt.Sprintf("distinct|%d", w) }

	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			pid := pidOf(w)
			neighbour := pidOf((w + 1) % concurrency)
			for seq := int64(1); seq <= perID; {
				// Alternate single events and pairs.
				seqs := []int64{seq}
				if seq%3 == 0 && seq < perID {
					seqs = append(seqs, seq+1)
				}
				if err := j.Append(ctx, pid, events(pid, seqs...)); err != nil {
					t.Errorf("Append(%q, %v): %v", pid, seqs, err)
					return
				}
				seq += int64(len(seqs))
				if h, err := j.HighestSeq(ctx, pid); err != nil || h != seq-1 {
					t.Errorf("HighestSeq(%q) = %d, %v; want %d", pid, h, err, seq-1)
					return
				}
				if err := checkPrefix(ctx, j, neighbour); err != nil {
					t.Error(err)
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
		pid := pidOf(w)
		checkEvents(t, pid, replayAll(t, j, pid, 0), events(pid, seqRange(1, perID)...))
	}
}

// checkPrefix replays pid while it may be written and checks that what it
// sees is a contiguous prefix of the history written by
// testConcurrentDistinctIDs.
func checkPrefix(ctx context.Context, j store.Journal, pid string) error {
	next := int64(1)
	return j.Replay(ctx, pid, 0, func(e store.Event) error {
		want := payload("%s/%d", pid, next)
		if e.Seq != next || e.Payload == nil || !bytes.Equal(e.Payload.GetValue(), want.GetValue()) {
			return fmt.Errorf("concurrent Replay(%q): got seq %d payload %v, want seq %d payload %q", pid, e.Seq, e.Payload, next, want.GetValue())
		}
		next++
		return nil
	})
}

// testConcurrentOneWinner starts all goroutines at once on the same sequence
// number of the same id, round after round: exactly one must win each round.
func testConcurrentOneWinner(t *testing.T, j store.Journal) {
	const rounds = 12
	const pid = "race|1"
	ctx := t.Context()

	for seq := int64(1); seq <= rounds; seq++ {
		start := make(chan struct{})
		errs := make([]error, concurrency)
		var wg sync.WaitGroup
		for w := range concurrency {
			wg.Go(func() {
				<-start
				errs[w] = j.Append(ctx, pid, []store.Event{{Seq: seq, Payload: payload("writer-%d/%d", w, seq)}})
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("seq %d: writers %d and %d both succeeded", seq, winner, w)
			case err == nil:
				winner = w
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("seq %d: writer %d failed with %v, want nil or store.ErrConflict", seq, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("seq %d: all %d writers failed", seq, concurrency)
		}
		got := replayAll(t, j, pid, seq-1)
		checkEvents(t, fmt.Sprintf("seq %d", seq), got, []store.Event{{Seq: seq, Payload: payload("writer-%d/%d", winner, seq)}})
	}
	if h := highest(t, j, pid); h != rounds {
		t.Fatalf("HighestSeq = %d, want %d", h, rounds)
	}
}

// batchMark identifies one event of one batch of one writer in
// testConcurrentSameIDBatches.
type batchMark struct{ writer, batch, index, size int }

func (m batchMark) payload() *anypb.Any {
	return payload("w%d/b%d/%d-of-%d", m.writer, m.batch, m.index, m.size)
}

func parseMark(p *anypb.Any) (batchMark, error) {
	var m batchMark
	_, err := fmt.Sscanf(string(p.GetValue()), "w%d/b%d/%d-of-%d", &m.writer, &m.batch, &m.index, &m.size)
	return m, err
}

// testConcurrentSameIDBatches has many writers compete for one id with
// batches of different sizes, retrying on conflict the way a reloaded entity
// would, while readers replay the id. Every batch must land whole, exactly
// once, and the history must stay contiguous.
func testConcurrentSameIDBatches(t *testing.T, j store.Journal) {
	const batchesPerWriter = 3
	const pid = "contended|1"
	ctx := t.Context()
	sizeOf := func(w, b int) int { return 1 + (w+b)%3 }

	writersDone := make(chan struct{})
	var readers sync.WaitGroup
	for range 4 {
		readers.Go(func() {
			for {
				select {
				case <-writersDone:
					return
				default:
				}
				evs, err := collect(ctx, j, pid)
				if err == nil {
					err = checkBatches(evs, 0)
				}
				if err != nil {
					t.Errorf("concurrent reader: %v", err)
					return
				}
			}
		})
	}

	var writers sync.WaitGroup
	for w := range concurrency {
		writers.Go(func() {
			for b := range batchesPerWriter {
				size := sizeOf(w, b)
				for attempt := 0; ; attempt++ {
					if attempt > 100000 {
						t.Errorf("writer %d batch %d: no success after %d attempts", w, b, attempt)
						return
					}
					h, err := j.HighestSeq(ctx, pid)
					if err != nil {
						t.Errorf("writer %d: HighestSeq: %v", w, err)
						return
					}
					evs := make([]store.Event, size)
					for i := range evs {
						evs[i] = store.Event{Seq: h + 1 + int64(i), Payload: batchMark{w, b, i, size}.payload()}
					}
					err = j.Append(ctx, pid, evs)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrConflict) {
						t.Errorf("writer %d: Append: %v", w, err)
						return
					}
				}
			}
		})
	}
	writers.Wait()
	close(writersDone)
	readers.Wait()
	if t.Failed() {
		return
	}

	total := 0
	for w := range concurrency {
		for b := range batchesPerWriter {
			total += sizeOf(w, b)
		}
	}
	evs := replayAll(t, j, pid, 0)
	if len(evs) != total {
		t.Fatalf("history has %d events, want %d", len(evs), total)
	}
	if h := highest(t, j, pid); h != int64(total) {
		t.Fatalf("HighestSeq = %d, want %d", h, total)
	}
	if err := checkBatches(evs, concurrency*batchesPerWriter); err != nil {
		t.Fatal(err)
	}
}

// collect replays every event of pid.
func collect(ctx context.Context, j store.Journal, pid string) ([]store.Event, error) {
	var out []store.Event
	err := j.Replay(ctx, pid, 0, func(e store.Event) error {
		out = append(out, e)
		return nil
	})
	return out, err
}

// checkBatches checks a history written by testConcurrentSameIDBatches:
// contiguous from 1, every batch whole and in order, no batch twice. If
// wantBatches is not 0, the history must hold exactly that many batches.
func checkBatches(evs []store.Event, wantBatches int) error {
	type key struct{ writer, batch int }
	seen := make(map[key]bool)
	for i := 0; i < len(evs); {
		if evs[i].Seq != int64(i+1) {
			return fmt.Errorf("event %d has seq %d, want %d", i, evs[i].Seq, i+1)
		}
		first, err := parseMark(evs[i].Payload)
		if err != nil {
			return fmt.Errorf("seq %d: unexpected payload %v: %w", evs[i].Seq, evs[i].Payload, err)
		}
		if first.index != 0 {
			return fmt.Errorf("seq %d starts in the middle of a batch: %+v", evs[i].Seq, first)
		}
		k := key{first.writer, first.batch}
		if seen[k] {
			return fmt.Errorf("seq %d: batch %d of writer %d appears twice", evs[i].Seq, first.batch, first.writer)
		}
		seen[k] = true
		for n := range first.size {
			if i+n >= len(evs) {
				return fmt.Errorf("batch %+v is cut short: history ends at seq %d", first, len(evs))
			}
			m, err := parseMark(evs[i+n].Payload)
			want := batchMark{first.writer, first.batch, n, first.size}
			if err != nil || m != want {
				return fmt.Errorf("seq %d: got %+v (%v), want %+v", i+n+1, m, err, want)
			}
		}
		i += first.size
	}
	if wantBatches != 0 && len(seen) != wantBatches {
		return fmt.Errorf("history holds %d batches, want %d", len(seen), wantBatches)
	}
	return nil
}
