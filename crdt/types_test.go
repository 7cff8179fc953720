package crdt

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
)

func TestKinds(t *testing.T) {
	for _, k := range allKinds {
		c, err := New(k)
		if err != nil || c.Kind() != k {
			t.Fatalf("New(%v) = %v, %v", k, c, err)
		}
		if d := InitialDelta(emptyView(k)); KindOf(d) != k {
			t.Fatalf("KindOf(initial delta of %v) = %v", k, KindOf(d))
		}
	}
	for _, k := range []Kind{0, 9, -1} {
		if _, err := New(k); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("New(%d) error = %v", k, err)
		}
	}
	if KindOf(nil) != 0 || KindOf(&protocol.CrdtDelta{}) != 0 {
		t.Fatal("empty deltas have a kind")
	}
	if KindORMap.String() != "ORMap" || Kind(12).String() != "Kind(12)" {
		t.Fatal("Kind.String")
	}
}

// CRDT-6: these updates must be refused, leaving the CRDT as it was.
func TestApplyErrors(t *testing.T) {
	tests := []struct {
		name  string
		setup []*protocol.CrdtDelta
		delta *protocol.CrdtDelta
		want  error
	}{
		{"empty delta", []*protocol.CrdtDelta{gcounterD(1)}, &protocol.CrdtDelta{}, ErrEmptyDelta},
		{"nil delta", []*protocol.CrdtDelta{addD("x")}, nil, ErrEmptyDelta},
		{"wrong type", []*protocol.CrdtDelta{addD("x")}, gcounterD(1), ErrWrongKind},
		{"gset delta on orset", []*protocol.CrdtDelta{addD("x")}, gsetD("y"), ErrWrongKind},
		{"gcounter increment 2^63", []*protocol.CrdtDelta{gcounterD(1)}, gcounterD(1 << 63), ErrInvalidDelta},
		{"gcounter max increment", []*protocol.CrdtDelta{gcounterD(1)}, gcounterD(math.MaxUint64), ErrInvalidDelta},
		{"gcounter node count overflows", []*protocol.CrdtDelta{gcounterD(math.MaxInt64), gcounterD(math.MaxInt64)}, gcounterD(2), ErrInvalidDelta},
		{"pncounter overflows", []*protocol.CrdtDelta{pncounterD(math.MaxInt64), pncounterD(math.MaxInt64)}, pncounterD(2), ErrInvalidDelta},
		{"flag switched off", []*protocol.CrdtDelta{flagD(true)}, flagD(false), ErrInvalidDelta},
		{"lwwregister without value", []*protocol.CrdtDelta{lwwD("x", 0, 0)},
			&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{}}}, ErrInvalidDelta},
		{"ormap entry without key", []*protocol.CrdtDelta{ormapD(false, nil, nil, nil)},
			ormapD(false, nil, nil, entries(&protocol.ORMapEntryDelta{Delta: gcounterD(1)})), ErrInvalidDelta},
		{"ormap entry without delta", []*protocol.CrdtDelta{ormapD(false, nil, nil, nil)},
			ormapD(false, nil, nil, entries(entry("k", nil))), ErrEmptyDelta},
		{"ormap updated entry with empty delta", []*protocol.CrdtDelta{ormapD(false, nil, nil, entries(entry("k", gcounterD(1))))},
			ormapD(false, nil, entries(entry("k", &protocol.CrdtDelta{})), nil), ErrEmptyDelta},
		{"ormap nested error undoes the whole delta",
			[]*protocol.CrdtDelta{ormapD(false, nil, nil, entries(entry("f", flagD(true)), entry("g", gcounterD(1))))},
			ormapD(false, []string{"g"}, entries(entry("g", gcounterD(5))), entries(entry("n", addD("x")), entry("f", flagD(false)))),
			ErrInvalidDelta},
		{"ormap nested increment too big", []*protocol.CrdtDelta{ormapD(false, nil, nil, nil)},
			ormapD(false, nil, nil, entries(entry("g", gcounterD(1<<63)))), ErrInvalidDelta},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := build(t, tt.setup...)
			before := mustMarshal(t, c)
			if err := c.Apply(at("a", 1), tt.delta); !errors.Is(err, tt.want) {
				t.Fatalf("Apply = %v, want %v", err, tt.want)
			}
			if !bytes.Equal(before, mustMarshal(t, c)) {
				t.Fatal("a refused update changed the state")
			}
			if _, err := ApplyView(c.View(at("a", 1)), tt.delta); tt.name != "gcounter node count overflows" &&
				tt.name != "pncounter overflows" && !errors.Is(err, tt.want) {
				t.Fatalf("ApplyView = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := FromDelta(at("a", 1), &protocol.CrdtDelta{}); !errors.Is(err, ErrEmptyDelta) {
		t.Fatalf("FromDelta(empty) = %v", err)
	}
	if _, err := ApplyView(nil, nil); !errors.Is(err, ErrEmptyDelta) {
		t.Fatalf("ApplyView(nil, nil) = %v", err)
	}
	g, s := build(t, gcounterD(1)), build(t, addD("x"))
	if err := g.Merge(s); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("Merge(GCounter, ORSet) = %v", err)
	}
	for _, k := range allKinds {
		c, _ := New(k)
		if err := c.Merge(nil); !errors.Is(err, ErrWrongKind) {
			t.Fatalf("%v.Merge(nil) = %v", k, err)
		}
	}
}

