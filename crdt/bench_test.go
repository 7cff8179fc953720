package crdt

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

func bigORSet(b *testing.B, node string, n int) CRDT {
	b.Helper()
	added := make([]*anypb.Any, n)
	for i := range added {
		added[i] = str(fmt.Sprintf("element-%05d", i))
	}
	c, err := FromDelta(Replica{Node: node}, orsetDelta(&protocol.ORSetDelta{Added: added}))
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// Gossip between replicas that mostly agree: the common case of replication.
func BenchmarkORSetMergeEqual(b *testing.B) {
	x := bigORSet(b, "a", 1000)
	y := x.Clone()
	b.ReportAllocs()
	for b.Loop() {
		if err := x.Merge(y); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkORSetApplyAndDiff(b *testing.B) {
	c := bigORSet(b, "a", 1000)
	r := Replica{Node: "a"}
	last := c.View(r)
	add, remove := addD("new"), removeD("new")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		d := add
		if i%2 == 1 {
			d = remove
		}
		if err := c.Apply(r, d); err != nil {
			b.Fatal(err)
		}
		cur := c.View(r)
		if _, err := Diff(last, cur); err != nil {
			b.Fatal(err)
		}
		last = cur
	}
}

// One counter in a map of 100 counters changes, as in a per-user tally.
func BenchmarkORMapUpdateEntry(b *testing.B) {
	md := &protocol.ORMapDelta{}
	for i := range 100 {
		md.Added = append(md.Added, entry(fmt.Sprintf("k%03d", i), gcounterD(1)))
	}
	c, err := FromDelta(Replica{Node: "a"}, ormapDelta(md))
	if err != nil {
		b.Fatal(err)
	}
	r := Replica{Node: "a"}
	d := ormapD(false, nil, entries(entry("k042", gcounterD(1))), nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Apply(r, d); err != nil {
			b.Fatal(err)
		}
	}
}
