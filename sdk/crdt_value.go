package sdk

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// CRDTKind is the type of a CRDT.
type CRDTKind int

// The CRDT types of the Cloudstate protocol.
const (
	KindGCounter CRDTKind = iota + 1
	KindPNCounter
	KindGSet
	KindORSet
	KindLWWRegister
	KindFlag
	KindORMap
	KindVote
)

// String returns the protocol's name of the type, for example "GCounter".
func (k CRDTKind) String() string {
	switch k {
	case KindGCounter:
		return "GCounter"
	case KindPNCounter:
		return "PNCounter"
	case KindGSet:
		return "GSet"
	case KindORSet:
		return "ORSet"
	case KindLWWRegister:
		return "LWWRegister"
	case KindFlag:
		return "Flag"
	case KindORMap:
		return "ORMap"
	case KindVote:
		return "Vote"
	}
	return fmt.Sprintf("CRDTKind(%d)", int(k))
}

// CRDT is the value of one of the CRDT types: *GCounter, *PNCounter,
// *GSet, *ORSet, *LWWRegister, *Flag, *ORMap or *Vote. Use a type switch
// or the typed accessors of the contexts to get at it.
//
// The proxy owns the CRDT and merges changes from every node; the function
// holds the current value, which the proxy keeps up to date between
// commands. Command and stream-cancel handlers change the value with the
// types' mutators; each change is recorded and sent to the proxy as a delta
// when the handler succeeds, and undone when it fails. Change callbacks
// (OnChange) may only read. A CRDT object is valid during the handler that
// got it; get it from the context again in later handlers.
type CRDT interface {
	// Kind returns the CRDT's type.
	Kind() CRDTKind

	base() *crdtBase
	// applyDelta applies a delta from the proxy (PROTOCOL §3.4).
	applyDelta(d *protocol.CrdtDelta) error
	// delta returns the change since the last commit, relative to the value
	// the proxy knows, or nil when there is none.
	delta() *protocol.CrdtDelta
	// fullDelta returns the whole value as a delta from empty.
	fullDelta() *protocol.CrdtDelta
	// commit forgets the recorded change: the proxy now knows the value.
	commit()
	// clone returns a deep copy in tree t under parent.
	clone(t *crdtTree, parent *ORMap) CRDT
}

var (
	errStaleCRDT    = errors.New("this CRDT object is out of date (deleted, replaced or rolled back); get it again from the context")
	errReadOnlyCRDT = errors.New("the CRDT can only be changed by command and stream-cancel handlers, not by OnChange callbacks")
)

// crdtTree is one generation of an entity's CRDT objects. A rollback or a
// delete replaces the tree and marks the old one dead, so that objects a
// handler kept from before cannot change the new value.
type crdtTree struct {
	h    *crdtHost // nil for placeholder objects, whose changes are ignored
	dead bool
}

// crdtBase is what every CRDT object has: its tree and, for a map value,
// its place in the map.
type crdtBase struct {
	t      *crdtTree
	parent *ORMap // nil for the entity's CRDT
	key    anyKey
	keyAny *anypb.Any
	// attached is false for a map value that is not in its map yet (an
	// LWWRegister before its first Set, or a value read in OnChange).
	attached bool
	// orphaned is set when the value was removed from its map.
	orphaned bool
}

func (b *crdtBase) base() *crdtBase { return b }

// fail records a misuse of the CRDT as a failure of the running handler.
func (b *crdtBase) fail(err error) {
	if b.t.h != nil {
		b.t.h.misuse(err)
	}
}

// beginWrite is called by every mutator before it changes c. It reports
// whether the change may go ahead: c must be current and the running
// handler allowed to change the CRDT. It saves the value for a rollback
// before the first change and puts a new map value into its map.
func beginWrite(c CRDT) bool {
	b := c.base()
	h := b.t.h
	if h == nil {
		return false // a placeholder: the mistake is already recorded
	}
	if b.t.dead || orphaned(b) {
		h.misuse(errStaleCRDT)
		return false
	}
	if !h.writable {
		h.misuse(errReadOnlyCRDT)
		return false
	}
	h.saveForRollback()
	attach(c)
	h.touched = true
	return true
}

