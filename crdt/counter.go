package crdt

import (
	"fmt"
	"maps"
	"math"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// GCounter is a grow-only counter: one count per node, merged by taking each
// node's maximum; the value is the sum of the counts (modulo 2^64, as the
// user function's uint64 holds it). The zero value is an empty counter.
type GCounter struct {
	counts map[string]uint64 // no zero counts
}

var _ CRDT = (*GCounter)(nil)

// Kind returns KindGCounter.
func (*GCounter) Kind() Kind { return KindGCounter }

// Value returns the sum of all nodes' counts.
func (g *GCounter) Value() uint64 {
	var sum uint64
	for _, c := range g.counts {
		sum += c
	}
	return sum
}

// Apply adds the delta's increment to r.Node's count. An increment of 2^63
// or more is rejected (the reference's signed 64-bit limit), as is one that
// overflows the node's count.
func (g *GCounter) Apply(r Replica, d *protocol.CrdtDelta) error { return g.apply(r.op(), d) }

func (g *GCounter) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindGCounter, d); err != nil {
		return err
	}
	inc := d.GetGcounter().GetIncrement()
	if inc > math.MaxInt64 {
		return fmt.Errorf("%w: gcounter increment %d is 2^63 or more", ErrInvalidDelta, inc)
	}
	return g.add(o.node, inc)
}

// add adds n to node's count, refusing to overflow it.
func (g *GCounter) add(node string, n uint64) error {
	if n == 0 {
		return nil
	}
	cur := g.counts[node]
	if cur+n < cur {
		return fmt.Errorf("%w: count of node %q overflows", ErrInvalidDelta, node)
	}
	if g.counts == nil {
		g.counts = make(map[string]uint64, 1)
	}
	g.counts[node] = cur + n
	return nil
}

// Merge takes, per node, the larger count.
func (g *GCounter) Merge(other CRDT) error {
	o, ok := other.(*GCounter)
	if !ok {
		return mergeMismatch(KindGCounter, other)
	}
	g.join(o)
	return nil
}

func (g *GCounter) join(o *GCounter) {
	for n, c := range o.counts {
		if c > g.counts[n] {
			if g.counts == nil {
				g.counts = make(map[string]uint64, len(o.counts))
			}
			g.counts[n] = c
		}
	}
}

// View returns GCounterView(Value()).
func (g *GCounter) View(Replica) View { return GCounterView(g.Value()) }

// Clone returns a deep copy.
func (g *GCounter) Clone() CRDT { return &GCounter{counts: maps.Clone(g.counts)} }

// MarshalState serializes the counter's state.
func (g *GCounter) MarshalState() ([]byte, error) { return marshalState(g) }

func (g *GCounter) state() *crdtpb.State {
	return &crdtpb.State{State: &crdtpb.State_Gcounter{Gcounter: g.pb()}}
}

func (g *GCounter) pb() *crdtpb.GCounter { return &crdtpb.GCounter{Counts: countersPB(g.counts)} }

// PNCounter is a counter that can go up and down: two grow-only counters of
// increments (P) and decrements (N); the value is P − N (wrapping, as the
// user function's int64 does). The zero value is an empty counter.
type PNCounter struct {
	p, n GCounter
}

var _ CRDT = (*PNCounter)(nil)

// Kind returns KindPNCounter.
func (*PNCounter) Kind() Kind { return KindPNCounter }

// Value returns the increments minus the decrements.
func (c *PNCounter) Value() int64 { return int64(c.p.Value() - c.n.Value()) }

// Apply adds the delta's signed change at r.Node.
func (c *PNCounter) Apply(r Replica, d *protocol.CrdtDelta) error { return c.apply(r.op(), d) }

func (c *PNCounter) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindPNCounter, d); err != nil {
		return err
	}
	change := d.GetPncounter().GetChange()
	if change >= 0 {
		return c.p.add(o.node, uint64(change))
	}
	// -change overflows int64 for math.MinInt64; its magnitude fits uint64.
	return c.n.add(o.node, uint64(-(change+1))+1)
}

// Merge merges the increments and the decrements separately.
func (c *PNCounter) Merge(other CRDT) error {
	o, ok := other.(*PNCounter)
	if !ok {
		return mergeMismatch(KindPNCounter, other)
	}
	c.p.join(&o.p)
	c.n.join(&o.n)
	return nil
}

// View returns PNCounterView(Value()).
func (c *PNCounter) View(Replica) View { return PNCounterView(c.Value()) }

// Clone returns a deep copy.
func (c *PNCounter) Clone() CRDT {
	return &PNCounter{p: GCounter{maps.Clone(c.p.counts)}, n: GCounter{maps.Clone(c.n.counts)}}
}

// MarshalState serializes the counter's state.
func (c *PNCounter) MarshalState() ([]byte, error) { return marshalState(c) }

func (c *PNCounter) state() *crdtpb.State {
	return &crdtpb.State{State: &crdtpb.State_Pncounter{Pncounter: &crdtpb.PNCounter{
		Increments: c.p.pb(), Decrements: c.n.pb(),
	}}}
}
