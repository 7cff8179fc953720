package crdt

import (
	"fmt"
	"math"
	"strings"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// LWWRegister is a last-writer-wins register: the value with the highest
// timestamp wins a merge; equal timestamps are broken by the writing node's
// id, then by the value, so every replica picks the same winner. The zero
// value is a register that was never written (it reads as the empty Key).
type LWWRegister struct {
	set   bool // false until the first write
	value Key
	ts    int64
	node  string
}

var _ CRDT = (*LWWRegister)(nil)

// Kind returns KindLWWRegister.
func (*LWWRegister) Kind() Kind { return KindLWWRegister }

// Apply writes the delta's value at r.Node with a timestamp chosen by the
// delta's clock, from the current timestamp cur (0 before the first write)
// and now = r.Now():
//
//	DEFAULT (and unknown clocks)  max(now, cur+1)
//	REVERSE                       min(-now, cur-1)
//	CUSTOM                        custom_clock_value
//	CUSTOM_AUTO_INCREMENT         custom_clock_value if greater than cur, else cur+1
//
// As in the reference, the write replaces the local value even when its
// timestamp is lower (possible with CUSTOM); merges then pick the highest.
func (g *LWWRegister) Apply(r Replica, d *protocol.CrdtDelta) error { return g.apply(r.op(), d) }

func (g *LWWRegister) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindLWWRegister, d); err != nil {
		return err
	}
	ld := d.GetLwwregister()
	if ld.GetValue() == nil {
		return fmt.Errorf("%w: lwwregister delta without a value", ErrInvalidDelta)
	}
	cur := g.ts
	var ts int64
	switch ld.GetClock() {
	case protocol.CrdtClock_REVERSE:
		ts = min(negate(o.now()), decr(cur))
	case protocol.CrdtClock_CUSTOM:
		ts = ld.GetCustomClockValue()
	case protocol.CrdtClock_CUSTOM_AUTO_INCREMENT:
		// CRDT-6/REF-2: bump whenever the custom value is not newer, not only
		// when equal as the proto comment says.
		ts = ld.GetCustomClockValue()
		if ts <= cur {
			ts = incr(cur)
		}
	default:
		ts = max(o.now(), incr(cur))
	}
	*g = LWWRegister{set: true, value: KeyOf(ld.GetValue()), ts: ts, node: o.node}
	return nil
}

// incr, decr and negate saturate instead of wrapping around.
func incr(t int64) int64 {
	if t == math.MaxInt64 {
		return t
	}
	return t + 1
}

func decr(t int64) int64 {
	if t == math.MinInt64 {
		return t
	}
	return t - 1
}

func negate(t int64) int64 {
	if t == math.MinInt64 {
		return math.MaxInt64
	}
	return -t
}

// Merge keeps the later write.
func (g *LWWRegister) Merge(other CRDT) error {
	o, ok := other.(*LWWRegister)
	if !ok {
		return mergeMismatch(KindLWWRegister, other)
	}
	if g.before(o) {
		*g = *o
	}
	return nil
}

// before orders writes by timestamp, then node id, then value; any write is
// after no write.
func (g *LWWRegister) before(o *LWWRegister) bool {
	if g.set != o.set {
		return o.set
	}
	if g.ts != o.ts {
		return g.ts < o.ts
	}
	if c := strings.Compare(g.node, o.node); c != 0 {
		return c < 0
	}
	return g.value.Compare(o.value) < 0
}

// View returns the value.
func (g *LWWRegister) View(Replica) View { return LWWRegisterView(g.value) }

// Clone returns a copy.
func (g *LWWRegister) Clone() CRDT {
	c := *g
	return &c
}

// MarshalState serializes the register's state.
func (g *LWWRegister) MarshalState() ([]byte, error) { return marshalState(g) }

func (g *LWWRegister) state() *crdtpb.State {
	pb := &crdtpb.LWWRegister{Set: g.set}
	if g.set {
		pb.Value, pb.Timestamp, pb.Node = payloadPB(g.value), g.ts, []byte(g.node)
	}
	return &crdtpb.State{State: &crdtpb.State_Lwwregister{Lwwregister: pb}}
}

// Flag is a boolean that can only be switched on; merge is OR. The zero value
// is off.
type Flag struct {
	enabled bool
}

var _ CRDT = (*Flag)(nil)

// Kind returns KindFlag.
func (*Flag) Kind() Kind { return KindFlag }

// Apply switches the flag on for value = true. Value = false is accepted on
// a flag that is off (no change) and rejected on one that is on.
func (f *Flag) Apply(r Replica, d *protocol.CrdtDelta) error { return f.apply(r.op(), d) }

func (f *Flag) apply(_ op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindFlag, d); err != nil {
		return err
	}
	if d.GetFlag().GetValue() {
		f.enabled = true
	} else if f.enabled {
		return fmt.Errorf("%w: a flag cannot be switched off", ErrInvalidDelta)
	}
	return nil
}

// Merge switches the flag on if other is on.
func (f *Flag) Merge(other CRDT) error {
	o, ok := other.(*Flag)
	if !ok {
		return mergeMismatch(KindFlag, other)
	}
	f.enabled = f.enabled || o.enabled
	return nil
}

// View returns the flag's value.
func (f *Flag) View(Replica) View { return FlagView(f.enabled) }

// Clone returns a copy.
func (f *Flag) Clone() CRDT { return &Flag{enabled: f.enabled} }

// MarshalState serializes the flag's state.
func (f *Flag) MarshalState() ([]byte, error) { return marshalState(f) }

func (f *Flag) state() *crdtpb.State {
	return &crdtpb.State{State: &crdtpb.State_Flag{Flag: &crdtpb.Flag{Enabled: f.enabled}}}
}
