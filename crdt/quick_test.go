package crdt

import (
	"slices"
	"testing"
	"testing/quick"
)

// Key order is a total order consistent with equality.
func TestKeyCompareQuick(t *testing.T) {
	prop := func(at, av, bt, bv, ct, cv string) bool {
		a, b, c := Key{at, av}, Key{bt, bv}, Key{ct, cv}
		if a.Compare(b) != -b.Compare(a) || (a.Compare(b) == 0) != (a == b) {
			return false
		}
		ks := []Key{a, b, c}
		slices.SortFunc(ks, compareKeys)
		return ks[0].Compare(ks[1]) <= 0 && ks[1].Compare(ks[2]) <= 0 && ks[0].Compare(ks[2]) <= 0
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
	if KeyOf(nil) != (Key{}) {
		t.Fatal("KeyOf(nil) is not the zero Key")
	}
	if k := key("x"); KeyOf(k.Any()) != k {
		t.Fatal("Key.Any round trip")
	}
}

// Counters spread over replicas and merged in any order count every change
// exactly once.
func TestCountersQuick(t *testing.T) {
	prop := func(changes []int32, where []uint8, order []uint8) bool {
		pn := []CRDT{&PNCounter{}, &PNCounter{}, &PNCounter{}}
		g := []CRDT{&GCounter{}, &GCounter{}, &GCounter{}}
		var sum int64
		var gsum uint64
		for i, c := range changes {
			n := 0
			if i < len(where) {
				n = int(where[i]) % 3
			}
			if pn[n].Apply(Replica{Node: nodes[n]}, pncounterD(int64(c))) != nil {
				return false
			}
			inc := uint64(c) & 0xffff
			if g[n].Apply(Replica{Node: nodes[n]}, gcounterD(inc)) != nil {
				return false
			}
			sum += int64(c)
			gsum += inc
		}
		// Gossip in a random order, then everyone with everyone.
		for i := 0; i+1 < len(order); i += 2 {
			x, y := int(order[i])%3, int(order[i+1])%3
			pn[x].Merge(pn[y])
			g[x].Merge(g[y])
		}
		for _, x := range []int{0, 1, 2} {
			for _, y := range []int{0, 1, 2} {
				pn[x].Merge(pn[y])
				g[x].Merge(g[y])
			}
		}
		for i := range pn {
			if pn[i].View(Replica{}) != PNCounterView(sum) || g[i].View(Replica{}) != GCounterView(gsum) {
				return false
			}
		}
		return true
	}
	if err := quick.Check(prop, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}
