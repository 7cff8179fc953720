package crdt

import (
	"bytes"
	"flag"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// Random operation histories for the property tests. Every test that uses
// randomness takes its generator from newRand, which logs the seed when the
// test fails; rerun with -seed to reproduce.

var seedFlag = flag.Uint64("seed", 0, "seed for the randomized tests (0 picks one from the clock)")

func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("random seed %d: rerun with -seed=%d", seed, seed)
		}
	})
	return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
}

var allKinds = []Kind{KindGCounter, KindPNCounter, KindGSet, KindORSet, KindLWWRegister, KindFlag, KindORMap, KindVote}

var nodes = []string{"a", "b", "c"}

// universe is the pool of set elements, map keys and register values: small,
// so random operations collide, with two type URLs and an empty Any.
var universe = []*anypb.Any{
	{},
	{TypeUrl: "p.cloudstate.io/string", Value: []byte("\n\x01x")},
	{TypeUrl: "p.cloudstate.io/string", Value: []byte("\n\x01y")},
	{TypeUrl: "p.cloudstate.io/string", Value: []byte("\n\x01z")},
	{TypeUrl: "p.cloudstate.io/int64", Value: []byte("\x08\x01")},
	{TypeUrl: "p.cloudstate.io/int64", Value: []byte("\x08\x02")},
}

// mapKeys are the ORMap keys; each has a usual value type (homeKind) that
// random updates mostly stick to, so entries get updated, not just replaced.
var mapKeys = universe[1:5]

func pick(rng *rand.Rand) *anypb.Any { return universe[rng.IntN(len(universe))] }

func picks(rng *rand.Rand, max int) []*anypb.Any {
	n := rng.IntN(max + 1)
	out := make([]*anypb.Any, n)
	for i := range out {
		out[i] = pick(rng)
	}
	return out
}

func homeKind(i, depth int) Kind {
	k := allKinds[(i+depth)%len(allKinds)]
	if k == KindORMap && depth >= 1 {
		return KindORSet
	}
	return k
}

// randDelta returns a random update of kind k, mostly valid. depth limits
// ORMap nesting.
func randDelta(rng *rand.Rand, k Kind, depth int) *protocol.CrdtDelta {
	switch k {
	case KindGCounter:
		inc := rng.Uint64N(5)
		if rng.IntN(50) == 0 {
			inc = 1 << 63 // rejected
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: inc}}}
	case KindPNCounter:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: rng.Int64N(21) - 10}}}
	case KindGSet:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: picks(rng, 2)}}}
	case KindORSet:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
			Cleared: rng.IntN(10) == 0, Removed: picks(rng, 2), Added: picks(rng, 2),
		}}}
	case KindLWWRegister:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
			Value: pick(rng), Clock: protocol.CrdtClock(rng.IntN(5)), CustomClockValue: rng.Int64N(20),
		}}}
	case KindFlag:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: rng.IntN(4) != 0}}}
	case KindORMap:
		md := &protocol.ORMapDelta{Cleared: rng.IntN(20) == 0}
		for range rng.IntN(2) {
			md.Removed = append(md.Removed, mapKeys[rng.IntN(len(mapKeys))])
		}
		for range rng.IntN(3) {
			md.Updated = append(md.Updated, randEntry(rng, depth))
		}
		for range rng.IntN(3) {
			md.Added = append(md.Added, randEntry(rng, depth))
		}
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: md}}
	case KindVote:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
			SelfVote: rng.IntN(2) == 0, VotesFor: rng.Int32N(3), TotalVoters: rng.Int32N(3),
		}}}
	}
	panic("unknown kind")
}

func randEntry(rng *rand.Rand, depth int) *protocol.ORMapEntryDelta {
	i := rng.IntN(len(mapKeys))
	k := homeKind(i, depth)
	if rng.IntN(6) == 0 {
		k = allKinds[rng.IntN(len(allKinds))]
		if k == KindORMap && depth >= 1 {
			k = KindGCounter
		}
	}
	return &protocol.ORMapEntryDelta{Key: mapKeys[i], Delta: randDelta(rng, k, depth+1)}
}

// world runs a random history of one CRDT type on len(nodes) replicas and
// keeps snapshots of the states it passes through.
type world struct {
	t        testing.TB
	rng      *rand.Rand
	kind     Kind
	clock    int64
	replicas []CRDT
	snaps    []CRDT
}

func newWorld(t testing.TB, rng *rand.Rand, k Kind) *world {
	w := &world{t: t, rng: rng, kind: k, clock: 1000}
	for range nodes {
		c, err := New(k)
		if err != nil {
			t.Fatal(err)
		}
		w.replicas = append(w.replicas, c)
	}
	return w
}

func (w *world) replica(i int) Replica {
	return Replica{Node: nodes[i], Now: func() int64 { return w.clock }, Members: nodes}
}

// run performs n random steps: local updates and merges (some through
// MarshalState/UnmarshalState, as replication would move them).
func (w *world) run(n int) {
	w.t.Helper()
	for range n {
		w.clock += w.rng.Int64N(3) // equal timestamps happen
		i := w.rng.IntN(len(w.replicas))
		c := w.replicas[i]
		switch p := w.rng.IntN(10); {
		case p < 6:
			before := mustMarshal(w.t, c)
			if err := c.Apply(w.replica(i), randDelta(w.rng, w.kind, 0)); err != nil {
				if after := mustMarshal(w.t, c); !bytes.Equal(before, after) {
					w.t.Fatalf("failed Apply (%v) changed the state", err)
				}
			}
		case p < 9:
			other := w.replicas[w.rng.IntN(len(w.replicas))]
			if w.rng.IntN(2) == 0 {
				other = roundTrip(w.t, other)
			}
			if err := c.Merge(other); err != nil {
				w.t.Fatalf("merge: %v", err)
			}
		}
		w.snaps = append(w.snaps, c.Clone())
	}
}

// gossip merges every replica into every other until they agree.
func (w *world) gossip() {
	w.t.Helper()
	for range 2 {
		for _, a := range w.replicas {
			for _, b := range w.replicas {
				if err := a.Merge(b); err != nil {
					w.t.Fatalf("merge: %v", err)
				}
			}
		}
	}
}

func (w *world) snap() CRDT { return w.snaps[w.rng.IntN(len(w.snaps))].Clone() }

func mustMarshal(t testing.TB, c CRDT) []byte {
	t.Helper()
	b, err := c.MarshalState()
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return b
}

func roundTrip(t testing.TB, c CRDT) CRDT {
	t.Helper()
	b := mustMarshal(t, c)
	c2, err := UnmarshalState(b)
	if err != nil {
		t.Fatalf("unmarshal own state: %v", err)
	}
	if b2 := mustMarshal(t, c2); !bytes.Equal(b, b2) {
		t.Fatalf("state changed in a round trip")
	}
	return c2
}

func merged(t testing.TB, a, b CRDT) CRDT {
	t.Helper()
	c := a.Clone()
	if err := c.Merge(b); err != nil {
		t.Fatalf("merge: %v", err)
	}
	return c
}
