package sdk

import (
	"fmt"
	"slices"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// ORMap is an observed-remove map from keys to CRDTs. Keys are messages,
// encoded and compared like GSet elements (String("k") for string keys);
// each value is a CRDT of any type, changed in place through the typed
// accessors:
//
//	m.PNCounter(sdk.String("apples")).Increment(3)
//
// An accessor returns the value at the key, creating an empty one there if
// the key has none (in a command or stream-cancel handler; elsewhere the
// empty value is not added to the map). A new LWWRegister is added with its
// first Set, since a register cannot exist without a value. Get, Has, Keys
// and Entries only read.
type ORMap struct {
	crdtBase
	entries map[anyKey]*ormapEntry
	// The change since the last commit, relative to the proxy's value:
	// cleared (all the proxy's keys are gone), keys of the proxy's value
	// removed (or replaced), and keys whose value is new (sent whole).
	// The other values send their own deltas.
	cleared bool
	removed map[anyKey]*anypb.Any
	added   map[anyKey]bool
	// registers handed out by LWWRegister that are not in the map yet, so
	// that asking twice gives the same one.
	pending map[anyKey]*LWWRegister
}

type ormapEntry struct {
	key   *anypb.Any
	value CRDT
}

// ORMapEntry is one key and value of an ORMap.
type ORMapEntry struct {
	Key   *anypb.Any
	Value CRDT
}

// Kind returns KindORMap.
func (*ORMap) Kind() CRDTKind { return KindORMap }

// Len returns the number of keys.
func (m *ORMap) Len() int { return len(m.entries) }

// Has reports whether the map has a value at key.
func (m *ORMap) Has(key proto.Message) bool { return m.Get(key) != nil }

// Get returns the value at key, or nil if there is none.
func (m *ORMap) Get(key proto.Message) CRDT {
	a, err := encodeValue(key)
	if err != nil {
		return nil
	}
	if e := m.entries[keyOf(a)]; e != nil {
		return e.value
	}
	return nil
}

// Keys returns the keys, ordered by type URL and bytes.
func (m *ORMap) Keys() []*anypb.Any {
	out := make([]*anypb.Any, 0, len(m.entries))
	for _, k := range m.sortedKeys() {
		out = append(out, proto.CloneOf(m.entries[k].key))
	}
	return out
}

// Entries returns the keys and values, ordered by key.
func (m *ORMap) Entries() []ORMapEntry {
	out := make([]ORMapEntry, 0, len(m.entries))
	for _, k := range m.sortedKeys() {
		e := m.entries[k]
		out = append(out, ORMapEntry{Key: proto.CloneOf(e.key), Value: e.value})
	}
	return out
}

func (m *ORMap) sortedKeys() []anyKey {
	keys := make([]anyKey, 0, len(m.entries))
	for k := range m.entries {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, anyKey.compare)
	return keys
}

// GCounter returns the GCounter at key, creating it if the key has no value.
func (m *ORMap) GCounter(key proto.Message) *GCounter {
	return mapValue[*GCounter](m, key, KindGCounter)
}

// PNCounter returns the PNCounter at key, creating it if the key has no
// value.
func (m *ORMap) PNCounter(key proto.Message) *PNCounter {
	return mapValue[*PNCounter](m, key, KindPNCounter)
}

// GSet returns the GSet at key, creating it if the key has no value.
func (m *ORMap) GSet(key proto.Message) *GSet { return mapValue[*GSet](m, key, KindGSet) }

// ORSet returns the ORSet at key, creating it if the key has no value.
func (m *ORMap) ORSet(key proto.Message) *ORSet { return mapValue[*ORSet](m, key, KindORSet) }

// LWWRegister returns the LWWRegister at key; if the key has no value, the
// register returned joins the map with its first Set.
func (m *ORMap) LWWRegister(key proto.Message) *LWWRegister {
	return mapValue[*LWWRegister](m, key, KindLWWRegister)
}

// Flag returns the Flag at key, creating it if the key has no value.
func (m *ORMap) Flag(key proto.Message) *Flag { return mapValue[*Flag](m, key, KindFlag) }

// ORMap returns the ORMap at key, creating it if the key has no value.
func (m *ORMap) ORMap(key proto.Message) *ORMap { return mapValue[*ORMap](m, key, KindORMap) }

// Vote returns the Vote at key, creating it if the key has no value.
func (m *ORMap) Vote(key proto.Message) *Vote { return mapValue[*Vote](m, key, KindVote) }

// mapValue returns the value of type T at key, creating it if there is
// none (see ORMap). A value of another type fails the handler and gives a
// placeholder.
func mapValue[T CRDT](m *ORMap, key proto.Message, kind CRDTKind) T {
	a, err := encodeValue(key)
	if err != nil {
		m.fail(fmt.Errorf("ormap key: %w", err))
		return placeholder[T](kind)
	}
	k := keyOf(a)
	if e := m.entries[k]; e != nil {
		if c, ok := e.value.(T); ok {
			return c
		}
		m.fail(fmt.Errorf("ormap key %s holds a %s, not a %s", k, e.value.Kind(), kind))
		return placeholder[T](kind)
	}
	if kind == KindLWWRegister {
		if r := m.pending[k]; r != nil {
			return any(r).(T)
		}
	}
	c := newCRDT(kind, m.t, m, a)
	switch {
	case kind == KindLWWRegister:
		if m.pending == nil {
			m.pending = make(map[anyKey]*LWWRegister)
		}
		m.pending[k] = c.(*LWWRegister)
	case canWrite(m):
		beginWrite(c) // adds it to the map
	}
	return c.(T)
}

// attachChild puts a new value into the map (see attach).
func (m *ORMap) attachChild(c CRDT) {
	b := c.base()
	if r, ok := c.(*LWWRegister); ok && m.pending[b.key] == r {
		delete(m.pending, b.key)
	}
	if m.entries[b.key] != nil {
		m.removeEntry(b.key)
	}
	if m.entries == nil {
		m.entries = make(map[anyKey]*ormapEntry)
	}
	m.entries[b.key] = &ormapEntry{key: b.keyAny, value: c}
	if m.added == nil {
		m.added = make(map[anyKey]bool)
	}
	m.added[b.key] = true
}

// removeEntry removes key's value and records the change.
func (m *ORMap) removeEntry(k anyKey) {
	e := m.entries[k]
	e.value.base().orphaned = true
	delete(m.entries, k)
	if m.added[k] {
		delete(m.added, k) // never sent: the proxy does not have it
		return
	}
	m.removed = putAny(m.removed, k, e.key)
}

// Delete removes key and its value.
func (m *ORMap) Delete(key proto.Message) {
	a, err := encodeValue(key)
	if err != nil {
		m.fail(fmt.Errorf("ormap delete: %w", err))
		return
	}
	if !beginWrite(m) {
		return
	}
	if k := keyOf(a); m.entries[k] != nil {
		m.removeEntry(k)
	}
}

// Clear removes every key.
func (m *ORMap) Clear() {
	if !beginWrite(m) {
		return
	}
	// As for ORSet: clearing matters only if the proxy's value had keys.
	if len(m.removed) > 0 || len(m.entries) > len(m.added) {
		m.cleared = true
	}
	for _, e := range m.entries {
		e.value.base().orphaned = true
	}
	m.entries, m.removed, m.added = nil, nil, nil
}

func (m *ORMap) applyDelta(d *protocol.CrdtDelta) error {
	md := d.GetOrmap()
	if md == nil {
		return wrongDelta(m, d)
	}
	if md.GetCleared() {
		for _, e := range m.entries {
			e.value.base().orphaned = true
		}
		m.entries = nil
	}
	for _, a := range md.GetRemoved() {
		k := keyOf(a)
		if e := m.entries[k]; e != nil {
			e.value.base().orphaned = true
			delete(m.entries, k)
		}
	}
	for _, ed := range md.GetUpdated() {
		if ed.GetKey() == nil {
			return fmt.Errorf("ormap updated entry without a key")
		}
		k := keyOf(ed.GetKey())
		e := m.entries[k]
		if e == nil {
			return fmt.Errorf("ormap update of key %s, which has no value", k)
		}
		if err := e.value.applyDelta(ed.GetDelta()); err != nil {
			return fmt.Errorf("ormap key %s: %w", k, err)
		}
	}
	for _, ed := range md.GetAdded() {
		if ed.GetKey() == nil {
			return fmt.Errorf("ormap added entry without a key")
		}
		k := keyOf(ed.GetKey())
		kind := kindOfDelta(ed.GetDelta())
		if kind == 0 {
			return fmt.Errorf("ormap key %s: an empty delta", k)
		}
		e := m.entries[k]
		if e == nil || e.value.Kind() != kind {
			if e != nil {
				e.value.base().orphaned = true
			}
			c := newCRDT(kind, m.t, m, ed.GetKey())
			c.base().attached = true
			e = &ormapEntry{key: ed.GetKey(), value: c}
			if m.entries == nil {
				m.entries = make(map[anyKey]*ormapEntry)
			}
			m.entries[k] = e
		}
		if err := e.value.applyDelta(ed.GetDelta()); err != nil {
			return fmt.Errorf("ormap key %s: %w", k, err)
		}
	}
	return nil
}

func (m *ORMap) delta() *protocol.CrdtDelta {
	md := &protocol.ORMapDelta{Cleared: m.cleared, Removed: sortedAnys(m.removed)}
	for _, k := range m.sortedKeys() {
		e := m.entries[k]
		if m.added[k] {
			md.Added = append(md.Added, &protocol.ORMapEntryDelta{Key: e.key, Delta: e.value.fullDelta()})
		} else if ed := e.value.delta(); ed != nil {
			md.Updated = append(md.Updated, &protocol.ORMapEntryDelta{Key: e.key, Delta: ed})
		}
	}
	if !md.Cleared && len(md.Removed)+len(md.Updated)+len(md.Added) == 0 {
		return nil
	}
	return ormapDelta(md)
}

func (m *ORMap) fullDelta() *protocol.CrdtDelta {
	md := &protocol.ORMapDelta{}
	for _, k := range m.sortedKeys() {
		e := m.entries[k]
		md.Added = append(md.Added, &protocol.ORMapEntryDelta{Key: e.key, Delta: e.value.fullDelta()})
	}
	return ormapDelta(md)
}

func (m *ORMap) commit() {
	m.cleared, m.removed, m.added, m.pending = false, nil, nil, nil
	for _, e := range m.entries {
		e.value.commit()
	}
}

func (m *ORMap) clone(t *crdtTree, parent *ORMap) CRDT {
	n := &ORMap{crdtBase: cloneBase(m.crdtBase, t, parent), cleared: m.cleared, removed: copyAnyMap(m.removed)}
	if len(m.entries) > 0 {
		n.entries = make(map[anyKey]*ormapEntry, len(m.entries))
		for k, e := range m.entries {
			n.entries[k] = &ormapEntry{key: e.key, value: e.value.clone(t, n)}
		}
	}
	if len(m.added) > 0 {
		n.added = make(map[anyKey]bool, len(m.added))
		for k, v := range m.added {
			n.added[k] = v
		}
	}
	return n
}

func ormapDelta(d *protocol.ORMapDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: d}}
}
