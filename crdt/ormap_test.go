package crdt

import (
	"reflect"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// CRDT-6, ORMap column "update from the UF".
func TestORMapApply(t *testing.T) {
	setup := ormapD(false, nil, nil, entries(entry("g", gcounterD(3)), entry("s", addD("x"))))
	tests := []struct {
		name  string
		delta *protocol.CrdtDelta
		want  ORMapView
	}{
		{"cleared, then added", ormapD(true, nil, nil, entries(entry("n", flagD(true)))),
			ORMapView{key("n"): FlagView(true)}},
		{"removed", ormapD(false, []string{"s", "missing"}, nil, nil),
			ORMapView{key("g"): GCounterView(3)}},
		{"updated present key", ormapD(false, nil, entries(entry("g", gcounterD(2))), nil),
			ORMapView{key("g"): GCounterView(5), key("s"): ORSetView(keys("x"))}},
		{"updated missing key is ignored", ormapD(false, nil, entries(entry("n", gcounterD(2))), nil),
			ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x"))}},
		{"updated with another type is ignored", ormapD(false, nil, entries(entry("g", addD("y"))), nil),
			ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x"))}},
		{"updated after removed is ignored", ormapD(false, []string{"g"}, entries(entry("g", gcounterD(1))), nil),
			ORMapView{key("s"): ORSetView(keys("x"))}},
		{"added new key", ormapD(false, nil, nil, entries(entry("n", lwwD("v", 0, 0)))),
			ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x")), key("n"): LWWRegisterView(key("v"))}},
		{"added present key of the same type applies", ormapD(false, nil, nil, entries(entry("s", addD("y")))),
			ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x", "y"))}},
		{"added present key of another type replaces", ormapD(false, nil, nil, entries(entry("g", addD("y")))),
			ORMapView{key("g"): ORSetView(keys("y")), key("s"): ORSetView(keys("x"))}},
		{"removed and added again starts fresh", ormapD(false, []string{"g"}, nil, entries(entry("g", gcounterD(1)))),
			ORMapView{key("g"): GCounterView(1), key("s"): ORSetView(keys("x"))}},
		{"updated twice in one delta", ormapD(false, nil, entries(entry("g", gcounterD(1)), entry("g", gcounterD(1))), nil),
			ORMapView{key("g"): GCounterView(5), key("s"): ORSetView(keys("x"))}},
		{"nested map", ormapD(false, nil, nil, entries(entry("m", ormapD(false, nil, nil, entries(entry("v", voteD(true))))))),
			ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x")),
				key("m"): ORMapView{key("v"): VoteView{SelfVote: true, VotesFor: 1, TotalVoters: 3}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := build(t, setup)
			r := at("a", 1)
			before := c.View(r)
			must(t, c.Apply(r, tt.delta))
			if got := c.View(r); !reflect.DeepEqual(fnOf(got), fnOf(tt.want)) {
				t.Fatalf("map = %v, want %v", got, tt.want)
			}
			fn, err := ApplyView(before, tt.delta)
			must(t, err)
			if tt.name == "nested map" {
				return // a function's fresh Vote counts only itself until told
			}
			if !reflect.DeepEqual(fnOf(fn), fnOf(tt.want)) {
				t.Fatalf("ApplyView = %v, want %v", fn, tt.want)
			}
		})
	}
}

func mapView(t *testing.T, c CRDT) ORMapView {
	t.Helper()
	return c.View(at("a", 0)).(ORMapView)
}

// Replicas of a map: keys are add-wins observed-remove, values merge.
func TestORMapMerge(t *testing.T) {
	ra, rb := at("a", 0), at("b", 0)
	create := func(k string, d *protocol.CrdtDelta) *protocol.CrdtDelta {
		return ormapD(false, nil, nil, entries(entry(k, d)))
	}
	update := func(k string, d *protocol.CrdtDelta) *protocol.CrdtDelta {
		return ormapD(false, nil, entries(entry(k, d)), nil)
	}
	remove := func(k string) *protocol.CrdtDelta { return ormapD(false, []string{k}, nil, nil) }
	tests := []struct {
		name string
		run  func(a, b CRDT)
		want ORMapView
	}{
		{"concurrent updates merge", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", gcounterD(1))))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, update("k", gcounterD(1))))
			must(t, b.Apply(rb, update("k", gcounterD(2))))
		}, ORMapView{key("k"): GCounterView(4)}},
		{"remove of an observed key", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", gcounterD(1))))
			mergeInto(t, b, a)
			must(t, b.Apply(rb, remove("k")))
		}, ORMapView{}},
		{"update wins over a concurrent remove, with its whole value", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", gcounterD(1))))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, update("k", gcounterD(1))))
			must(t, b.Apply(rb, remove("k")))
		}, ORMapView{key("k"): GCounterView(2)}},
		{"a re-created key does not get its old value back", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", gcounterD(5))))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, ormapD(false, []string{"k"}, nil, entries(entry("k", gcounterD(1))))))
		}, ORMapView{key("k"): GCounterView(1)}},
		{"a re-created set keeps adds made concurrently to either incarnation", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", addD("x"))))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, ormapD(false, []string{"k"}, nil, entries(entry("k", addD("y"))))))
			must(t, b.Apply(rb, update("k", addD("z"))))
		}, ORMapView{key("k"): ORSetView(keys("y", "z"))}},
		{"concurrent creations of different types: the higher kind wins", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", gcounterD(1))))
			must(t, b.Apply(rb, create("k", addD("x"))))
		}, ORMapView{key("k"): ORSetView(keys("x"))}},
		{"concurrent creations of one type merge", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", addD("x"))))
			must(t, b.Apply(rb, create("k", addD("y"))))
		}, ORMapView{key("k"): ORSetView(keys("x", "y"))}},
		{"clear removes only observed keys", func(a, b CRDT) {
			must(t, a.Apply(ra, create("k", flagD(true))))
			mergeInto(t, b, a)
			must(t, a.Apply(ra, create("j", flagD(false))))
			must(t, b.Apply(rb, ormapD(true, nil, nil, nil)))
		}, ORMapView{key("j"): FlagView(false)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newOf(t, KindORMap), newOf(t, KindORMap)
			tt.run(a, b)
			for _, m := range []CRDT{merged(t, a, b), merged(t, b, a)} {
				if got := mapView(t, m); !reflect.DeepEqual(fnOf(got), fnOf(tt.want)) {
					t.Fatalf("merged = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// CRDT-6, ORMap column "delta sent to the UF".
func TestORMapDiff(t *testing.T) {
	from := ORMapView{key("g"): GCounterView(10), key("s"): ORSetView(keys("x")), key("f"): FlagView(false)}
	tests := []struct {
		name string
		to   ORMapView
		want *protocol.CrdtDelta
	}{
		{"unchanged", ORMapView{key("g"): GCounterView(10), key("s"): ORSetView(keys("x")), key("f"): FlagView(false)}, nil},
		{"became empty", ORMapView{}, ormapD(true, nil, nil, nil)},
		{"removed", ORMapView{key("g"): GCounterView(10)}, ormapD(false, []string{"f", "s"}, nil, nil)},
		{"updated", ORMapView{key("g"): GCounterView(12), key("s"): ORSetView(keys("x", "y")), key("f"): FlagView(false)},
			ormapD(false, nil, entries(entry("g", gcounterD(2)), entry("s", addD("y"))), nil)},
		{"added", ORMapView{key("g"): GCounterView(10), key("s"): ORSetView(keys("x")), key("f"): FlagView(false), key("a"): PNCounterView(-1)},
			ormapD(false, nil, nil, entries(entry("a", pncounterD(-1))))},
		{"re-typed key is removed and added", ORMapView{key("g"): ORSetView(keys("z")), key("s"): ORSetView(keys("x")), key("f"): FlagView(false)},
			ormapD(false, []string{"g"}, nil, entries(entry("g", addD("z"))))},
		{"re-created key that shrank is removed and added", ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x")), key("f"): FlagView(false)},
			ormapD(false, []string{"g"}, nil, entries(entry("g", gcounterD(3))))},
		{"everything at once, sorted", ORMapView{key("g"): GCounterView(3), key("s"): ORSetView(keys("x", "y")), key("b"): FlagView(true)},
			ormapD(false, []string{"f", "g"}, entries(entry("s", addD("y"))), entries(entry("b", flagD(true)), entry("g", gcounterD(3))))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantDelta(t, mustDiff(t, from, tt.to), tt.want)
		})
	}
	wantDelta(t, mustDiff(t, ORMapView{}, ORMapView{}), nil)
}
