package crdt

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// FuzzFromDelta feeds arbitrary bytes from the user function's wire through
// the delta handling: nothing may panic, an accepted first update gives a
// CRDT that serializes, clones and merges, and whatever the proxy accepts the
// function-side view accepts too.
func FuzzFromDelta(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, k := range allKinds {
		for range 4 {
			b, err := proto.Marshal(randDelta(rng, k, 0))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var d protocol.CrdtDelta
		if proto.Unmarshal(data, &d) != nil {
			return
		}
		r := Replica{Node: "a", Now: func() int64 { return 1000 }, Members: []string{"a", "b"}}
		for _, k := range allKinds { // the delta against a CRDT of every type
			c, _ := New(k)
			_ = c.Apply(r, &d)
		}
		c, err := FromDelta(r, &d)
		if err != nil {
			return
		}
		fnView, err := ApplyView(nil, &d)
		if err != nil {
			t.Fatalf("FromDelta accepted %v, ApplyView refused: %v", &d, err)
		}
		if _, err := Diff(fnView, c.View(r)); err != nil {
			t.Fatalf("Diff(function view, CRDT view): %v", err)
		}
		other := c.Clone()
		_ = other.Apply(Replica{Node: "b", Now: func() int64 { return 999 }}, &d)
		must(t, c.Merge(other))
		view := c.View(r)
		if _, err := (*fnValue)(nil).apply(InitialDelta(view)); err != nil {
			t.Fatalf("initial delta of %v does not apply: %v", view, err)
		}
		b := mustMarshal(t, c)
		back, err := UnmarshalState(b)
		if err != nil {
			t.Fatalf("own state does not decode: %v", err)
		}
		if !bytes.Equal(mustMarshal(t, back), b) || !reflect.DeepEqual(fnOf(back.View(r)), fnOf(view)) {
			t.Fatal("state round trip changed the CRDT")
		}
	})
}

// FuzzState decodes arbitrary bytes as replicated state: no panics, only
// ErrCorruptState, and whatever decodes re-encodes to a fixed point that
// merges idempotently.
func FuzzState(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, k := range allKinds {
		w := newWorld(f, rng, k)
		w.run(20)
		for range 3 {
			f.Add(mustMarshal(f, w.snap()))
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := UnmarshalState(data)
		if err != nil {
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("error %v is not ErrCorruptState", err)
			}
			return
		}
		b := mustMarshal(t, c)
		c2, err := UnmarshalState(b)
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !bytes.Equal(mustMarshal(t, c2), b) {
			t.Fatal("encoding is not a fixed point")
		}
		must(t, c.Merge(c2))
		if !bytes.Equal(mustMarshal(t, c), b) {
			t.Fatal("merge with an equal state changed it")
		}
		r := Replica{Node: "a", Members: []string{"a", "b"}}
		view := c.View(r)
		if !reflect.DeepEqual(fnOf(view), fnOf(c2.View(r))) {
			t.Fatal("equal states, different views")
		}
		if _, err := (*fnValue)(nil).apply(InitialDelta(view)); err != nil {
			t.Fatalf("initial delta of %v does not apply: %v", view, err)
		}
	})
}
