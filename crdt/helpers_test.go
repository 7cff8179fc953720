package crdt

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// Builders for the table tests: elements and keys are strings under one
// type URL; the payload bytes are opaque to this package.

func str(s string) *anypb.Any { return &anypb.Any{TypeUrl: "p.cloudstate.io/string", Value: []byte(s)} }

func strs(ss ...string) []*anypb.Any {
	if len(ss) == 0 {
		return nil
	}
	out := make([]*anypb.Any, len(ss))
	for i, s := range ss {
		out[i] = str(s)
	}
	return out
}

func key(s string) Key { return KeyOf(str(s)) }

func keys(ss ...string) []Key {
	out := make([]Key, len(ss))
	for i, s := range ss {
		out[i] = key(s)
	}
	return out
}

func gcounterD(inc uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: inc}}}
}

func pncounterD(change int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: change}}}
}

func gsetD(added ...string) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: strs(added...)}}}
}

func orsetD(cleared bool, removed, added []string) *protocol.CrdtDelta {
	return orsetDelta(&protocol.ORSetDelta{Cleared: cleared, Removed: strs(removed...), Added: strs(added...)})
}

func addD(added ...string) *protocol.CrdtDelta      { return orsetD(false, nil, added) }
func removeD(removed ...string) *protocol.CrdtDelta { return orsetD(false, removed, nil) }

func lwwD(value string, clock protocol.CrdtClock, custom int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
		Value: str(value), Clock: clock, CustomClockValue: custom,
	}}}
}

func flagD(v bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: v}}}
}

func voteD(self bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self}}}
}

func entry(k string, d *protocol.CrdtDelta) *protocol.ORMapEntryDelta {
	return &protocol.ORMapEntryDelta{Key: str(k), Delta: d}
}

// ormapD builds an ORMap delta; cleared, removed keys, updated and added
// entries as in the protocol.
func ormapD(cleared bool, removed []string, updated, added []*protocol.ORMapEntryDelta) *protocol.CrdtDelta {
	return ormapDelta(&protocol.ORMapDelta{Cleared: cleared, Removed: strs(removed...), Updated: updated, Added: added})
}

func entries(es ...*protocol.ORMapEntryDelta) []*protocol.ORMapEntryDelta { return es }

// at is a replica on node n with a fixed clock and members a, b, c.
func at(n string, now int64) Replica {
	return Replica{Node: n, Now: func() int64 { return now }, Members: []string{"a", "b", "c"}}
}

// build creates a CRDT on node "a" from a sequence of updates.
func build(t *testing.T, ds ...*protocol.CrdtDelta) CRDT {
	t.Helper()
	c, err := FromDelta(at("a", 1), ds[0])
	if err != nil {
		t.Fatalf("FromDelta(%v): %v", ds[0], err)
	}
	for _, d := range ds[1:] {
		must(t, c.Apply(at("a", 1), d))
	}
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mergeInto(t *testing.T, dst, src CRDT) {
	t.Helper()
	must(t, dst.Merge(src))
}

func wantDelta(t *testing.T, got, want *protocol.CrdtDelta) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("delta\n got  %v\n want %v", got, want)
	}
}