// canWrite reports, without recording anything, whether beginWrite would
// succeed for c.
func canWrite(c CRDT) bool {
	b := c.base()
	return b.t.h != nil && b.t.h.writable && !b.t.dead && !orphaned(b)
}

func orphaned(b *crdtBase) bool {
	for ; b != nil; b = parentBase(b) {
		if b.orphaned {
			return true
		}
	}
	return false
}

func parentBase(b *crdtBase) *crdtBase {
	if b.parent == nil {
		return nil
	}
	return &b.parent.crdtBase
}

// attach puts a map value that is not in its map yet into it, parents first.
func attach(c CRDT) {
	b := c.base()
	if b.parent == nil || b.attached {
		return
	}
	attach(b.parent)
	b.parent.attachChild(c)
	b.attached = true
}

// newCRDT returns an empty CRDT of kind k in tree t.
func newCRDT(k CRDTKind, t *crdtTree, parent *ORMap, key *anypb.Any) CRDT {
	b := crdtBase{t: t, parent: parent, keyAny: key}
	if key != nil {
		b.key = keyOf(key)
	}
	switch k {
	case KindGCounter:
		return &GCounter{crdtBase: b}
	case KindPNCounter:
		return &PNCounter{crdtBase: b}
	case KindGSet:
		return &GSet{crdtBase: b}
	case KindORSet:
		return &ORSet{crdtBase: b}
	case KindLWWRegister:
		return &LWWRegister{crdtBase: b}
	case KindFlag:
		return &Flag{crdtBase: b}
	case KindORMap:
		return &ORMap{crdtBase: b}
	case KindVote:
		// A new vote counts this node, as the proxy assumes until it says
		// otherwise.
		return &Vote{crdtBase: b, total: 1}
	}
	panic(fmt.Sprintf("sdk: unknown CRDT kind %d", int(k)))
}

// placeholder returns an empty CRDT of kind k whose changes are ignored, for
// an accessor that found a CRDT of another type (the handler already fails).
func placeholder[T CRDT](k CRDTKind) T {
	return newCRDT(k, &crdtTree{}, nil, nil).(T)
}

// kindOfDelta returns the CRDT type a delta is for, 0 if none is set.
func kindOfDelta(d *protocol.CrdtDelta) CRDTKind {
	switch d.GetDelta().(type) {
	case *protocol.CrdtDelta_Gcounter:
		return KindGCounter
	case *protocol.CrdtDelta_Pncounter:
		return KindPNCounter
	case *protocol.CrdtDelta_Gset:
		return KindGSet
	case *protocol.CrdtDelta_Orset:
		return KindORSet
	case *protocol.CrdtDelta_Lwwregister:
		return KindLWWRegister
	case *protocol.CrdtDelta_Flag:
		return KindFlag
	case *protocol.CrdtDelta_Ormap:
		return KindORMap
	case *protocol.CrdtDelta_Vote:
		return KindVote
	}
	return 0
}

func wrongDelta(c CRDT, d *protocol.CrdtDelta) error {
	if k := kindOfDelta(d); k != 0 {
		return fmt.Errorf("a %s delta for a %s", k, c.Kind())
	}
	return fmt.Errorf("an empty delta for a %s", c.Kind())
}

// anyKey identifies an element or map key: the protocol compares them as
// type URL plus bytes.
type anyKey struct {
	url, value string
}

func keyOf(a *anypb.Any) anyKey { return anyKey{a.GetTypeUrl(), string(a.GetValue())} }

func (k anyKey) compare(o anyKey) int {
	if c := cmp.Compare(k.url, o.url); c != 0 {
		return c
	}
	return bytes.Compare([]byte(k.value), []byte(o.value))
}