func TestCounters(t *testing.T) {
	a := build(t, gcounterD(3), gcounterD(4))
	b, _ := New(KindGCounter)
	must(t, b.Apply(at("b", 0), gcounterD(5)))
	must(t, b.Apply(at("a", 0), gcounterD(2))) // an older view of node a's count
	mergeInto(t, a, b)
	if v := a.View(Replica{}); v != GCounterView(12) {
		t.Fatalf("merged gcounter = %v, want 7 (a) + 5 (b)", v)
	}
	wantDelta(t, mustDiff(t, GCounterView(5), GCounterView(12)), gcounterD(7))
	wantDelta(t, mustDiff(t, GCounterView(5), GCounterView(5)), nil)
	if _, err := Diff(GCounterView(6), GCounterView(5)); !errors.Is(err, ErrDecrease) {
		t.Fatalf("gcounter decrease: %v", err)
	}

	p := build(t, pncounterD(10), pncounterD(-3), pncounterD(math.MinInt64))
	if v := p.View(Replica{}); v != PNCounterView(7+math.MinInt64) {
		t.Fatalf("pncounter = %v", v)
	}
	q, _ := New(KindPNCounter)
	must(t, q.Apply(at("b", 0), pncounterD(-5)))
	mergeInto(t, q, build(t, pncounterD(2)))
	if v := q.View(Replica{}); v != PNCounterView(-3) {
		t.Fatalf("merged pncounter = %v", v)
	}
	wantDelta(t, mustDiff(t, PNCounterView(4), PNCounterView(-3)), pncounterD(-7))
	wantDelta(t, mustDiff(t, PNCounterView(math.MaxInt64), PNCounterView(math.MinInt64)), pncounterD(1)) // wraps like the function
}

func mustDiff(t *testing.T, from, to View) *protocol.CrdtDelta {
	t.Helper()
	d, err := Diff(from, to)
	if err != nil {
		t.Fatalf("Diff(%v, %v): %v", from, to, err)
	}
	return d
}

func TestGSet(t *testing.T) {
	a := build(t, gsetD("x", "y"), gsetD("y"))
	b := build(t, gsetD("z"))
	mergeInto(t, a, b)
	if v := a.View(Replica{}); !reflect.DeepEqual(v, GSetView(keys("x", "y", "z"))) {
		t.Fatalf("gset = %v", v)
	}
	wantDelta(t, mustDiff(t, GSetView(keys("y")), GSetView(keys("x", "y", "z"))), gsetD("x", "z"))
	if _, err := Diff(GSetView(keys("x", "y")), GSetView(keys("y"))); !errors.Is(err, ErrDecrease) {
		t.Fatalf("gset lost element: %v", err)
	}
}

func orsetView(t *testing.T, c CRDT) []string {
	t.Helper()
	var out []string
	for _, k := range c.View(Replica{}).(ORSetView) {
		out = append(out, k.Value)
	}
	return out
}

