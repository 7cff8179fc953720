package crdt

import (
	"maps"
	"slices"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// GSet is a grow-only set of Keys; merge is union. The zero value is empty.
type GSet struct {
	elems map[Key]struct{}
}

var _ CRDT = (*GSet)(nil)

// Kind returns KindGSet.
func (*GSet) Kind() Kind { return KindGSet }

// Apply inserts the delta's added elements.
func (s *GSet) Apply(r Replica, d *protocol.CrdtDelta) error { return s.apply(r.op(), d) }

func (s *GSet) apply(_ op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindGSet, d); err != nil {
		return err
	}
	for _, a := range d.GetGset().GetAdded() {
		s.add(KeyOf(a))
	}
	return nil
}

func (s *GSet) add(k Key) {
	if s.elems == nil {
		s.elems = make(map[Key]struct{})
	}
	s.elems[k] = struct{}{}
}

// Merge adds every element of other.
func (s *GSet) Merge(other CRDT) error {
	o, ok := other.(*GSet)
	if !ok {
		return mergeMismatch(KindGSet, other)
	}
	for k := range o.elems {
		s.add(k)
	}
	return nil
}

// View returns the elements, sorted.
func (s *GSet) View(Replica) View { return GSetView(sortedKeys(s.elems)) }

// Clone returns a deep copy.
func (s *GSet) Clone() CRDT { return &GSet{elems: maps.Clone(s.elems)} }

// MarshalState serializes the set's state.
func (s *GSet) MarshalState() ([]byte, error) { return marshalState(s) }

func (s *GSet) state() *crdtpb.State {
	keys := sortedKeys(s.elems)
	pb := &crdtpb.GSet{Elements: make([]*crdtpb.Payload, len(keys))}
	for i, k := range keys {
		pb.Elements[i] = payloadPB(k)
	}
	return &crdtpb.State{State: &crdtpb.State_Gset{Gset: pb}}
}

// ORSet is an add-wins observed-remove set. Every add is tagged with a dot;
// the set keeps, per element, its live dots, plus a version vector (the
// context) of every dot it has seen. Removing an element drops its dots, and
// the context remembers they were seen, so a merge drops them on the other
// replica too, while an add the remover had not seen survives. The zero
// value is empty.
type ORSet struct {
	ctx   vv
	elems map[Key][]dot // never empty slices; sorted by compareDots
}

var _ CRDT = (*ORSet)(nil)

// Kind returns KindORSet.
func (*ORSet) Kind() Kind { return KindORSet }

// Apply applies the delta at r.Node: cleared removes every element this
// replica holds, then removed elements go, then added elements are added
// with one new dot.
func (s *ORSet) Apply(r Replica, d *protocol.CrdtDelta) error { return s.apply(r.op(), d) }

func (s *ORSet) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindORSet, d); err != nil {
		return err
	}
	sd := d.GetOrset()
	var dt dot
	if len(sd.GetAdded()) > 0 {
		var err error
		if dt, err = s.ctx.nextDot(o); err != nil {
			return err
		}
	}
	if sd.GetCleared() {
		clear(s.elems)
	}
	for _, a := range sd.GetRemoved() {
		delete(s.elems, KeyOf(a))
	}
	if len(sd.GetAdded()) == 0 {
		return nil
	}
	if s.elems == nil {
		s.elems = make(map[Key][]dot, len(sd.GetAdded()))
	}
	// One dot tags every element of this update: a dot names an update, and
	// removing one of the elements leaves the others' shared dot intact.
	for _, a := range sd.GetAdded() {
		s.elems[KeyOf(a)] = []dot{dt}
	}
	s.ctx = s.ctx.observe(dt.node, dt.counter)
	return nil
}

// Merge keeps every element with a dot both replicas hold, or that one holds
// and the other has not seen (so has not removed).
func (s *ORSet) Merge(other CRDT) error {
	o, ok := other.(*ORSet)
	if !ok {
		return mergeMismatch(KindORSet, other)
	}
	type added struct {
		k    Key
		dots []dot
	}
	var news []added
	for k, db := range o.elems {
		if _, ok := s.elems[k]; !ok {
			if kept := keepDots(nil, db, idDot, s.ctx, o.ctx, idDot); len(kept) > 0 {
				news = append(news, added{k, kept})
			}
		}
	}
	for k, da := range s.elems {
		db := o.elems[k]
		if sameDots(da, db, idDot) {
			continue
		}
		if kept := keepDots(da, db, idDot, s.ctx, o.ctx, idDot); len(kept) > 0 {
			s.elems[k] = kept
		} else {
			delete(s.elems, k)
		}
	}
	if len(news) > 0 && s.elems == nil {
		s.elems = make(map[Key][]dot, len(news))
	}
	for _, n := range news {
		s.elems[n.k] = n.dots
	}
	s.ctx = s.ctx.join(o.ctx)
	return nil
}

// View returns the elements, sorted.
func (s *ORSet) View(Replica) View { return ORSetView(sortedKeys(s.elems)) }

// Clone returns a deep copy.
func (s *ORSet) Clone() CRDT {
	c := &ORSet{ctx: s.ctx.clone()}
	if s.elems != nil {
		c.elems = make(map[Key][]dot, len(s.elems))
		for k, ds := range s.elems {
			c.elems[k] = slices.Clone(ds)
		}
	}
	return c
}

// MarshalState serializes the set's state.
func (s *ORSet) MarshalState() ([]byte, error) { return marshalState(s) }

func (s *ORSet) state() *crdtpb.State {
	keys := sortedKeys(s.elems)
	pb := &crdtpb.ORSet{Context: countersPB(s.ctx), Elements: make([]*crdtpb.ORSetElement, len(keys))}
	for i, k := range keys {
		pb.Elements[i] = &crdtpb.ORSetElement{Element: payloadPB(k), Dots: dotsPB(s.elems[k])}
	}
	return &crdtpb.State{State: &crdtpb.State_Orset{Orset: pb}}
}