func (k anyKey) String() string {
	a := &anypb.Any{TypeUrl: k.url, Value: []byte(k.value)}
	if s, err := StringValue(a); err == nil {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%s(%x)", k.url, k.value)
}

// sortedAnys returns the values of m ordered by key, so that deltas and
// listings do not depend on map iteration order.
func sortedAnys(m map[anyKey]*anypb.Any) []*anypb.Any {
	if len(m) == 0 {
		return nil
	}
	keys := make([]anyKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, anyKey.compare)
	out := make([]*anypb.Any, len(keys))
	for i, k := range keys {
		out[i] = m[k]
	}
	return out
}

func cloneAnys(as []*anypb.Any) []*anypb.Any {
	out := make([]*anypb.Any, len(as))
	for i, a := range as {
		out[i] = proto.CloneOf(a)
	}
	return out
}

func copyAnyMap(m map[anyKey]*anypb.Any) map[anyKey]*anypb.Any {
	if len(m) == 0 {
		return nil
	}
	out := make(map[anyKey]*anypb.Any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// GCounter is a grow-only counter.
type GCounter struct {
	crdtBase
	value   uint64
	pending uint64
}

// Kind returns KindGCounter.
func (*GCounter) Kind() CRDTKind { return KindGCounter }

// Value returns the counter's value.
func (c *GCounter) Value() uint64 { return c.value }

// Increment adds n to the counter.
func (c *GCounter) Increment(n uint64) {
	if !beginWrite(c) {
		return
	}
	c.value += n
	c.pending += n
}

func (c *GCounter) applyDelta(d *protocol.CrdtDelta) error {
	g := d.GetGcounter()
	if g == nil {
		return wrongDelta(c, d)
	}
	c.value += g.GetIncrement()
	return nil
}

func (c *GCounter) delta() *protocol.CrdtDelta {
	if c.pending == 0 {
		return nil
	}
	return gcounterDelta(c.pending)
}

func (c *GCounter) fullDelta() *protocol.CrdtDelta { return gcounterDelta(c.value) }
func (c *GCounter) commit()                        { c.pending = 0 }

func (c *GCounter) clone(t *crdtTree, parent *ORMap) CRDT {
	n := *c
	n.crdtBase = cloneBase(c.crdtBase, t, parent)
	return &n
}

func cloneBase(b crdtBase, t *crdtTree, parent *ORMap) crdtBase {
	b.t, b.parent = t, parent
	return b
}

func gcounterDelta(n uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: n}}}
}

// PNCounter is a counter that can go up and down.
type PNCounter struct {
	crdtBase
	value   int64
	pending int64
}

// Kind returns KindPNCounter.
func (*PNCounter) Kind() CRDTKind { return KindPNCounter }

// Value returns the counter's value.
func (c *PNCounter) Value() int64 { return c.value }

// Increment adds n (which may be negative) to the counter.
func (c *PNCounter) Increment(n int64) {
	if !beginWrite(c) {
		return
	}
	c.value += n
	c.pending += n
}

// Decrement subtracts n from the counter.
func (c *PNCounter) Decrement(n int64) { c.Increment(-n) }

func (c *PNCounter) applyDelta(d *protocol.CrdtDelta) error {
	p := d.GetPncounter()
	if p == nil {
		return wrongDelta(c, d)
	}
	c.value += p.GetChange()
	return nil
}

func (c *PNCounter) delta() *protocol.CrdtDelta {
	if c.pending == 0 {
		return nil
	}
	return pncounterDelta(c.pending)
}

func (c *PNCounter) fullDelta() *protocol.CrdtDelta { return pncounterDelta(c.value) }
func (c *PNCounter) commit()                        { c.pending = 0 }

func (c *PNCounter) clone(t *crdtTree, parent *ORMap) CRDT {
	n := *c
	n.crdtBase = cloneBase(c.crdtBase, t, parent)
	return &n
}

func pncounterDelta(n int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: n}}}
}

// GSet is a grow-only set. Elements are messages, compared by their
// encoding (see the Add method).
type GSet struct {
	crdtBase
	elems map[anyKey]*anypb.Any
	added map[anyKey]*anypb.Any
}

// Kind returns KindGSet.
func (*GSet) Kind() CRDTKind { return KindGSet }

// Len returns the number of elements.
func (s *GSet) Len() int { return len(s.elems) }

// Contains reports whether v is an element.
func (s *GSet) Contains(v proto.Message) bool { return containsValue(s.elems, v) }

// Elements returns the elements, ordered by type URL and bytes.
func (s *GSet) Elements() []*anypb.Any { return cloneAnys(sortedAnys(s.elems)) }

