package crdt

import (
	"fmt"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// ORMap is an add-wins observed-remove map from Keys to CRDTs of any type.
//
// Keys behave like the elements of an ORSet: every update of a key's value
// (creating it or changing it) is tagged with a new dot that replaces the
// key's dots, removing a key drops its dots, and a merge keeps the dots both
// replicas hold plus those one holds and the other has not seen. In addition, each live dot carries the value written with
// it, which never changes afterwards, and the key's value is the join of its
// live dots' values. So a key that was removed and created again does not
// merge its old value back in from a replica that missed the removal, and
// the merge stays associative. Values of different types under one key
// (created concurrently) join by keeping the one with the higher Kind.
//
// The zero value is an empty map.
type ORMap struct {
	ctx     vv
	entries map[Key]*mapEntry
}

// mapEntry is one key's live dots and its current value. The values held
// by dots are immutable: updates replace them rather than change them.
type mapEntry struct {
	dots  []valueDot // sorted by dot, never empty
	value CRDT       // join of dots' values; dots[0].value itself for one dot
}

type valueDot struct {
	dot
	value CRDT
}

func dotOfValue(v valueDot) dot { return v.dot }

func cloneValueDot(v valueDot) valueDot { return valueDot{v.dot, v.value.Clone()} }

// newEntry builds an entry over dots, computing the joined value.
func newEntry(dots []valueDot) *mapEntry {
	value := dots[0].value
	if len(dots) > 1 {
		value = value.Clone()
		for _, d := range dots[1:] {
			value = joinValues(value, d.value)
		}
	}
	return &mapEntry{dots: dots, value: value}
}

// joinValues merges v into acc (which the caller owns) and returns the join.
// Different types cannot merge; the higher Kind wins, which keeps the join
// commutative and associative.
func joinValues(acc, v CRDT) CRDT {
	switch {
	case v.Kind() > acc.Kind():
		return v.Clone()
	case v.Kind() < acc.Kind():
		return acc
	}
	_ = acc.Merge(v) // cannot fail: the same Kind is the same Go type
	return acc
}

var _ CRDT = (*ORMap)(nil)

// Kind returns KindORMap.
func (*ORMap) Kind() Kind { return KindORMap }

// Apply applies the delta at r.Node, in order: cleared removes every key this
// replica holds; removed keys go; updated entries apply their delta to the
// key's value if the key is present with a value of the delta's type (else
// the entry is ignored); added entries create the value from their delta, or
// apply the delta to a present value of the same type (a present value of
// another type is replaced). Every updated or added key gets one new dot.
// The whole delta applies or, on error, nothing does.
func (m *ORMap) Apply(r Replica, d *protocol.CrdtDelta) error { return m.apply(r.op(), d) }

func (m *ORMap) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindORMap, d); err != nil {
		return err
	}
	md := d.GetOrmap()
	for _, list := range [][]*protocol.ORMapEntryDelta{md.GetUpdated(), md.GetAdded()} {
		for _, e := range list {
			if err := checkEntry(e); err != nil {
				return err
			}
		}
	}
	var dt dot
	if len(md.GetUpdated())+len(md.GetAdded()) > 0 {
		var err error
		if dt, err = m.ctx.nextDot(o); err != nil {
			return err
		}
	}
	inner := op{node: o.node, now: o.now, dot: dt.counter}

	// Changed keys collect in work (nil for removed) and are committed only
	// when every entry applied, so an error leaves the map as it was. Values
	// are cloned before they change: the ones in the map belong to dots.
	work := make(map[Key]CRDT)
	cleared := md.GetCleared()
	lookup := func(k Key) (v CRDT, owned bool) {
		if v, ok := work[k]; ok {
			return v, true
		}
		if e := m.entries[k]; e != nil && !cleared {
			return e.value, false
		}
		return nil, false
	}
	for _, a := range md.GetRemoved() {
		work[KeyOf(a)] = nil
	}
	for _, e := range md.GetUpdated() {
		k := KeyOf(e.GetKey())
		v, owned := lookup(k)
		if v == nil || v.Kind() != KindOf(e.GetDelta()) {
			continue
		}
		if !owned {
			v = v.Clone()
		}
		if err := v.apply(inner, e.GetDelta()); err != nil {
			return fmt.Errorf("ormap updated %s: %w", keyLabel(k), err)
		}
		work[k] = v
	}
	for _, e := range md.GetAdded() {
		k := KeyOf(e.GetKey())
		v, owned := lookup(k)
		var err error
		switch {
		case v == nil || v.Kind() != KindOf(e.GetDelta()):
			v, err = create(inner, e.GetDelta())
		default:
			if !owned {
				v = v.Clone()
			}
			err = v.apply(inner, e.GetDelta())
		}
		if err != nil {
			return fmt.Errorf("ormap added %s: %w", keyLabel(k), err)
		}
		work[k] = v
	}

	if cleared {
		clear(m.entries)
	}
	if m.entries == nil && len(work) > 0 {
		m.entries = make(map[Key]*mapEntry, len(work))
	}
	for k, v := range work {
		if v == nil {
			delete(m.entries, k)
			continue
		}
		m.entries[k] = &mapEntry{dots: []valueDot{{dt, v}}, value: v}
	}
	if dt.counter != 0 {
		m.ctx = m.ctx.observe(dt.node, dt.counter)
	}
	return nil
}

