package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// RunValues runs the conformance tests of store.ValueStore against the stores
// returned by open. open must return a fresh, empty store on every call.
//
// Beyond the interface's doc, the suite relies on two points of its contract:
// the first write of a key returns version 1, and every successful write,
// including a delete, returns a version greater than the one it was given (a
// delete leaves a tombstone whose version the next write must present).
func RunValues(t *testing.T, open func(tb testing.TB) store.ValueStore) {
	t.Run("Missing", func(t *testing.T) { testValueMissing(t, open(t)) })
	t.Run("PutGet", func(t *testing.T) { testValuePutGet(t, open(t)) })
	t.Run("Conflict", func(t *testing.T) { testValueConflict(t, open) })
	t.Run("Delete", func(t *testing.T) { testValueDelete(t, open(t)) })
	t.Run("DeleteFencesStaleWriter", func(t *testing.T) { testValueDeleteFences(t, open(t)) })
	t.Run("DeleteNeverWritten", func(t *testing.T) { testValueDeleteNeverWritten(t, open(t)) })
	t.Run("IndependentKeys", func(t *testing.T) { testValueIndependentKeys(t, open(t)) })
	t.Run("Payloads", func(t *testing.T) { testValuePayloads(t, open(t)) })
	t.Run("ContextCanceled", func(t *testing.T) { testValueContextCanceled(t, open(t)) })
	t.Run("ConcurrentOneWinner", func(t *testing.T) { testValueConcurrentOneWinner(t, open(t)) })
	t.Run("ConcurrentDistinctKeys", func(t *testing.T) { testValueConcurrentDistinctKeys(t, open(t)) })
	t.Run("ConcurrentCounter", func(t *testing.T) { testValueConcurrentCounter(t, open(t)) })
}

// getValue reads key, failing the test on error.
func getValue(tb testing.TB, s store.ValueStore, key string) store.Value {
	tb.Helper()
	v, err := s.GetValue(context.Background(), key)
	if err != nil {
		tb.Fatalf("GetValue(%q): %v", key, err)
	}
	return v
}

// mustPut writes p under key at version expected and checks that the new
// version is greater.
func mustPut(tb testing.TB, s store.ValueStore, key string, expected int64, p *anypb.Any) int64 {
	tb.Helper()
	v, err := s.PutValue(context.Background(), key, expected, p)
	if err != nil {
		tb.Fatalf("PutValue(%q, version %d): %v", key, expected, err)
	}
	if v <= expected {
		tb.Fatalf("PutValue(%q, version %d) returned version %d, want a greater one", key, expected, v)
	}
	return v
}

// mustDelete deletes key at version expected and checks that the version of
// the tombstone is greater.
func mustDelete(tb testing.TB, s store.ValueStore, key string, expected int64) int64 {
	tb.Helper()
	v, err := s.DeleteValue(context.Background(), key, expected)
	if err != nil {
		tb.Fatalf("DeleteValue(%q, version %d): %v", key, expected, err)
	}
	if v <= expected {
		tb.Fatalf("DeleteValue(%q, version %d) returned version %d, want a greater one", key, expected, v)
	}
	return v
}

// checkValue reads key and compares it with the expected payload (nil for
// nothing stored) and version.
func checkValue(tb testing.TB, s store.ValueStore, key string, want *anypb.Any, version int64) {
	tb.Helper()
	got := getValue(tb, s, key)
	if got.Version != version {
		tb.Fatalf("GetValue(%q) has version %d, want %d", key, got.Version, version)
	}
	what := fmt.Sprintf("GetValue(%q) at version %d", key, version)
	if want == nil {
		if got.Payload != nil {
			tb.Fatalf("%s: payload %v, want none", what, got.Payload)
		}
		return
	}
	checkPayload(tb, what, got.Payload, want)
}

func testValueMissing(t *testing.T, s store.ValueStore) {
	checkValue(t, s, "value|unknown", nil, 0)
}

func testValuePutGet(t *testing.T, s store.ValueStore) {
	const key = "value|1"
	first := payload("first")
	v1, err := s.PutValue(context.Background(), key, 0, first)
	if err != nil {
		t.Fatalf("first PutValue(%q, version 0): %v", key, err)
	}
	if v1 != 1 {
		t.Fatalf("first PutValue(%q) returned version %d, want 1", key, v1)
	}
	checkValue(t, s, key, first, 1)

	version := v1
	for i := range 5 {
		p := payload("update %d", i)
		version = mustPut(t, s, key, version, p)
		checkValue(t, s, key, p, version)
	}
}

