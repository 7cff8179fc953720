package presence_test

import (
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/presence/presence"
	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func voteDelta(self bool) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self}}}
}

func connect(t *testing.T, e *testkit.CRDT) *testkit.CRDTStream[*emptypb.Empty] {
	t.Helper()
	s, err := testkit.StreamCRDT[*emptypb.Empty](e, "Connect", &pb.User{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Result.Failure != nil || !s.Open() {
		t.Fatalf("connect: %+v, open %v", s.Result, s.Open())
	}
	return s
}

func cancel(t *testing.T, s *testkit.CRDTStream[*emptypb.Empty]) *testkit.CRDTCancelResult {
	t.Helper()
	res, err := s.Cancel()
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// expectStatus checks the statuses the monitor received since last time.
func expectStatus(t *testing.T, m *testkit.CRDTStream[*pb.OnlineStatus], want ...bool) {
	t.Helper()
	replies, err := m.Replies()
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != len(want) {
		t.Fatalf("monitor got %v, want %v", replies, want)
	}
	for i, r := range replies {
		if r.GetOnline() != want[i] {
			t.Fatalf("monitor got %v, want %v", replies, want)
		}
	}
}

func TestConnectionsVote(t *testing.T) {
	e, err := testkit.NewCRDT(presence.New(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	m, err := testkit.StreamCRDT[*pb.OnlineStatus](e, "Monitor", &pb.User{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m.Result.Reply, &pb.OnlineStatus{Online: false}) || m.Result.Delta != nil || !m.Open() {
		t.Fatalf("monitor: %+v", m.Result)
	}

	// The first connection votes yes; the monitor hears of it.
	c1 := connect(t, e)
	if !proto.Equal(c1.Result.Delta, voteDelta(true)) {
		t.Fatalf("first connect sent %v", c1.Result.Delta)
	}
	expectStatus(t, m, true)

	// A second connection changes nothing, and neither does closing one of
	// two.
	c2 := connect(t, e)
	if c2.Result.Delta != nil {
		t.Fatalf("second connect sent %v", c2.Result.Delta)
	}
	if res := cancel(t, c1); res.Delta != nil {
		t.Fatalf("closing one of two connections sent %v", res.Delta)
	}
	expectStatus(t, m)

	// Closing the last connection withdraws the vote.
	if res := cancel(t, c2); !proto.Equal(res.Delta, voteDelta(false)) {
		t.Fatalf("closing the last connection sent %v", res.Delta)
	}
	expectStatus(t, m, false)
	if v := e.State().(*sdk.Vote); v.SelfVote() || v.VotesFor() != 0 {
		t.Fatalf("vote %v/%d", v.SelfVote(), v.VotesFor())
	}
}

func TestOtherNodes(t *testing.T) {
	e, err := testkit.NewCRDT(presence.New(), "bob",
		testkit.WithCRDTValue(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{VotesFor: 1, TotalVoters: 3}}}))
	if err != nil {
		t.Fatal(err)
	}
	m, err := testkit.StreamCRDT[*pb.OnlineStatus](e, "Monitor", &pb.User{Name: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if !m.Result.Reply.GetOnline() {
		t.Fatal("bob is connected on another node but shows offline")
	}
	// Another node votes too: still online, no message.
	if err := e.Delta(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{VotesFor: 2, TotalVoters: 3}}}); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, m)
	// Both leave.
	if err := e.Delta(&protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{TotalVoters: 3}}}); err != nil {
		t.Fatal(err)
	}
	expectStatus(t, m, false)
	// Cancelling the monitor changes nothing.
	res, err := m.Cancel()
	if err != nil || res.Delta != nil {
		t.Fatalf("cancel monitor: %+v, %v", res, err)
	}
}