func checkEntry(e *protocol.ORMapEntryDelta) error {
	if e.GetKey() == nil {
		return fmt.Errorf("%w: ormap entry without a key", ErrInvalidDelta)
	}
	if KindOf(e.GetDelta()) == 0 {
		return fmt.Errorf("ormap entry %s: %w", keyLabel(KeyOf(e.GetKey())), ErrEmptyDelta)
	}
	return nil
}

// keyLabel renders a key for error messages.
func keyLabel(k Key) string { return "key " + k.String() }

// Merge keeps every key with a surviving dot (see ORMap); its value is the
// join of the surviving dots' values.
func (m *ORMap) Merge(other CRDT) error {
	o, ok := other.(*ORMap)
	if !ok {
		return mergeMismatch(KindORMap, other)
	}
	if o == m {
		return nil
	}
	type added struct {
		k Key
		e *mapEntry
	}
	var news []added
	for k, eb := range o.entries {
		if _, ok := m.entries[k]; !ok {
			if kept := keepDots(nil, eb.dots, dotOfValue, m.ctx, o.ctx, cloneValueDot); len(kept) > 0 {
				news = append(news, added{k, newEntry(kept)})
			}
		}
	}
	for k, ea := range m.entries {
		var db []valueDot
		if eb := o.entries[k]; eb != nil {
			db = eb.dots
		}
		if sameDots(ea.dots, db, dotOfValue) {
			continue
		}
		kept := keepDots(ea.dots, db, dotOfValue, m.ctx, o.ctx, cloneValueDot)
		switch {
		case len(kept) == 0:
			delete(m.entries, k)
		case !sameDots(kept, ea.dots, dotOfValue):
			m.entries[k] = newEntry(kept)
		}
	}
	if len(news) > 0 && m.entries == nil {
		m.entries = make(map[Key]*mapEntry, len(news))
	}
	for _, n := range news {
		m.entries[n.k] = n.e
	}
	m.ctx = m.ctx.join(o.ctx)
	return nil
}

// View returns every key's value as r sees it.
func (m *ORMap) View(r Replica) View {
	v := make(ORMapView, len(m.entries))
	for k, e := range m.entries {
		v[k] = e.value.View(r)
	}
	return v
}

// Clone returns a deep copy.
func (m *ORMap) Clone() CRDT {
	c := &ORMap{ctx: m.ctx.clone()}
	if m.entries != nil {
		c.entries = make(map[Key]*mapEntry, len(m.entries))
		for k, e := range m.entries {
			dots := make([]valueDot, len(e.dots))
			for i, d := range e.dots {
				dots[i] = cloneValueDot(d)
			}
			ce := &mapEntry{dots: dots, value: dots[0].value}
			if len(dots) > 1 {
				ce.value = e.value.Clone()
			}
			c.entries[k] = ce
		}
	}
	return c
}

// MarshalState serializes the map's state, values included.
func (m *ORMap) MarshalState() ([]byte, error) { return marshalState(m) }

func (m *ORMap) state() *crdtpb.State {
	keys := sortedKeys(m.entries)
	pb := &crdtpb.ORMap{Context: countersPB(m.ctx), Entries: make([]*crdtpb.ORMapEntry, len(keys))}
	for i, k := range keys {
		e := m.entries[k]
		pe := &crdtpb.ORMapEntry{Key: payloadPB(k), Dots: make([]*crdtpb.ValueDot, len(e.dots))}
		for j, d := range e.dots {
			pe.Dots[j] = &crdtpb.ValueDot{Node: []byte(d.node), Counter: d.counter, Value: d.value.state()}
		}
		pb.Entries[i] = pe
	}
	return &crdtpb.State{State: &crdtpb.State_Ormap{Ormap: pb}}
}
