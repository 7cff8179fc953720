package crdt

import (
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// View is a CRDT's value as a user function holds it, without replication
// metadata. Views are immutable: nothing in this package changes a View
// after building it, and callers must not either. A nil View means the CRDT
// does not exist (yet). The proxy keeps the View it last told the function
// about, advances it with the function's own updates (ApplyView) and sends
// Diff(last, current) when the CRDT changed.
type View interface {
	// Kind returns the CRDT type the value belongs to.
	Kind() Kind
	view()
}

// GCounterView is a GCounter's value.
type GCounterView uint64

// PNCounterView is a PNCounter's value.
type PNCounterView int64

// GSetView is a GSet's elements, sorted by Key.Compare, without duplicates.
type GSetView []Key

// ORSetView is an ORSet's elements, sorted by Key.Compare, without duplicates.
type ORSetView []Key

// LWWRegisterView is an LWWRegister's value.
type LWWRegisterView Key

// FlagView is a Flag's value.
type FlagView bool

// ORMapView is an ORMap's entries; no value is nil.
type ORMapView map[Key]View

// VoteView is a Vote as one node sees it: its own vote, and how many of the
// cluster's members there are and vote yes.
type VoteView struct {
	SelfVote    bool
	VotesFor    int32
	TotalVoters int32
}

// Kind returns KindGCounter.
func (GCounterView) Kind() Kind { return KindGCounter }

// Kind returns KindPNCounter.
func (PNCounterView) Kind() Kind { return KindPNCounter }

// Kind returns KindGSet.
func (GSetView) Kind() Kind { return KindGSet }

// Kind returns KindORSet.
func (ORSetView) Kind() Kind { return KindORSet }

// Kind returns KindLWWRegister.
func (LWWRegisterView) Kind() Kind { return KindLWWRegister }

// Kind returns KindFlag.
func (FlagView) Kind() Kind { return KindFlag }

// Kind returns KindORMap.
func (ORMapView) Kind() Kind { return KindORMap }

// Kind returns KindVote.
func (VoteView) Kind() Kind { return KindVote }

func (GCounterView) view()    {}
func (PNCounterView) view()   {}
func (GSetView) view()        {}
func (ORSetView) view()       {}
func (LWWRegisterView) view() {}
func (FlagView) view()        {}
func (ORMapView) view()       {}
func (VoteView) view()        {}

// emptyView is the value a user function starts from when it creates a CRDT
// of kind k with its first update.
func emptyView(k Kind) View {
	switch k {
	case KindGCounter:
		return GCounterView(0)
	case KindPNCounter:
		return PNCounterView(0)
	case KindGSet:
		return GSetView(nil)
	case KindORSet:
		return ORSetView(nil)
	case KindLWWRegister:
		return LWWRegisterView{}
	case KindFlag:
		return FlagView(false)
	case KindORMap:
		return ORMapView(nil)
	case KindVote:
		// The support libraries count their own node before the proxy says.
		return VoteView{TotalVoters: 1}
	}
	return nil
}

// ApplyView returns the value a user function holds after applying d to v,
// with the semantics of PROTOCOL §3.4 (v nil: the function creates the CRDT
// from d). It rejects the malformed deltas Apply rejects (empty, wrong type,
// increment of 2^63 or more, flag switched off, missing key or value); limits
// that depend on replicated state, such as a node's count overflowing, are
// Apply's alone, so apply a function's update to the CRDT first. Vote: the
// function sets only self_vote, and votes_for moves with it as the support
// libraries do.
func ApplyView(v View, d *protocol.CrdtDelta) (View, error) {
	k := KindOf(d)
	if k == 0 {
		return nil, ErrEmptyDelta
	}
	if v == nil {
		v = emptyView(k)
	} else if v.Kind() != k {
		return nil, fmt.Errorf("%w: %s delta for a %s", ErrWrongKind, k, v.Kind())
	}
	switch v := v.(type) {
	case GCounterView:
		inc := d.GetGcounter().GetIncrement()
		if inc >= 1<<63 {
			return nil, fmt.Errorf("%w: gcounter increment %d is 2^63 or more", ErrInvalidDelta, inc)
		}
		return v + GCounterView(inc), nil
	case PNCounterView:
		return v + PNCounterView(d.GetPncounter().GetChange()), nil
	case GSetView:
		return GSetView(updateSet(v, false, nil, d.GetGset().GetAdded())), nil
	case ORSetView:
		sd := d.GetOrset()
		return ORSetView(updateSet(v, sd.GetCleared(), sd.GetRemoved(), sd.GetAdded())), nil
	case LWWRegisterView:
		if d.GetLwwregister().GetValue() == nil {
			return nil, fmt.Errorf("%w: lwwregister delta without a value", ErrInvalidDelta)
		}
		return LWWRegisterView(KeyOf(d.GetLwwregister().GetValue())), nil
	case FlagView:
		if !d.GetFlag().GetValue() && bool(v) {
			return nil, fmt.Errorf("%w: a flag cannot be switched off", ErrInvalidDelta)
		}
		return v || FlagView(d.GetFlag().GetValue()), nil
	case ORMapView:
		return applyMapView(v, d.GetOrmap())
	case VoteView:
		if self := d.GetVote().GetSelfVote(); self != v.SelfVote {
			v.SelfVote = self
			if self {
				v.VotesFor++
			} else {
				v.VotesFor--
			}
		}
		return v, nil
	}
	return nil, fmt.Errorf("%w: unknown view type %T", ErrWrongKind, v)
}

// updateSet returns the sorted set base, emptied if cleared, minus removed,
// plus added.
func updateSet(base []Key, cleared bool, removed, added []*anypb.Any) []Key {
	if !cleared && len(removed) == 0 && len(added) == 0 {
		return base
	}
	m := make(map[Key]struct{}, len(base)+len(added))
	if !cleared {
		for _, k := range base {
			m[k] = struct{}{}
		}
	}
	for _, a := range removed {
		delete(m, KeyOf(a))
	}
	for _, a := range added {
		m[KeyOf(a)] = struct{}{}
	}
	return sortedKeys(m)
}

// applyMapView mirrors ORMap.Apply on values.
func applyMapView(v ORMapView, md *protocol.ORMapDelta) (View, error) {
	for _, list := range [][]*protocol.ORMapEntryDelta{md.GetUpdated(), md.GetAdded()} {
		for _, e := range list {
			if err := checkEntry(e); err != nil {
				return nil, err
			}
		}
	}
	out := make(ORMapView, len(v)+len(md.GetAdded()))
	if !md.GetCleared() {
		for k, ev := range v {
			out[k] = ev
		}
	}
	for _, a := range md.GetRemoved() {
		delete(out, KeyOf(a))
	}
	for _, e := range md.GetUpdated() {
		k := KeyOf(e.GetKey())
		cur, ok := out[k]
		if !ok || cur.Kind() != KindOf(e.GetDelta()) {
			continue
		}
		nv, err := ApplyView(cur, e.GetDelta())
		if err != nil {
			return nil, fmt.Errorf("ormap updated %s: %w", keyLabel(k), err)
		}
		out[k] = nv
	}
	for _, e := range md.GetAdded() {
		k := KeyOf(e.GetKey())
		cur := out[k]
		if cur != nil && cur.Kind() != KindOf(e.GetDelta()) {
			cur = nil
		}
		nv, err := ApplyView(cur, e.GetDelta())
		if err != nil {
			return nil, fmt.Errorf("ormap added %s: %w", keyLabel(k), err)
		}
		out[k] = nv
	}
	return out, nil
}