// Add wins over a concurrent remove; a remove wins over what it observed.
func TestORSetAddWins(t *testing.T) {
	ra, rb := at("a", 0), at("b", 0)
	tests := []struct {
		name string
		run  func(a, b CRDT)
		want []string
	}{
		{"remove of an observed element", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x", "y")))
			mergeInto(t, b, a)
			must(t, b.Apply(rb, removeD("x")))
		}, []string{"y"}},
		{"concurrent re-add wins over remove", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x")))
			mergeInto(t, b, a)
			must(t, b.Apply(rb, removeD("x")))
			must(t, a.Apply(ra, addD("x")))
		}, []string{"x"}},
		{"concurrent add on both, one removes its own", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x")))
			must(t, b.Apply(rb, addD("x")))
			must(t, b.Apply(rb, removeD("x")))
		}, []string{"x"}},
		{"clear removes only what was seen", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x")))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, addD("y")))
			must(t, b.Apply(rb, orsetD(true, nil, []string{"z"})))
		}, []string{"y", "z"}},
		{"remove of an unseen element does nothing", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x")))
			must(t, b.Apply(rb, removeD("x")))
		}, []string{"x"}},
		{"removed then added in one update stays", func(a, b CRDT) {
			must(t, a.Apply(ra, addD("x")))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, orsetD(false, []string{"x"}, []string{"x"})))
			must(t, b.Apply(rb, removeD("x")))
		}, []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := New(KindORSet)
			b, _ := New(KindORSet)
			tt.run(a, b)
			ab, ba := merged(t, a, b), merged(t, b, a)
			if got := orsetView(t, ab); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("merged = %q, want %q", got, tt.want)
			}
			if got := orsetView(t, ba); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("merged the other way = %q, want %q", got, tt.want)
			}
		})
	}
}

// CRDT-6, ORSet column "delta sent to the UF".
func TestORSetDiff(t *testing.T) {
	tests := []struct {
		name     string
		from, to []string
		want     *protocol.CrdtDelta
	}{
		{"unchanged", []string{"a", "b"}, []string{"a", "b"}, nil},
		{"became empty", []string{"a", "b"}, nil, orsetD(true, nil, nil)},
		{"empty stays empty", nil, nil, nil},
		{"added", []string{"a"}, []string{"a", "b", "c"}, addD("b", "c")},
		{"removed", []string{"a", "b", "c"}, []string{"a", "b"}, removeD("c")},
		{"removed more than remain", []string{"a", "b", "c"}, []string{"b"}, orsetD(true, nil, []string{"b"})},
		{"removed and added, fewer than the new size", []string{"a", "b", "c"}, []string{"b", "c", "d"}, orsetD(false, []string{"a"}, []string{"d"})},
		{"equal to the new size", []string{"a", "b"}, []string{"b", "c"}, orsetD(false, []string{"a"}, []string{"c"})},
		{"more than the new size", []string{"a", "b", "c"}, []string{"d"}, orsetD(true, nil, []string{"d"})},
		{"from empty", nil, []string{"a", "b"}, addD("a", "b")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantDelta(t, mustDiff(t, ORSetView(keys(tt.from...)), ORSetView(keys(tt.to...))), tt.want)
		})
	}
}

func lwwState(t *testing.T, c CRDT) (string, int64, string) {
	t.Helper()
	g := c.(*LWWRegister)
	return g.value.Value, g.ts, g.node
}