// Add adds v to the set. An *anypb.Any is used as it is (for example
// String("x")); any other message is encoded deterministically and wrapped
// with its type URL. Elements are compared by type URL and bytes.
func (s *GSet) Add(v proto.Message) {
	a, err := encodeValue(v)
	if err != nil {
		s.fail(fmt.Errorf("gset add: %w", err))
		return
	}
	if !beginWrite(s) {
		return
	}
	k := keyOf(a)
	if _, ok := s.elems[k]; ok {
		return
	}
	s.elems = putAny(s.elems, k, a)
	s.added = putAny(s.added, k, a)
}

func putAny(m map[anyKey]*anypb.Any, k anyKey, a *anypb.Any) map[anyKey]*anypb.Any {
	if m == nil {
		m = make(map[anyKey]*anypb.Any)
	}
	m[k] = a
	return m
}

func containsValue(m map[anyKey]*anypb.Any, v proto.Message) bool {
	a, err := encodeValue(v)
	if err != nil {
		return false
	}
	_, ok := m[keyOf(a)]
	return ok
}

func (s *GSet) applyDelta(d *protocol.CrdtDelta) error {
	g := d.GetGset()
	if g == nil {
		return wrongDelta(s, d)
	}
	for _, a := range g.GetAdded() {
		s.elems = putAny(s.elems, keyOf(a), a)
	}
	return nil
}

func (s *GSet) delta() *protocol.CrdtDelta {
	if len(s.added) == 0 {
		return nil
	}
	return gsetDelta(sortedAnys(s.added))
}

func (s *GSet) fullDelta() *protocol.CrdtDelta { return gsetDelta(sortedAnys(s.elems)) }
func (s *GSet) commit()                        { s.added = nil }

func (s *GSet) clone(t *crdtTree, parent *ORMap) CRDT {
	return &GSet{crdtBase: cloneBase(s.crdtBase, t, parent), elems: copyAnyMap(s.elems), added: copyAnyMap(s.added)}
}

func gsetDelta(added []*anypb.Any) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: added}}}
}

// ORSet is an observed-remove set: elements can be added and removed, and
// an add wins over a concurrent remove. Elements are compared like GSet's.
type ORSet struct {
	crdtBase
	elems map[anyKey]*anypb.Any
	// The change since the last commit: cleared (the proxy's elements are
	// all gone), elements of the proxy's value removed, and elements the
	// proxy does not have (all current elements after a clear).
	cleared bool
	removed map[anyKey]*anypb.Any
	added   map[anyKey]*anypb.Any
}

// Kind returns KindORSet.
func (*ORSet) Kind() CRDTKind { return KindORSet }

// Len returns the number of elements.
func (s *ORSet) Len() int { return len(s.elems) }

// Contains reports whether v is an element.
func (s *ORSet) Contains(v proto.Message) bool { return containsValue(s.elems, v) }

// Elements returns the elements, ordered by type URL and bytes.
func (s *ORSet) Elements() []*anypb.Any { return cloneAnys(sortedAnys(s.elems)) }

// Add adds v to the set; v is encoded like GSet.Add's argument.
func (s *ORSet) Add(v proto.Message) {
	a, err := encodeValue(v)
	if err != nil {
		s.fail(fmt.Errorf("orset add: %w", err))
		return
	}
	if !beginWrite(s) {
		return
	}
	k := keyOf(a)
	if _, ok := s.elems[k]; ok {
		return
	}
	s.elems = putAny(s.elems, k, a)
	if _, ok := s.removed[k]; ok {
		delete(s.removed, k) // removed and added back: the proxy's value has it
	} else {
		s.added = putAny(s.added, k, a)
	}
}

// Remove removes v from the set.
func (s *ORSet) Remove(v proto.Message) {
	a, err := encodeValue(v)
	if err != nil {
		s.fail(fmt.Errorf("orset remove: %w", err))
		return
	}
	if !beginWrite(s) {
		return
	}
	k := keyOf(a)
	e, ok := s.elems[k]
	if !ok {
		return
	}
	delete(s.elems, k)
	if _, ok := s.added[k]; ok {
		delete(s.added, k)
	} else {
		s.removed = putAny(s.removed, k, e)
	}
}

