package crdt

import (
	"cmp"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
)

// UnmarshalState decodes a CRDT's replicated state written by MarshalState
// (crdtpb.State). It accepts only the canonical form MarshalState writes
// and returns an error wrapping ErrCorruptState for anything else.
func UnmarshalState(b []byte) (CRDT, error) {
	var pb crdtpb.State
	if err := proto.Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorruptState, err)
	}
	return fromState(&pb)
}

// marshalState encodes c's state deterministically: lists are sorted and
// the encoding fixed, so equal states give equal bytes.
func marshalState(c CRDT) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.state())
	if err != nil {
		return nil, fmt.Errorf("crdt: marshal %s state: %w", c.Kind(), err)
	}
	return b, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorruptState}, args...)...)
}

func fromState(s *crdtpb.State) (CRDT, error) {
	switch x := s.GetState().(type) {
	case *crdtpb.State_Gcounter:
		counts, err := countersFrom(x.Gcounter.GetCounts())
		return &GCounter{counts: counts}, err
	case *crdtpb.State_Pncounter:
		p, err := countersFrom(x.Pncounter.GetIncrements().GetCounts())
		if err != nil {
			return nil, err
		}
		n, err := countersFrom(x.Pncounter.GetDecrements().GetCounts())
		return &PNCounter{p: GCounter{p}, n: GCounter{n}}, err
	case *crdtpb.State_Gset:
		keys, err := keysFrom(x.Gset.GetElements())
		if err != nil {
			return nil, err
		}
		s := &GSet{}
		for _, k := range keys {
			s.add(k)
		}
		return s, nil
	case *crdtpb.State_Orset:
		return orsetFrom(x.Orset)
	case *crdtpb.State_Lwwregister:
		return lwwFrom(x.Lwwregister)
	case *crdtpb.State_Flag:
		return &Flag{enabled: x.Flag.GetEnabled()}, nil
	case *crdtpb.State_Ormap:
		return ormapFrom(x.Ormap)
	case *crdtpb.State_Vote:
		votes, err := countersFrom(x.Vote.GetVotes())
		return &Vote{votes: votes}, err
	}
	return nil, corrupt("no CRDT in state")
}

// countersFrom decodes a per-node counter list: sorted by node, unique,
// no zero counters.
func countersFrom(list []*crdtpb.NodeCounter) (map[string]uint64, error) {
	if len(list) == 0 {
		return nil, nil
	}
	m := make(map[string]uint64, len(list))
	for i, c := range list {
		if c.GetCounter() == 0 {
			return nil, corrupt("zero counter for node %q", c.GetNode())
		}
		if i > 0 && string(list[i-1].GetNode()) >= string(c.GetNode()) {
			return nil, corrupt("counters not sorted by node at %q", c.GetNode())
		}
		m[string(c.GetNode())] = c.GetCounter()
	}
	return m, nil
}

func countersPB(m map[string]uint64) []*crdtpb.NodeCounter {
	if len(m) == 0 {
		return nil
	}
	out := make([]*crdtpb.NodeCounter, 0, len(m))
	for n, c := range m {
		out = append(out, &crdtpb.NodeCounter{Node: []byte(n), Counter: c})
	}
	slices.SortFunc(out, func(a, b *crdtpb.NodeCounter) int { return cmp.Compare(string(a.Node), string(b.Node)) })
	return out
}

func payloadPB(k Key) *crdtpb.Payload {
	return &crdtpb.Payload{TypeUrl: []byte(k.TypeURL), Value: []byte(k.Value)}
}

func keyFrom(p *crdtpb.Payload) (Key, error) {
	if p == nil {
		return Key{}, corrupt("missing element or key")
	}
	return Key{TypeURL: string(p.GetTypeUrl()), Value: string(p.GetValue())}, nil
}

// keysFrom decodes a strictly sorted list of payloads.
func keysFrom(list []*crdtpb.Payload) ([]Key, error) {
	keys := make([]Key, len(list))
	for i, p := range list {
		k, err := keyFrom(p)
		if err != nil {
			return nil, err
		}
		if i > 0 && keys[i-1].Compare(k) >= 0 {
			return nil, corrupt("elements not sorted at %s", keyLabel(k))
		}
		keys[i] = k
	}
	return keys, nil
}