// CRDT-6 and REF-2: the timestamp each clock gives.
func TestLWWRegisterClocks(t *testing.T) {
	tests := []struct {
		name   string
		cur    int64 // current timestamp; 0 with no prior write
		now    int64
		clock  protocol.CrdtClock
		custom int64
		want   int64
	}{
		{"default, first write", 0, 1000, protocol.CrdtClock_DEFAULT, 0, 1000},
		{"default, clock ahead", 500, 1000, protocol.CrdtClock_DEFAULT, 0, 1000},
		{"default, clock behind", 2000, 1000, protocol.CrdtClock_DEFAULT, 0, 2001},
		{"default, clock equal", 1000, 1000, protocol.CrdtClock_DEFAULT, 0, 1001},
		{"unknown clock is default", 2000, 1000, protocol.CrdtClock(42), 0, 2001},
		{"reverse, first write", 0, 1000, protocol.CrdtClock_REVERSE, 0, -1000},
		{"reverse, later now", -1000, 1500, protocol.CrdtClock_REVERSE, 0, -1500},
		{"reverse, earlier now", -1000, 500, protocol.CrdtClock_REVERSE, 0, -1001},
		{"custom", 50, 1000, protocol.CrdtClock_CUSTOM, 70, 70},
		{"custom lower than current", 50, 1000, protocol.CrdtClock_CUSTOM, 7, 7},
		{"auto increment, greater", 50, 1000, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 70, 70},
		{"auto increment, equal", 50, 1000, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 50, 51},
		{"auto increment, lower (REF-2)", 50, 1000, protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 10, 51},
		{"default saturates", math.MaxInt64, 1000, protocol.CrdtClock_DEFAULT, 0, math.MaxInt64},
		{"reverse saturates", math.MinInt64, 1000, protocol.CrdtClock_REVERSE, 0, math.MinInt64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := &LWWRegister{}
			if tt.cur != 0 {
				g = &LWWRegister{set: true, value: key("old"), ts: tt.cur, node: "b"}
			}
			must(t, g.Apply(at("a", tt.now), lwwD("new", tt.clock, tt.custom)))
			v, ts, node := lwwState(t, g)
			if v != "new" || ts != tt.want || node != "a" {
				t.Fatalf("register = %q at %d by %q, want \"new\" at %d by \"a\"", v, ts, node, tt.want)
			}
		})
	}
}

func TestLWWRegisterMerge(t *testing.T) {
	write := func(node string, now int64, value string) CRDT {
		c, _ := New(KindLWWRegister)
		must(t, c.Apply(at(node, now), lwwD(value, protocol.CrdtClock_DEFAULT, 0)))
		return c
	}
	tests := []struct {
		name string
		x, y CRDT
		want string
	}{
		{"later wins", write("a", 20, "late"), write("b", 10, "early"), "late"},
		{"tie broken by node id", write("a", 10, "from a"), write("b", 10, "from b"), "from b"},
		{"tie on one node broken by value", write("a", 10, "v1"), write("a", 10, "v2"), "v2"},
		{"any write beats none", write("a", 10, "x"), &LWWRegister{}, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []CRDT{merged(t, tt.x, tt.y), merged(t, tt.y, tt.x)} {
				if v, _, _ := lwwState(t, c); v != tt.want {
					t.Fatalf("merged value %q, want %q", v, tt.want)
				}
			}
		})
	}
	// A reverse clock keeps the first write: the later one has a lower timestamp.
	first, second := newOf(t, KindLWWRegister), newOf(t, KindLWWRegister)
	must(t, first.Apply(at("a", 100), lwwD("first", protocol.CrdtClock_REVERSE, 0)))
	must(t, second.Apply(at("b", 200), lwwD("second", protocol.CrdtClock_REVERSE, 0)))
	if v, _, _ := lwwState(t, merged(t, second, first)); v != "first" {
		t.Fatalf("reverse clock: %q wins", v)
	}
	wantDelta(t, mustDiff(t, LWWRegisterView(key("x")), LWWRegisterView(key("y"))), lwwD("y", 0, 0))
	wantDelta(t, mustDiff(t, LWWRegisterView(key("x")), LWWRegisterView(key("x"))), nil)
}

// newOf is New for kinds known to exist.
func newOf(t *testing.T, k Kind) CRDT {
	t.Helper()
	c, err := New(k)
	must(t, err)
	return c
}

func TestFlag(t *testing.T) {
	f := build(t, flagD(false))
	if f.View(Replica{}) != FlagView(false) {
		t.Fatal("flag created with false is on")
	}
	must(t, f.Apply(at("a", 0), flagD(false)))
	on := build(t, flagD(true))
	mergeInto(t, f, on)
	if f.View(Replica{}) != FlagView(true) {
		t.Fatal("merge with an enabled flag left it off")
	}
	mergeInto(t, on, newOf(t, KindFlag))
	if on.View(Replica{}) != FlagView(true) {
		t.Fatal("merge switched a flag off")
	}
	wantDelta(t, mustDiff(t, FlagView(false), FlagView(true)), flagD(true))
	wantDelta(t, mustDiff(t, FlagView(true), FlagView(true)), nil)
	if _, err := Diff(FlagView(true), FlagView(false)); !errors.Is(err, ErrDecrease) {
		t.Fatalf("flag switched off: %v", err)
	}
}