// testValueConflict writes a value twice, then tries writes and deletes with
// versions that are not the current one: every one must be refused and leave
// the value as it was.
func testValueConflict(t *testing.T, open func(testing.TB) store.ValueStore) {
	for _, tc := range []struct {
		name    string
		version func(current int64) int64
	}{
		{"NeverWritten", func(int64) int64 { return 0 }},
		{"Previous", func(c int64) int64 { return c - 1 }},
		{"Next", func(c int64) int64 { return c + 1 }},
		{"Far", func(c int64) int64 { return c + 1000 }},
		{"Negative", func(int64) int64 { return -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			const key = "conflict|1"
			original := payload("original")
			current := mustPut(t, s, key, mustPut(t, s, key, 0, payload("before")), original)
			stale := tc.version(current)

			if v, err := s.PutValue(ctx, key, stale, payload("intruder")); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("PutValue at version %d when the current one is %d: version %d, err = %v; want one wrapping store.ErrConflict", stale, current, v, err)
			}
			checkValue(t, s, key, original, current)
			if v, err := s.DeleteValue(ctx, key, stale); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("DeleteValue at version %d when the current one is %d: version %d, err = %v; want one wrapping store.ErrConflict", stale, current, v, err)
			}
			checkValue(t, s, key, original, current)

			// The value stays writable at the current version.
			next := payload("next")
			checkValue(t, s, key, next, mustPut(t, s, key, current, next))
		})
	}

	t.Run("NewKeyNotAtZero", func(t *testing.T) {
		s := open(t)
		ctx := context.Background()
		const key = "conflict|new"
		for _, version := range []int64{1, 2, -1} {
			if _, err := s.PutValue(ctx, key, version, payload("new")); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("PutValue(%q, version %d) of a key never written: err = %v, want one wrapping store.ErrConflict", key, version, err)
			}
			if _, err := s.DeleteValue(ctx, key, version); !errors.Is(err, store.ErrConflict) {
				t.Fatalf("DeleteValue(%q, version %d) of a key never written: err = %v, want one wrapping store.ErrConflict", key, version, err)
			}
		}
		checkValue(t, s, key, nil, 0)
	})
}

func testValueDelete(t *testing.T, s store.ValueStore) {
	const key = "delete|1"
	v := mustPut(t, s, key, 0, payload("doomed"))
	deleted := mustDelete(t, s, key, v)
	checkValue(t, s, key, nil, deleted)

	// Deleting again at the tombstone's version is deleting nothing, which
	// succeeds and still moves the version on.
	again := mustDelete(t, s, key, deleted)
	checkValue(t, s, key, nil, again)

	// A key is re-created from the tombstone's version, not from 0.
	if _, err := s.PutValue(context.Background(), key, 0, payload("from zero")); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("PutValue(%q, version 0) over a tombstone at version %d: err = %v, want one wrapping store.ErrConflict", key, again, err)
	}
	reborn := payload("reborn")
	checkValue(t, s, key, reborn, mustPut(t, s, key, again, reborn))
}

// testValueDeleteFences is the reason for tombstones: a writer that read a
// value before it was deleted and written again must not overwrite the new
// value, even though the key went through "nothing stored" in between.
func testValueDeleteFences(t *testing.T, s store.ValueStore) {
	const key = "fence|1"
	ctx := context.Background()
	mustPut(t, s, key, 0, payload("v1"))
	stale := getValue(t, s, key)

	deleted := mustDelete(t, s, key, stale.Version)
	recreated := payload("recreated")
	current := mustPut(t, s, key, deleted, recreated)

	for _, version := range []int64{stale.Version, 0} {
		if _, err := s.PutValue(ctx, key, version, payload("stale writer")); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("PutValue at version %d after delete and re-create (now %d): err = %v, want one wrapping store.ErrConflict", version, current, err)
		}
		if _, err := s.DeleteValue(ctx, key, version); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("DeleteValue at version %d after delete and re-create (now %d): err = %v, want one wrapping store.ErrConflict", version, current, err)
		}
	}
	checkValue(t, s, key, recreated, current)
}

func testValueDeleteNeverWritten(t *testing.T, s store.ValueStore) {
	const key = "delete|never"
	v := mustDelete(t, s, key, 0)
	checkValue(t, s, key, nil, v)
	p := payload("after tombstone")
	checkValue(t, s, key, p, mustPut(t, s, key, v, p))
}

