package crdt

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// fnValue is a user function's value, kept the way a support library keeps
// it and updated by the deltas the proxy sends, per PROTOCOL §3.4. It is
// written independently of ApplyView so the two check each other.
type fnValue struct {
	kind  Kind
	num   uint64 // both counters, as two's complement for PNCounter
	set   map[[2]string]bool
	reg   [2]string
	flag  bool
	m     map[[2]string]*fnValue
	self  bool
	vfor  int32
	total int32
}

func anyKey(typeURL string, value []byte) [2]string { return [2]string{typeURL, string(value)} }

// apply applies a proxy→function delta; f is nil when the function has no
// value yet.
func (f *fnValue) apply(d *protocol.CrdtDelta) (*fnValue, error) {
	k := KindOf(d)
	if f == nil {
		f = &fnValue{kind: k, set: map[[2]string]bool{}, m: map[[2]string]*fnValue{}}
	} else {
		if f.kind != k {
			return nil, fmt.Errorf("delta for %v applied to %v", k, f.kind)
		}
		f = f.copy()
	}
	switch x := d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		f.num += x.Gcounter.GetIncrement()
	case *protocol.CrdtDelta_Pncounter:
		f.num += uint64(x.Pncounter.GetChange())
	case *protocol.CrdtDelta_Gset:
		for _, a := range x.Gset.GetAdded() {
			f.set[anyKey(a.GetTypeUrl(), a.GetValue())] = true
		}
	case *protocol.CrdtDelta_Orset:
		if x.Orset.GetCleared() {
			f.set = map[[2]string]bool{}
		}
		for _, a := range x.Orset.GetRemoved() {
			delete(f.set, anyKey(a.GetTypeUrl(), a.GetValue()))
		}
		for _, a := range x.Orset.GetAdded() {
			f.set[anyKey(a.GetTypeUrl(), a.GetValue())] = true
		}
	case *protocol.CrdtDelta_Lwwregister:
		v := x.Lwwregister.GetValue()
		f.reg = anyKey(v.GetTypeUrl(), v.GetValue())
	case *protocol.CrdtDelta_Flag:
		f.flag = x.Flag.GetValue()
	case *protocol.CrdtDelta_Ormap:
		md := x.Ormap
		if md.GetCleared() {
			f.m = map[[2]string]*fnValue{}
		}
		for _, a := range md.GetRemoved() {
			delete(f.m, anyKey(a.GetTypeUrl(), a.GetValue()))
		}
		for _, e := range md.GetUpdated() {
			key := anyKey(e.GetKey().GetTypeUrl(), e.GetKey().GetValue())
			cur, ok := f.m[key]
			if !ok {
				return nil, fmt.Errorf("update of missing key %q", key)
			}
			nv, err := cur.apply(e.GetDelta())
			if err != nil {
				return nil, err
			}
			f.m[key] = nv
		}
		for _, e := range md.GetAdded() {
			key := anyKey(e.GetKey().GetTypeUrl(), e.GetKey().GetValue())
			if _, ok := f.m[key]; ok {
				return nil, fmt.Errorf("add of present key %q", key)
			}
			nv, err := (*fnValue)(nil).apply(e.GetDelta())
			if err != nil {
				return nil, err
			}
			f.m[key] = nv
		}
	case *protocol.CrdtDelta_Vote:
		f.self, f.vfor, f.total = x.Vote.GetSelfVote(), x.Vote.GetVotesFor(), x.Vote.GetTotalVoters()
	default:
		return nil, errors.New("empty delta")
	}
	return f, nil
}

func (f *fnValue) copy() *fnValue {
	c := *f
	c.set = maps.Clone(f.set)
	c.m = maps.Clone(f.m)
	return &c
}

