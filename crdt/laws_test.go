package crdt

import (
	"bytes"
	"reflect"
	"testing"
)

// Merge must be a join: commutative, associative and idempotent, on states
// reached by random histories of updates and merges on several replicas.
// States are compared by their canonical serialization, metadata included.
func TestMergeLaws(t *testing.T) {
	rng := newRand(t)
	histories, steps, checks := 40, 60, 40
	if testing.Short() {
		histories = 8
	}
	for _, k := range allKinds {
		t.Run(k.String(), func(t *testing.T) {
			for range histories {
				w := newWorld(t, rng, k)
				w.run(steps)
				for range checks {
					x, y, z := w.snap(), w.snap(), w.snap()
					eq := func(law string, a, b CRDT) {
						t.Helper()
						r := w.replica(0)
						if ab, bb := mustMarshal(t, a), mustMarshal(t, b); !bytes.Equal(ab, bb) || !reflect.DeepEqual(a.View(r), b.View(r)) {
							t.Fatalf("%s fails:\n x=%v\n y=%v\n z=%v", law, x.View(w.replica(0)), y.View(w.replica(0)), z.View(w.replica(0)))
						}
					}
					eq("commutativity", merged(t, x, y), merged(t, y, x))
					eq("associativity", merged(t, merged(t, x, y), z), merged(t, x, merged(t, y, z)))
					eq("idempotence", merged(t, x, x.Clone()), x)
					eq("idempotence (self)", merged(t, x, x), x)
					eq("absorption", merged(t, merged(t, x, y), y), merged(t, x, y))
					eq("serialization", roundTrip(t, x), x)
				}
				w.gossip()
				want := mustMarshal(t, w.replicas[0])
				for i, c := range w.replicas[1:] {
					if !bytes.Equal(mustMarshal(t, c), want) {
						t.Fatalf("replica %d did not converge: %v vs %v", i+1, c.View(w.replica(0)), w.replicas[0].View(w.replica(0)))
					}
				}
			}
		})
	}
}

// Merge never shares state with its argument: changing the merged-in
// replica afterwards leaves the result alone.
func TestMergeDoesNotAlias(t *testing.T) {
	rng := newRand(t)
	for _, k := range allKinds {
		for range 50 {
			w := newWorld(t, rng, k)
			w.run(30)
			a, b := w.snap(), w.snap()
			a.Merge(b)
			before := mustMarshal(t, a)
			for range 10 {
				b.Apply(w.replica(rng.IntN(len(nodes))), randDelta(rng, k, 0))
			}
			if !bytes.Equal(before, mustMarshal(t, a)) {
				t.Fatalf("%s: updating the merged-in replica changed the result", k)
			}
		}
	}
}

// Clone is deep and equal.
func TestClone(t *testing.T) {
	rng := newRand(t)
	for _, k := range allKinds {
		w := newWorld(t, rng, k)
		w.run(40)
		c := w.snap()
		cl := c.Clone()
		if !bytes.Equal(mustMarshal(t, c), mustMarshal(t, cl)) {
			t.Fatalf("%s: clone differs", k)
		}
		before := mustMarshal(t, c)
		for range 20 {
			cl.Apply(w.replica(0), randDelta(rng, k, 0))
		}
		if !bytes.Equal(before, mustMarshal(t, c)) {
			t.Fatalf("%s: updating a clone changed the original", k)
		}
		if !reflect.DeepEqual(c.View(w.replica(0)), roundTrip(t, c).View(w.replica(0))) {
			t.Fatalf("%s: view changed in a state round trip", k)
		}
	}
}