// testValueIndependentKeys writes values under keys that are prefixes of each
// other or contain characters special to SQL LIKE, globs or key encodings,
// and checks that neither writes nor deletes leak into another key.
func testValueIndependentKeys(t *testing.T, s store.ValueStore) {
	keys := []string{
		"a|1", "a|10", "a|1|0", "a|", "a", "a|1 ", "A|1",
		"a%", "a_", "a\\", "a*", "a/1", "a\x01", "a\x00", "ü|🙂", "shop|cart-1",
	}
	// Key i is written i+1 times, so versions differ between keys too.
	versions := make([]int64, len(keys))
	for i, key := range keys {
		for n := range i + 1 {
			versions[i] = mustPut(t, s, key, versions[i], payload("%s#%d", key, n))
		}
	}
	for i, key := range keys {
		checkValue(t, s, key, payload("%s#%d", key, i), versions[i])
	}
	checkValue(t, s, "a|100", nil, 0)

	// Delete every other key; the rest must be untouched.
	for i, key := range keys {
		if i%2 == 0 {
			versions[i] = mustDelete(t, s, key, versions[i])
		}
	}
	for i, key := range keys {
		if i%2 == 0 {
			checkValue(t, s, key, nil, versions[i])
		} else {
			checkValue(t, s, key, payload("%s#%d", key, i), versions[i])
		}
	}
}

func testValuePayloads(t *testing.T, s store.ValueStore) {
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
		{"Text", &anypb.Any{TypeUrl: "type.googleapis.com/shop.Cart", Value: []byte("cart")}},
		{"EmptyValue", &anypb.Any{TypeUrl: "type.googleapis.com/shop.Cart"}},
		{"EmptyNonNilValue", &anypb.Any{TypeUrl: "type.googleapis.com/shop.Cart", Value: []byte{}}},
		// An empty Any is a stored value, not a deletion.
		{"EmptyAny", &anypb.Any{}},
		{"AllByteValues", &anypb.Any{TypeUrl: "type.googleapis.com/bytes.All", Value: allBytes}},
		{"NULAndNewlines", &anypb.Any{TypeUrl: "p.example.com/x\ny", Value: []byte("\x00\n\r\x00")}},
		{"Large1MiB", &anypb.Any{TypeUrl: "type.googleapis.com/blob.Large", Value: large}},
		{"LongTypeURL", &anypb.Any{TypeUrl: "type.googleapis.com/" + string(bytes.Repeat([]byte("x"), 1000)), Value: []byte{1}}},
	}
	for _, c := range cases {
		key := "payload|" + c.name
		checkValue(t, s, key, c.p, mustPut(t, s, key, 0, c.p))
	}

	// Overwriting with each payload in turn, large to small and back, must
	// leave nothing of the previous one behind.
	const key = "payload|overwrite"
	version := int64(0)
	for _, c := range append(cases, cases[0]) {
		version = mustPut(t, s, key, version, c.p)
		checkValue(t, s, key, c.p, version)
	}
}

func testValueContextCanceled(t *testing.T, s store.ValueStore) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	const key = "value|canceled"

	if _, err := s.PutValue(canceled, key, 0, payload("canceled")); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutValue with a canceled context: err = %v, want context.Canceled", err)
	}
	checkValue(t, s, key, nil, 0)

	kept := payload("kept")
	v := mustPut(t, s, key, 0, kept)
	if _, err := s.DeleteValue(canceled, key, v); !errors.Is(err, context.Canceled) {
		t.Fatalf("DeleteValue with a canceled context: err = %v, want context.Canceled", err)
	}
	if _, err := s.PutValue(canceled, key, v, payload("canceled update")); !errors.Is(err, context.Canceled) {
		t.Fatalf("PutValue of an existing key with a canceled context: err = %v, want context.Canceled", err)
	}
	checkValue(t, s, key, kept, v)
	if _, err := s.GetValue(canceled, key); !errors.Is(err, context.Canceled) {
		t.Fatalf("GetValue with a canceled context: err = %v, want context.Canceled", err)
	}
}

// testValueConcurrentOneWinner starts all goroutines at once on the same
// version of the same key, round after round; in some rounds a quarter of
// them delete instead of writing. Exactly one must win each round, and the
// store must then hold what the winner wrote.
func testValueConcurrentOneWinner(t *testing.T, s store.ValueStore) {
	const rounds = 12
	const key = "race|1"
	ctx := t.Context()

	version := int64(0)
	for round := range rounds {
		deleters := round%3 == 2
		isDelete := func(w int) bool { return deleters && w%4 == 0 }
		start := make(chan struct{})
		errs := make([]error, concurrency)
		versions := make([]int64, concurrency)
		var wg sync.WaitGroup
		for w := range concurrency {
			wg.Go(func() {
				<-start
				if isDelete(w) {
					versions[w], errs[w] = s.DeleteValue(ctx, key, version)
				} else {
					versions[w], errs[w] = s.PutValue(ctx, key, version, payload("writer-%d/%d", w, round))
				}
			})
		}
		close(start)
		wg.Wait()

		winner := -1
		for w, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: writers %d and %d both succeeded at version %d", round, winner, w, version)
			case err == nil:
				winner = w
			case !errors.Is(err, store.ErrConflict):
				t.Fatalf("round %d: writer %d failed with %v, want nil or store.ErrConflict", round, w, err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: all %d writers failed at version %d", round, concurrency, version)
		}
		if versions[winner] <= version {
			t.Fatalf("round %d: winner got version %d, want more than %d", round, versions[winner], version)
		}
		version = versions[winner]
		var want *anypb.Any
		if !isDelete(winner) {
			want = payload("writer-%d/%d", winner, round)
		}
		checkValue(t, s, key, want, version)
	}
}