// fnOf is the value a function holds when it holds exactly v.
func fnOf(v View) *fnValue {
	f := &fnValue{kind: v.Kind(), set: map[[2]string]bool{}, m: map[[2]string]*fnValue{}}
	switch v := v.(type) {
	case GCounterView:
		f.num = uint64(v)
	case PNCounterView:
		f.num = uint64(v)
	case GSetView:
		for _, k := range v {
			f.set[anyKey(k.TypeURL, []byte(k.Value))] = true
		}
	case ORSetView:
		for _, k := range v {
			f.set[anyKey(k.TypeURL, []byte(k.Value))] = true
		}
	case LWWRegisterView:
		f.reg = anyKey(v.TypeURL, []byte(v.Value))
	case FlagView:
		f.flag = bool(v)
	case ORMapView:
		for k, ev := range v {
			f.m[anyKey(k.TypeURL, []byte(k.Value))] = fnOf(ev)
		}
	case VoteView:
		f.self, f.vfor, f.total = v.SelfVote, v.VotesFor, v.TotalVoters
	}
	return f
}

// The delta Diff computes from the value the function holds (a) to the
// current value (b), applied by the function, gives exactly b; and the
// initial delta applied to nothing gives the value.
func TestDeltaRoundTrip(t *testing.T) {
	rng := newRand(t)
	histories, pairs := 30, 60
	if testing.Short() {
		histories = 6
	}
	for _, k := range allKinds {
		t.Run(k.String(), func(t *testing.T) {
			for range histories {
				w := newWorld(t, rng, k)
				w.run(50)
				for range pairs {
					a := w.snap()
					var b CRDT
					if rng.IntN(2) == 0 {
						b = merged(t, a, w.snap()) // a later state: grow-only types only grow
					} else if k != KindGCounter && k != KindGSet && k != KindFlag {
						b = w.snap() // any state
					} else {
						b = merged(t, w.snap(), a)
					}
					r := w.replica(rng.IntN(len(nodes)))
					r.Members = nodes[:1+rng.IntN(len(nodes))]
					checkDiff(t, a.View(r), b.View(r))
				}
			}
		})
	}
}

func checkDiff(t *testing.T, va, vb View) {
	t.Helper()
	d, err := Diff(va, vb)
	if err != nil {
		t.Fatalf("Diff(%v, %v): %v", va, vb, err)
	}
	if (d == nil) != reflect.DeepEqual(fnOf(va), fnOf(vb)) {
		t.Fatalf("Diff(%v, %v) = %v: nil exactly when equal", va, vb, d)
	}
	if d == nil {
		return
	}
	got, err := fnOf(va).apply(d)
	if err != nil {
		t.Fatalf("function cannot apply Diff(%v, %v) = %v: %v", va, vb, d, err)
	}
	if want := fnOf(vb); !reflect.DeepEqual(got, want) {
		t.Fatalf("Diff(%v, %v) = %v\nfunction ends with %+v\nwant %+v", va, vb, d, got, want)
	}
	init, err := (*fnValue)(nil).apply(InitialDelta(vb))
	if err != nil {
		t.Fatalf("function cannot apply InitialDelta(%v): %v", vb, err)
	}
	if want := fnOf(vb); !reflect.DeepEqual(init, want) {
		t.Fatalf("InitialDelta(%v) gives %+v", vb, init)
	}
}

// What the proxy assumes the function holds after the function's own update
// (ApplyView) is what the CRDT shows after Apply, so no delta is sent back.
func TestApplyViewMatchesApply(t *testing.T) {
	rng := newRand(t)
	for _, k := range allKinds {
		t.Run(k.String(), func(t *testing.T) {
			for range 20 {
				w := newWorld(t, rng, k)
				w.run(40)
				for range 40 {
					c := w.snap()
					r := w.replica(rng.IntN(len(nodes)))
					r.Members = []string{r.Node} // a fresh Vote counts one voter on both sides
					before := c.View(r)
					d := randDelta(rng, k, 0)
					applyErr := c.Apply(r, d)
					after, viewErr := ApplyView(before, d)
					if applyErr != nil {
						continue // state-dependent limits are Apply's alone
					}
					if viewErr != nil {
						t.Fatalf("Apply accepted %v, ApplyView did not: %v", d, viewErr)
					}
					if got := c.View(r); !reflect.DeepEqual(fnOf(got), fnOf(after)) {
						t.Fatalf("after %v: CRDT view %v, ApplyView %v", d, got, after)
					}
					if dd, err := Diff(after, c.View(r)); err != nil || dd != nil {
						t.Fatalf("Diff after own update = %v, %v; want nothing", dd, err)
					}
				}
			}
		})
	}
}