func dotsPB(ds []dot) []*crdtpb.NodeCounter {
	out := make([]*crdtpb.NodeCounter, len(ds))
	for i, d := range ds {
		out[i] = &crdtpb.NodeCounter{Node: []byte(d.node), Counter: d.counter}
	}
	return out
}

// checkDot validates the i-th dot of a list: non-zero, after the previous
// one, and seen by the context.
func checkDot(d, prev dot, i int, ctx vv) error {
	switch {
	case d.counter == 0:
		return corrupt("zero dot counter for node %q", d.node)
	case i > 0 && compareDots(prev, d) >= 0:
		return corrupt("dots not sorted at %q:%d", d.node, d.counter)
	case !ctx.covers(d):
		return corrupt("dot %q:%d not in the context", d.node, d.counter)
	}
	return nil
}

func orsetFrom(pb *crdtpb.ORSet) (*ORSet, error) {
	ctx, err := countersFrom(pb.GetContext())
	if err != nil {
		return nil, err
	}
	s := &ORSet{ctx: ctx}
	var prevKey Key
	for i, e := range pb.GetElements() {
		k, err := keyFrom(e.GetElement())
		if err != nil {
			return nil, err
		}
		if i > 0 && prevKey.Compare(k) >= 0 {
			return nil, corrupt("orset elements not sorted at %s", keyLabel(k))
		}
		prevKey = k
		if len(e.GetDots()) == 0 {
			return nil, corrupt("orset element %s without dots", keyLabel(k))
		}
		ds := make([]dot, len(e.GetDots()))
		for j, pd := range e.GetDots() {
			ds[j] = dot{string(pd.GetNode()), pd.GetCounter()}
			if err := checkDot(ds[j], ds[max(j-1, 0)], j, ctx); err != nil {
				return nil, err
			}
		}
		if s.elems == nil {
			s.elems = make(map[Key][]dot, len(pb.GetElements()))
		}
		s.elems[k] = ds
	}
	return s, nil
}

func lwwFrom(pb *crdtpb.LWWRegister) (*LWWRegister, error) {
	if !pb.GetSet() {
		if pb.GetValue() != nil || pb.GetTimestamp() != 0 || len(pb.GetNode()) != 0 {
			return nil, corrupt("unset lwwregister with a write")
		}
		return &LWWRegister{}, nil
	}
	k, err := keyFrom(pb.GetValue())
	if err != nil {
		return nil, err
	}
	return &LWWRegister{set: true, value: k, ts: pb.GetTimestamp(), node: string(pb.GetNode())}, nil
}

func ormapFrom(pb *crdtpb.ORMap) (*ORMap, error) {
	ctx, err := countersFrom(pb.GetContext())
	if err != nil {
		return nil, err
	}
	m := &ORMap{ctx: ctx}
	var prevKey Key
	for i, e := range pb.GetEntries() {
		k, err := keyFrom(e.GetKey())
		if err != nil {
			return nil, err
		}
		if i > 0 && prevKey.Compare(k) >= 0 {
			return nil, corrupt("ormap keys not sorted at %s", keyLabel(k))
		}
		prevKey = k
		if len(e.GetDots()) == 0 {
			return nil, corrupt("ormap %s without dots", keyLabel(k))
		}
		ds := make([]valueDot, len(e.GetDots()))
		for j, pd := range e.GetDots() {
			ds[j].dot = dot{string(pd.GetNode()), pd.GetCounter()}
			if err := checkDot(ds[j].dot, ds[max(j-1, 0)].dot, j, ctx); err != nil {
				return nil, err
			}
			if ds[j].value, err = fromState(pd.GetValue()); err != nil {
				return nil, fmt.Errorf("ormap %s: %w", keyLabel(k), err)
			}
		}
		if m.entries == nil {
			m.entries = make(map[Key]*mapEntry, len(pb.GetEntries()))
		}
		m.entries[k] = newEntry(ds)
	}
	return m, nil
}