// testValueConcurrentDistinctKeys has every goroutine write, read and delete
// its own key while reading another's, as value entities of the proxy do.
// Nobody competes for a key, so every write must succeed.
func testValueConcurrentDistinctKeys(t *testing.T, s store.ValueStore) {
	const perKey = 24
	ctx := t.Context()
	keyOf := func(w int) string { return "distinct|" + strconv.Itoa(w) }

	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			key := keyOf(w)
			neighbour := keyOf((w + 1) % concurrency)
			neighbourVersion := int64(0)
			version := int64(0)
			for n := range perKey {
				var err error
				var want *anypb.Any
				if n%5 == 4 {
					version, err = s.DeleteValue(ctx, key, version)
				} else {
					want = payload("%s/%d", key, n)
					version, err = s.PutValue(ctx, key, version, want)
				}
				if err != nil {
					t.Errorf("write %d of %q: %v", n, key, err)
					return
				}
				got, err := s.GetValue(ctx, key)
				if err != nil || got.Version != version || !samePayload(got.Payload, want) {
					t.Errorf("GetValue(%q) after write %d = %v at version %d, %v; want %v at version %d", key, n, got.Payload, got.Version, err, want, version)
					return
				}

				// The neighbour's value changes under us; it must always be
				// one the neighbour wrote, and its version must never go back.
				nv, err := s.GetValue(ctx, neighbour)
				if err != nil {
					t.Errorf("GetValue(%q): %v", neighbour, err)
					return
				}
				if nv.Version < neighbourVersion {
					t.Errorf("GetValue(%q): version went back from %d to %d", neighbour, neighbourVersion, nv.Version)
					return
				}
				neighbourVersion = nv.Version
				if nv.Payload != nil && !bytes.HasPrefix(nv.Payload.GetValue(), []byte(neighbour+"/")) {
					t.Errorf("GetValue(%q) returned %q, which its writer never wrote", neighbour, nv.Payload.GetValue())
					return
				}
			}
		})
	}
	wg.Wait()
}

// samePayload reports whether got holds the payload want, or both are nil.
func samePayload(got, want *anypb.Any) bool {
	if got == nil || want == nil {
		return got == nil && want == nil
	}
	return got.GetTypeUrl() == want.GetTypeUrl() && bytes.Equal(got.GetValue(), want.GetValue())
}

// testValueConcurrentCounter is the lost-update check: goroutines increment a
// shared counter by read-modify-write, retrying on conflict the way a value
// entity reloads. With correct fencing no increment is lost.
func testValueConcurrentCounter(t *testing.T, s store.ValueStore) {
	const perWriter = 8
	const key = "counter|1"
	ctx := t.Context()

	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Go(func() {
			for range perWriter {
				for attempt := 0; ; attempt++ {
					if attempt > 100000 {
						t.Errorf("writer %d: no increment after %d attempts", w, attempt)
						return
					}
					cur, err := s.GetValue(ctx, key)
					if err != nil {
						t.Errorf("writer %d: GetValue: %v", w, err)
						return
					}
					n := 0
					if cur.Payload != nil {
						if n, err = strconv.Atoi(string(cur.Payload.GetValue())); err != nil {
							t.Errorf("writer %d: counter holds %q: %v", w, cur.Payload.GetValue(), err)
							return
						}
					}
					next := &anypb.Any{TypeUrl: typeURL, Value: []byte(strconv.Itoa(n + 1))}
					_, err = s.PutValue(ctx, key, cur.Version, next)
					if err == nil {
						break
					}
					if !errors.Is(err, store.ErrConflict) {
						t.Errorf("writer %d: PutValue: %v", w, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	got := getValue(t, s, key)
	if want := strconv.Itoa(concurrency * perWriter); string(got.Payload.GetValue()) != want {
		t.Fatalf("counter = %q after %d increments, want %s (updates were lost)", got.Payload.GetValue(), concurrency*perWriter, want)
	}
	if got.Version < concurrency*perWriter {
		t.Fatalf("counter version = %d after %d successful writes, want at least that many", got.Version, concurrency*perWriter)
	}
}