// Vote: per-node counters, odd = yes, tallied over the members.
func TestVote(t *testing.T) {
	votes := map[string]bool{"a": true, "b": false, "c": true, "d": true}
	v := newOf(t, KindVote)
	for n, yes := range votes {
		must(t, v.Apply(at(n, 0), voteD(yes)))
	}
	tests := []struct {
		name string
		r    Replica
		want VoteView
	}{
		{"member voting yes", Replica{Node: "a", Members: []string{"a", "b", "c"}}, VoteView{true, 2, 3}},
		{"member voting no", Replica{Node: "b", Members: []string{"a", "b", "c"}}, VoteView{false, 2, 3}},
		{"down nodes do not count", Replica{Node: "a", Members: []string{"a", "b"}}, VoteView{true, 1, 2}},
		{"no members: just self", Replica{Node: "c"}, VoteView{true, 1, 1}},
		{"member that never voted", Replica{Node: "e", Members: []string{"a", "e"}}, VoteView{false, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := v.View(tt.r); got != tt.want {
				t.Fatalf("view %+v, want %+v", got, tt.want)
			}
		})
	}
	// The counter moves only when the vote changes.
	vv := v.(*Vote)
	must(t, v.Apply(at("a", 0), voteD(true)))
	if vv.votes["a"] != 1 {
		t.Fatalf("repeating a vote bumped the counter to %d", vv.votes["a"])
	}
	must(t, v.Apply(at("a", 0), voteD(false)))
	must(t, v.Apply(at("a", 0), voteD(true)))
	if vv.votes["a"] != 3 {
		t.Fatalf("counter %d after no and yes again, want 3", vv.votes["a"])
	}
	// Merge keeps each node's latest vote: the higher counter.
	stale := newOf(t, KindVote)
	must(t, stale.Apply(at("a", 0), voteD(true)))
	mergeInto(t, stale, v)
	must(t, stale.Apply(at("b", 0), voteD(true)))
	mergeInto(t, v, stale)
	if got := v.View(at("a", 0)); got != (VoteView{true, 3, 3}) {
		t.Fatalf("after merge %+v", got)
	}
	// Every field goes to the function whenever any changed.
	full := &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 3}}}
	wantDelta(t, mustDiff(t, VoteView{true, 1, 3}, VoteView{true, 2, 3}), full)
	wantDelta(t, mustDiff(t, VoteView{true, 2, 3}, VoteView{true, 2, 3}), nil)
	// The function's own vote moves votes_for; the other fields it sends are ignored.
	fn, err := ApplyView(VoteView{false, 1, 3}, &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: true, VotesFor: 9, TotalVoters: 9}}})
	if err != nil || fn != (VoteView{true, 2, 3}) {
		t.Fatalf("ApplyView(vote) = %+v, %v", fn, err)
	}
}

func TestInitialDelta(t *testing.T) {
	tests := []struct {
		view View
		want *protocol.CrdtDelta
	}{
		{nil, nil},
		{GCounterView(7), gcounterD(7)},
		{PNCounterView(-7), pncounterD(-7)},
		{GSetView(keys("a", "b")), gsetD("a", "b")},
		{ORSetView(keys("a", "b")), addD("a", "b")},
		{ORSetView(nil), orsetD(false, nil, nil)},
		{LWWRegisterView(key("v")), lwwD("v", 0, 0)},
		{FlagView(true), flagD(true)},
		{VoteView{true, 2, 3}, &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: true, VotesFor: 2, TotalVoters: 3}}}},
		{ORMapView{key("k2"): ORSetView(keys("x")), key("k1"): GCounterView(3)},
			ormapD(false, nil, nil, entries(entry("k1", gcounterD(3)), entry("k2", addD("x"))))},
	}
	for _, tt := range tests {
		wantDelta(t, InitialDelta(tt.view), tt.want)
		if tt.view != nil {
			wantDelta(t, mustDiff(t, nil, tt.view), tt.want)
		}
	}
	if _, err := Diff(GCounterView(1), nil); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("Diff to nil: %v", err)
	}
	if _, err := Diff(GCounterView(1), FlagView(true)); !errors.Is(err, ErrWrongKind) {
		t.Fatalf("Diff across kinds: %v", err)
	}
}
