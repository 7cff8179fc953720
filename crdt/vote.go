package crdt

import (
	"fmt"
	"maps"
	"math"

	"github.com/cloudstate-go/cloudstate/crdt/crdtpb"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Vote records each node's yes/no vote as a counter that is bumped when the
// node changes its mind: an odd counter is a yes. Merge takes each node's
// maximum, so the latest vote of every node wins. Which nodes count is not
// part of the state: View takes the cluster members from its Replica. The
// zero value has no votes.
type Vote struct {
	votes map[string]uint64 // no zero counters
}

var _ CRDT = (*Vote)(nil)

// Kind returns KindVote.
func (*Vote) Kind() Kind { return KindVote }

// Apply sets r.Node's vote to the delta's self_vote, bumping its counter only
// if the vote changes. votes_for and total_voters are ignored.
func (v *Vote) Apply(r Replica, d *protocol.CrdtDelta) error { return v.apply(r.op(), d) }

func (v *Vote) apply(o op, d *protocol.CrdtDelta) error {
	if err := checkKind(KindVote, d); err != nil {
		return err
	}
	cur := v.votes[o.node]
	if yes := cur%2 == 1; yes == d.GetVote().GetSelfVote() {
		return nil
	}
	if cur == math.MaxUint64 {
		return fmt.Errorf("%w: vote counter of node %q overflows", ErrInvalidDelta, o.node)
	}
	if v.votes == nil {
		v.votes = make(map[string]uint64, 1)
	}
	v.votes[o.node] = cur + 1
	return nil
}

// Merge takes, per node, the larger counter.
func (v *Vote) Merge(other CRDT) error {
	o, ok := other.(*Vote)
	if !ok {
		return mergeMismatch(KindVote, other)
	}
	for n, c := range o.votes {
		if c > v.votes[n] {
			if v.votes == nil {
				v.votes = make(map[string]uint64, len(o.votes))
			}
			v.votes[n] = c
		}
	}
	return nil
}

// View returns r.Node's vote and the tally over r.Members (or r.Node alone
// when Members is empty).
func (v *Vote) View(r Replica) View {
	view := VoteView{SelfVote: v.votes[r.Node]%2 == 1}
	members := r.Members
	if len(members) == 0 {
		members = []string{r.Node}
	}
	for _, m := range members {
		if v.votes[m]%2 == 1 {
			view.VotesFor++
		}
	}
	view.TotalVoters = int32(min(len(members), math.MaxInt32))
	return view
}

// Clone returns a deep copy.
func (v *Vote) Clone() CRDT { return &Vote{votes: maps.Clone(v.votes)} }

// MarshalState serializes the vote's state.
func (v *Vote) MarshalState() ([]byte, error) { return marshalState(v) }

func (v *Vote) state() *crdtpb.State {
	return &crdtpb.State{State: &crdtpb.State_Vote{Vote: &crdtpb.Vote{Votes: countersPB(v.votes)}}}
}
