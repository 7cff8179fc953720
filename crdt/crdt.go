package crdt

import (
	"errors"
	"fmt"
	"time"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Errors returned by this package, wrapped with context; test with errors.Is.
var (
	// ErrEmptyDelta: a delta (or an ORMap entry's delta) has no type set.
	ErrEmptyDelta = errors.New("crdt: empty delta")
	// ErrWrongKind: a delta or a replica's state is of another CRDT type.
	ErrWrongKind = errors.New("crdt: wrong CRDT type")
	// ErrInvalidDelta: a delta cannot be applied (GCounter increment of 2^63 or
	// more, a counter overflow, switching a flag off, a missing key or value).
	ErrInvalidDelta = errors.New("crdt: invalid delta")
	// ErrDecrease: a grow-only value shrank, which no delta can express.
	ErrDecrease = errors.New("crdt: grow-only value decreased")
	// ErrCorruptState: serialized state is malformed or not canonical.
	ErrCorruptState = errors.New("crdt: corrupt state")
)

// Kind is a CRDT type. Its values are the field numbers of the matching
// CrdtDelta oneof case, so Kind(n) names the same type on the wire.
type Kind int

// The CRDT types of the Cloudstate protocol.
const (
	KindGCounter    Kind = 1
	KindPNCounter   Kind = 2
	KindGSet        Kind = 3
	KindORSet       Kind = 4
	KindLWWRegister Kind = 5
	KindFlag        Kind = 6
	KindORMap       Kind = 7
	KindVote        Kind = 8
)

var kindNames = [...]string{"", "GCounter", "PNCounter", "GSet", "ORSet", "LWWRegister", "Flag", "ORMap", "Vote"}

// String returns the type's name as the protocol spells it, e.g. "ORSet".
func (k Kind) String() string {
	if k > 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// KindOf returns the CRDT type a delta applies to, or 0 for an empty delta.
func KindOf(d *protocol.CrdtDelta) Kind {
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

// Replica describes the node that holds a CRDT: who records a local update,
// with which clock, and which cluster members a Vote counts.
type Replica struct {
	// Node is this node's replica id; local updates are recorded under it.
	Node string
	// Now returns wall-clock milliseconds since the epoch for LWWRegister
	// timestamps; nil means time.Now.
	Now func() int64
	// Members are the distinct ids of the cluster members that are up,
	// for Vote's total_voters and votes_for. Empty means just Node.
	Members []string
}

func (r Replica) op() op {
	now := r.Now
	if now == nil {
		now = wallClock
	}
	return op{node: r.Node, now: now}
}

func wallClock() int64 { return time.Now().UnixMilli() }

// op is one local update as seen by a (possibly nested) CRDT.
type op struct {
	node string
	now  func() int64
	// dot is the counter of the enclosing ORMap's dot for this update, or 0 at
	// the top level. Nested ORSets and ORMaps tag their own elements with it
	// instead of a counter of their own, so a key that is removed and created
	// again never reuses a dot of its previous incarnation.
	dot uint64
}

// CRDT is the replicated state of one CRDT, owned by the proxy.
//
// Implementations are the pointer types of this package (*GCounter, *ORMap,
// ...). They are not safe for concurrent use: one goroutine (the entity that
// owns the CRDT) calls every method. None of them retains or mutates the
// protobuf messages or the other CRDT passed in.
type CRDT interface {
	// Kind returns the CRDT's type.
	Kind() Kind
	// Apply applies an update the user function made, recorded as done by
	// r.Node. On error the state is unchanged.
	Apply(r Replica, d *protocol.CrdtDelta) error
	// Merge joins another replica's state of the same type into this one.
	// Merge is commutative, associative and idempotent.
	Merge(other CRDT) error
	// View returns the value as a user function on r sees it.
	View(r Replica) View
	// Clone returns a deep copy.
	Clone() CRDT
	// MarshalState serializes the full replicated state (see UnmarshalState).
	MarshalState() ([]byte, error)

	apply(o op, d *protocol.CrdtDelta) error
	state() *crdtpb.State
}

// New returns an empty CRDT of kind k.
func New(k Kind) (CRDT, error) {
	switch k {
	case KindGCounter:
		return &GCounter{}, nil
	case KindPNCounter:
		return &PNCounter{}, nil
	case KindGSet:
		return &GSet{}, nil
	case KindORSet:
		return &ORSet{}, nil
	case KindLWWRegister:
		return &LWWRegister{}, nil
	case KindFlag:
		return &Flag{}, nil
	case KindORMap:
		return &ORMap{}, nil
	case KindVote:
		return &Vote{}, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %d", ErrWrongKind, int(k))
}

// FromDelta creates the CRDT a user function's first update implies: its
// type is the delta's type, and the delta is applied at r.Node.
func FromDelta(r Replica, d *protocol.CrdtDelta) (CRDT, error) {
	return create(r.op(), d)
}

func create(o op, d *protocol.CrdtDelta) (CRDT, error) {
	k := KindOf(d)
	if k == 0 {
		return nil, ErrEmptyDelta
	}
	c, err := New(k)
	if err != nil {
		return nil, err
	}
	if err := c.apply(o, d); err != nil {
		return nil, err
	}
	return c, nil
}

// checkKind rejects an empty delta or one for another type than want.
func checkKind(want Kind, d *protocol.CrdtDelta) error {
	got := KindOf(d)
	if got == 0 {
		return ErrEmptyDelta
	}
	if got != want {
		return fmt.Errorf("%w: %s delta for a %s", ErrWrongKind, got, want)
	}
	return nil
}

func mergeMismatch(want Kind, other CRDT) error {
	if other == nil {
		return fmt.Errorf("%w: merge %s with nil", ErrWrongKind, want)
	}
	return fmt.Errorf("%w: merge %s with %s", ErrWrongKind, want, other.Kind())
}
