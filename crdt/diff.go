package crdt

import (
	"errors"
	"fmt"
	"slices"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// InitialDelta returns v as a delta from empty, as CrdtInit carries it: the
// counter's value, every element, the register's value, the flag, every map
// entry with its own initial delta, or all three Vote fields. It returns nil
// for a nil View.
func InitialDelta(v View) *protocol.CrdtDelta {
	switch v := v.(type) {
	case GCounterView:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: uint64(v)}}}
	case PNCounterView:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: int64(v)}}}
	case GSetView:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: anys(v)}}}
	case ORSetView:
		return orsetDelta(&protocol.ORSetDelta{Added: anys(v)})
	case LWWRegisterView:
		return lwwDelta(v)
	case FlagView:
		return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: bool(v)}}}
	case ORMapView:
		md := &protocol.ORMapDelta{}
		for _, k := range sortedKeys(v) {
			md.Added = append(md.Added, &protocol.ORMapEntryDelta{Key: k.Any(), Delta: InitialDelta(v[k])})
		}
		return ormapDelta(md)
	case VoteView:
		return voteDelta(v)
	}
	return nil
}

// Diff returns the delta that turns the value a user function holds (from)
// into to, following CRDT-6, or nil when they are equal:
//
//   - counters: the difference; a GCounter that decreased is ErrDecrease;
//   - GSet: the new elements; a lost element is ErrDecrease;
//   - ORSet: cleared if to is empty; else cleared plus every element if
//     removed plus added would outnumber to's elements; else removed and added;
//   - LWWRegister: the value if it changed (clock fields left at default);
//   - Flag: true when it became true; switching off is ErrDecrease;
//   - ORMap: cleared if to is empty; else removed (keys gone, keys whose value
//     changed type or shrank in a way no delta expresses, i.e. that were
//     removed and created again), updated (entry deltas), and added (new and
//     re-created keys, each with its initial delta);
//   - Vote: all three fields when any changed.
//
// from nil gives InitialDelta(to). Lists come sorted by Key.Compare.
func Diff(from, to View) (*protocol.CrdtDelta, error) {
	if to == nil {
		return nil, fmt.Errorf("%w: no value to diff to", ErrWrongKind)
	}
	if from == nil {
		return InitialDelta(to), nil
	}
	if from.Kind() != to.Kind() {
		return nil, fmt.Errorf("%w: diff from %s to %s", ErrWrongKind, from.Kind(), to.Kind())
	}
	switch t := to.(type) {
	case GCounterView:
		f := from.(GCounterView)
		switch {
		case t < f:
			return nil, fmt.Errorf("%w: gcounter from %d to %d", ErrDecrease, f, t)
		case t == f:
			return nil, nil
		}
		return InitialDelta(t - f), nil
	case PNCounterView:
		if f := from.(PNCounterView); t != f {
			return InitialDelta(t - f), nil
		}
		return nil, nil
	case GSetView:
		removed, added := diffSets(from.(GSetView), t)
		if len(removed) > 0 {
			return nil, fmt.Errorf("%w: gset lost %d elements", ErrDecrease, len(removed))
		}
		if len(added) == 0 {
			return nil, nil
		}
		return InitialDelta(GSetView(added)), nil
	case ORSetView:
		return diffORSet(from.(ORSetView), t), nil
	case LWWRegisterView:
		if from.(LWWRegisterView) == t {
			return nil, nil
		}
		return lwwDelta(t), nil
	case FlagView:
		f := from.(FlagView)
		switch {
		case bool(f) && !bool(t):
			return nil, fmt.Errorf("%w: flag switched off", ErrDecrease)
		case f == t:
			return nil, nil
		}
		return InitialDelta(t), nil
	case ORMapView:
		return diffMap(from.(ORMapView), t)
	case VoteView:
		if from.(VoteView) == t {
			return nil, nil
		}
		return voteDelta(t), nil
	}
	return nil, fmt.Errorf("%w: unknown view type %T", ErrWrongKind, to)
}

// diffSets walks two sorted sets and returns what from lacks and to has
// (added) and the other way round (removed).
func diffSets(from, to []Key) (removed, added []Key) {
	i, j := 0, 0
	for i < len(from) || j < len(to) {
		var c int
		switch {
		case j == len(to):
			c = -1
		case i == len(from):
			c = 1
		default:
			c = from[i].Compare(to[j])
		}
		switch {
		case c < 0:
			removed = append(removed, from[i])
			i++
		case c > 0:
			added = append(added, to[j])
			j++
		default:
			i++
			j++
		}
	}
	return removed, added
}

func diffORSet(from, to ORSetView) *protocol.CrdtDelta {
	removed, added := diffSets(from, to)
	switch {
	case len(removed) == 0 && len(added) == 0:
		return nil
	case len(to) == 0:
		return orsetDelta(&protocol.ORSetDelta{Cleared: true})
	case len(removed)+len(added) > len(to):
		return orsetDelta(&protocol.ORSetDelta{Cleared: true, Added: anys(to)})
	}
	return orsetDelta(&protocol.ORSetDelta{Removed: anys(removed), Added: anys(added)})
}

func diffMap(from, to ORMapView) (*protocol.CrdtDelta, error) {
	if len(to) == 0 {
		if len(from) == 0 {
			return nil, nil
		}
		return ormapDelta(&protocol.ORMapDelta{Cleared: true}), nil
	}
	md := &protocol.ORMapDelta{}
	// Keys are visited in order, so updated and added come sorted; removed
	// needs a sort only if re-created keys joined it.
	var removed []Key
	for _, k := range sortedKeys(from) {
		if _, ok := to[k]; !ok {
			removed = append(removed, k)
		}
	}
	recreated := 0
	for _, k := range sortedKeys(to) {
		tv := to[k]
		fv, ok := from[k]
		if ok && fv.Kind() == tv.Kind() {
			ed, err := Diff(fv, tv)
			if err == nil {
				if ed != nil {
					md.Updated = append(md.Updated, &protocol.ORMapEntryDelta{Key: k.Any(), Delta: ed})
				}
				continue
			}
			if !errors.Is(err, ErrDecrease) {
				return nil, fmt.Errorf("ormap %s: %w", keyLabel(k), err)
			}
		}
		if ok {
			removed = append(removed, k)
			recreated++
		}
		md.Added = append(md.Added, &protocol.ORMapEntryDelta{Key: k.Any(), Delta: InitialDelta(tv)})
	}
	if len(removed)+len(md.Updated)+len(md.Added) == 0 {
		return nil, nil
	}
	if recreated > 0 {
		slices.SortFunc(removed, compareKeys)
	}
	md.Removed = anys(removed)
	return ormapDelta(md), nil
}

func orsetDelta(sd *protocol.ORSetDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: sd}}
}

func ormapDelta(md *protocol.ORMapDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: md}}
}

func lwwDelta(v LWWRegisterView) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: Key(v).Any()}}}
}

func voteDelta(v VoteView) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{
		SelfVote: v.SelfVote, VotesFor: v.VotesFor, TotalVoters: v.TotalVoters,
	}}}
}