// Clear removes every element.
func (s *ORSet) Clear() {
	if !beginWrite(s) {
		return
	}
	// Clearing matters to the proxy only if its value had elements: some
	// are still here (not added by this handler) or already removed.
	if len(s.removed) > 0 || len(s.elems) > len(s.added) {
		s.cleared = true
	}
	s.elems, s.removed, s.added = nil, nil, nil
}

func (s *ORSet) applyDelta(d *protocol.CrdtDelta) error {
	o := d.GetOrset()
	if o == nil {
		return wrongDelta(s, d)
	}
	if o.GetCleared() {
		s.elems = nil
	}
	for _, a := range o.GetRemoved() {
		delete(s.elems, keyOf(a))
	}
	for _, a := range o.GetAdded() {
		s.elems = putAny(s.elems, keyOf(a), a)
	}
	return nil
}

func (s *ORSet) delta() *protocol.CrdtDelta {
	if !s.cleared && len(s.removed) == 0 && len(s.added) == 0 {
		return nil
	}
	return orsetDelta(&protocol.ORSetDelta{Cleared: s.cleared, Removed: sortedAnys(s.removed), Added: sortedAnys(s.added)})
}

func (s *ORSet) fullDelta() *protocol.CrdtDelta {
	return orsetDelta(&protocol.ORSetDelta{Added: sortedAnys(s.elems)})
}

func (s *ORSet) commit() { s.cleared, s.removed, s.added = false, nil, nil }

func (s *ORSet) clone(t *crdtTree, parent *ORMap) CRDT {
	return &ORSet{crdtBase: cloneBase(s.crdtBase, t, parent), elems: copyAnyMap(s.elems),
		cleared: s.cleared, removed: copyAnyMap(s.removed), added: copyAnyMap(s.added)}
}

func orsetDelta(d *protocol.ORSetDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: d}}
}

// Clock selects the timestamp of an LWWRegister write.
type Clock int32

// The clocks of LWWRegister writes (protocol enum CrdtClock).
const (
	// ClockDefault uses the proxy's wall clock: the last write wins.
	ClockDefault Clock = Clock(protocol.CrdtClock_DEFAULT)
	// ClockReverse uses the negated wall clock: the first write wins.
	ClockReverse Clock = Clock(protocol.CrdtClock_REVERSE)
	// ClockCustom uses the given value as the timestamp.
	ClockCustom Clock = Clock(protocol.CrdtClock_CUSTOM)
	// ClockCustomAutoIncrement uses the given value, or the register's
	// timestamp plus one if that is not newer.
	ClockCustomAutoIncrement Clock = Clock(protocol.CrdtClock_CUSTOM_AUTO_INCREMENT)
)

// LWWRegister is a last-write-wins register holding one value. A new
// register has no value (Value returns nil); it comes into existence with
// its first Set.
type LWWRegister struct {
	crdtBase
	value *anypb.Any
	// set, clock and custom describe the last Set since the last commit.
	set    bool
	clock  Clock
	custom int64
}

// Kind returns KindLWWRegister.
func (*LWWRegister) Kind() CRDTKind { return KindLWWRegister }

// Value returns the register's value, or nil if it has none.
func (r *LWWRegister) Value() *anypb.Any {
	if r.value == nil {
		return nil
	}
	return proto.CloneOf(r.value)
}

// Set sets the value with the default clock. v is encoded like GSet.Add's
// argument.
func (r *LWWRegister) Set(v proto.Message) { r.SetWithClock(v, ClockDefault, 0) }

// SetWithClock sets the value with the given clock; customValue is the
// timestamp for ClockCustom and ClockCustomAutoIncrement.
func (r *LWWRegister) SetWithClock(v proto.Message, clock Clock, customValue int64) {
	a, err := encodeValue(v)
	if err != nil {
		r.fail(fmt.Errorf("lwwregister set: %w", err))
		return
	}
	if !beginWrite(r) {
		return
	}
	r.value, r.set, r.clock, r.custom = a, true, clock, customValue
}

func (r *LWWRegister) applyDelta(d *protocol.CrdtDelta) error {
	l := d.GetLwwregister()
	if l == nil {
		return wrongDelta(r, d)
	}
	if l.GetValue() == nil {
		return errors.New("an lwwregister delta without a value")
	}
	r.value = l.GetValue()
	return nil
}

func (r *LWWRegister) delta() *protocol.CrdtDelta {
	if !r.set {
		return nil
	}
	return r.fullDelta()
}

func (r *LWWRegister) fullDelta() *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
		Value: r.value, Clock: protocol.CrdtClock(r.clock), CustomClockValue: r.custom,
	}}}
}

func (r *LWWRegister) commit() { r.set, r.clock, r.custom = false, ClockDefault, 0 }

func (r *LWWRegister) clone(t *crdtTree, parent *ORMap) CRDT {
	n := *r
	n.crdtBase = cloneBase(r.crdtBase, t, parent)
	return &n
}

// Flag is a boolean that can only be switched on.
type Flag struct {
	crdtBase
	value   bool
	enabled bool // switched on since the last commit
}

// Kind returns KindFlag.
func (*Flag) Kind() CRDTKind { return KindFlag }

// Value reports whether the flag is on.
func (f *Flag) Value() bool { return f.value }

// Enable switches the flag on.
func (f *Flag) Enable() {
	if !beginWrite(f) {
		return
	}
	if !f.value {
		f.value, f.enabled = true, true
	}
}

func (f *Flag) applyDelta(d *protocol.CrdtDelta) error {
	fd := d.GetFlag()
	if fd == nil {
		return wrongDelta(f, d)
	}
	f.value = f.value || fd.GetValue()
	return nil
}

func (f *Flag) delta() *protocol.CrdtDelta {
	if !f.enabled {
		return nil
	}
	return f.fullDelta()
}

func (f *Flag) fullDelta() *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: f.value}}}
}

func (f *Flag) commit() { f.enabled = false }

func (f *Flag) clone(t *crdtTree, parent *ORMap) CRDT {
	n := *f
	n.crdtBase = cloneBase(f.crdtBase, t, parent)
	return &n
}

// Vote is a vote of every node of the proxy's cluster: this node's vote is
// the function's to set, and the proxy tells how many nodes there are and
// how many vote yes.
type Vote struct {
	crdtBase
	self     bool
	known    bool // self as the proxy knows it
	votesFor int32
	total    int32
}

// Kind returns KindVote.
func (*Vote) Kind() CRDTKind { return KindVote }

// SelfVote returns this node's vote.
func (v *Vote) SelfVote() bool { return v.self }

// VotesFor returns the number of nodes voting yes, this one included.
func (v *Vote) VotesFor() int32 { return v.votesFor }

// TotalVoters returns the number of nodes.
func (v *Vote) TotalVoters() int32 { return v.total }

// AtLeastOne reports whether at least one node votes yes.
func (v *Vote) AtLeastOne() bool { return v.votesFor > 0 }

// Majority reports whether more than half of the nodes vote yes.
func (v *Vote) Majority() bool { return v.votesFor > v.total/2 }

// All reports whether every node votes yes.
func (v *Vote) All() bool { return v.votesFor == v.total }

// Vote sets this node's vote.
func (v *Vote) Vote(vote bool) {
	if !beginWrite(v) {
		return
	}
	if vote == v.self {
		return
	}
	v.self = vote
	if vote {
		v.votesFor++
	} else {
		v.votesFor--
	}
}

func (v *Vote) applyDelta(d *protocol.CrdtDelta) error {
	vd := d.GetVote()
	if vd == nil {
		return wrongDelta(v, d)
	}
	// The proxy always sends all three fields.
	v.self, v.known, v.votesFor, v.total = vd.GetSelfVote(), vd.GetSelfVote(), vd.GetVotesFor(), vd.GetTotalVoters()
	return nil
}

func (v *Vote) delta() *protocol.CrdtDelta {
	if v.self == v.known {
		return nil
	}
	return v.fullDelta()
}

// fullDelta carries only self_vote: the proxy ignores the other fields from
// the function.
func (v *Vote) fullDelta() *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: v.self}}}
}

func (v *Vote) commit() { v.known = v.self }

func (v *Vote) clone(t *crdtTree, parent *ORMap) CRDT {
	n := *v
	n.crdtBase = cloneBase(v.crdtBase, t, parent)
	return &n
}
