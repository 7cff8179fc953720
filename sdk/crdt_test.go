package sdk_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/crdtmodel"
	pb "github.com/cloudstate-go/cloudstate/sdk/internal/crdtpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// crdtStream is one Crdt/handle stream to the server.
type crdtStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[protocol.CrdtStreamIn, protocol.CrdtStreamOut]
}

func (ts *testServer) openCRDT(t *testing.T) *crdtStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := protocol.NewCrdtClient(ts.conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &crdtStream{t: t, stream: stream}
}

func (s *crdtStream) send(in *protocol.CrdtStreamIn) {
	s.t.Helper()
	if err := s.stream.Send(in); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// init opens the model entity id with the value delta (nil: no CRDT yet).
func (s *crdtStream) init(id string, delta *protocol.CrdtDelta) {
	s.t.Helper()
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{
		ServiceName: crdtmodel.ServiceName, EntityId: id, Delta: delta,
	}}})
}

func (s *crdtStream) delta(d *protocol.CrdtDelta) {
	s.t.Helper()
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delta{Delta: d}})
}

func (s *crdtStream) command(id string, cmdID int64, name string, in proto.Message, streamed bool) {
	s.t.Helper()
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
		EntityId: id, Id: cmdID, Name: name, Payload: mustAny(s.t, in), Streamed: streamed,
	}}})
}

// process sends Process with actions to entity id.
func (s *crdtStream) process(id string, cmdID int64, actions ...*pb.RequestAction) {
	s.t.Helper()
	s.command(id, cmdID, "Process", &pb.Request{Id: id, Actions: actions}, false)
}

func (s *crdtStream) cancel(id string, cmdID int64) {
	s.t.Helper()
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_StreamCancelled{StreamCancelled: &protocol.StreamCancelled{
		EntityId: id, Id: cmdID,
	}}})
}

func (s *crdtStream) expect(want *protocol.CrdtStreamOut) {
	s.t.Helper()
	got, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v (want %s)", err, prototext.Format(want))
	}
	if !proto.Equal(got, want) {
		s.t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

// expectReply expects the reply to command cmdID with the model's state and
// the state action.
func (s *crdtStream) expectReply(cmdID int64, state *pb.State, action *protocol.CrdtStateAction) {
	s.t.Helper()
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: cmdID, ClientAction: stateReply(s.t, state), StateAction: action}))
}

func (s *crdtStream) expectEnd(clean bool) {
	s.t.Helper()
	out, err := s.stream.Recv()
	switch {
	case err == nil:
		s.t.Fatalf("want end of stream, got %s", prototext.Format(out))
	case clean && !errors.Is(err, io.EOF):
		s.t.Fatalf("want a clean end of stream, got %v", err)
	case !clean && errors.Is(err, io.EOF):
		s.t.Fatalf("want the stream to end with an error, got a clean end")
	}
}

func crdtReply(r *protocol.CrdtReply) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: r}}
}

func crdtStreamed(m *protocol.CrdtStreamedMessage) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{StreamedMessage: m}}
}

func crdtCancelled(r *protocol.CrdtStreamCancelledResponse) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: r}}
}

func stateReply(t *testing.T, state *pb.State) *protocol.ClientAction {
	return clientReply(t, &pb.Response{State: state}, nil)
}

func update(d *protocol.CrdtDelta) *protocol.CrdtStateAction {
	return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: d}}
}

// Model request actions.

func upd(u *pb.Update) *pb.RequestAction {
	return &pb.RequestAction{Action: &pb.RequestAction_Update{Update: u}}
}

func gcounterInc(n uint64) *pb.Update {
	return &pb.Update{Update: &pb.Update_Gcounter{Gcounter: &pb.GCounterUpdate{Increment: n}}}
}

func pncounterChange(n int64) *pb.Update {
	return &pb.Update{Update: &pb.Update_Pncounter{Pncounter: &pb.PNCounterUpdate{Change: n}}}
}

func gsetAdd(e string) *pb.Update {
	return &pb.Update{Update: &pb.Update_Gset{Gset: &pb.GSetUpdate{Add: e}}}
}

func orsetAdd(e string) *pb.Update {
	return &pb.Update{Update: &pb.Update_Orset{Orset: &pb.ORSetUpdate{Action: &pb.ORSetUpdate_Add{Add: e}}}}
}

func orsetRemove(e string) *pb.Update {
	return &pb.Update{Update: &pb.Update_Orset{Orset: &pb.ORSetUpdate{Action: &pb.ORSetUpdate_Remove{Remove: e}}}}
}

func orsetClear() *pb.Update {
	return &pb.Update{Update: &pb.Update_Orset{Orset: &pb.ORSetUpdate{Action: &pb.ORSetUpdate_Clear{Clear: true}}}}
}

func lwwSet(v string, clock pb.LWWRegisterClockType, custom int64) *pb.Update {
	return &pb.Update{Update: &pb.Update_Lwwregister{Lwwregister: &pb.LWWRegisterUpdate{
		Value: v, Clock: &pb.LWWRegisterClock{ClockType: clock, CustomClockValue: custom},
	}}}
}

func flagEnable() *pb.Update { return &pb.Update{Update: &pb.Update_Flag{Flag: &pb.FlagUpdate{}}} }

func ormapAdd(key string) *pb.Update {
	return &pb.Update{Update: &pb.Update_Ormap{Ormap: &pb.ORMapUpdate{Action: &pb.ORMapUpdate_Add{Add: key}}}}
}

func ormapUpdate(key string, u *pb.Update) *pb.Update {
	return &pb.Update{Update: &pb.Update_Ormap{Ormap: &pb.ORMapUpdate{Action: &pb.ORMapUpdate_Update{
		Update: &pb.ORMapEntryUpdate{Key: key, Update: u},
	}}}}
}

func ormapRemove(key string) *pb.Update {
	return &pb.Update{Update: &pb.Update_Ormap{Ormap: &pb.ORMapUpdate{Action: &pb.ORMapUpdate_Remove{Remove: key}}}}
}

func ormapClear() *pb.Update {
	return &pb.Update{Update: &pb.Update_Ormap{Ormap: &pb.ORMapUpdate{Action: &pb.ORMapUpdate_Clear{Clear: true}}}}
}

func voteUpdate(v bool) *pb.Update {
	return &pb.Update{Update: &pb.Update_Vote{Vote: &pb.VoteUpdate{SelfVote: v}}}
}

// Model states.

func gcounterState(v uint64) *pb.State {
	return &pb.State{Value: &pb.State_Gcounter{Gcounter: &pb.GCounterValue{Value: v}}}
}

func pncounterState(v int64) *pb.State {
	return &pb.State{Value: &pb.State_Pncounter{Pncounter: &pb.PNCounterValue{Value: v}}}
}

func gsetState(es ...string) *pb.State {
	return &pb.State{Value: &pb.State_Gset{Gset: &pb.GSetValue{Elements: es}}}
}

func orsetState(es ...string) *pb.State {
	return &pb.State{Value: &pb.State_Orset{Orset: &pb.ORSetValue{Elements: es}}}
}

func lwwState(v string) *pb.State {
	return &pb.State{Value: &pb.State_Lwwregister{Lwwregister: &pb.LWWRegisterValue{Value: v}}}
}

func flagState(v bool) *pb.State {
	return &pb.State{Value: &pb.State_Flag{Flag: &pb.FlagValue{Value: v}}}
}

func ormapState(entries ...*pb.ORMapEntryValue) *pb.State {
	return &pb.State{Value: &pb.State_Ormap{Ormap: &pb.ORMapValue{Entries: entries}}}
}

func entry(key string, s *pb.State) *pb.ORMapEntryValue {
	return &pb.ORMapEntryValue{Key: key, Value: s}
}

func voteState(self bool, votesFor, total int32) *pb.State {
	return &pb.State{Value: &pb.State_Vote{Vote: &pb.VoteValue{SelfVote: self, VotesFor: votesFor, TotalVoters: total}}}
}

// Wire deltas.

func gcounterDelta(n uint64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gcounter{Gcounter: &protocol.GCounterDelta{Increment: n}}}
}

func pncounterDelta(n int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Pncounter{Pncounter: &protocol.PNCounterDelta{Change: n}}}
}

func strs(ss ...string) []*anypb.Any {
	var out []*anypb.Any
	for _, s := range ss {
		out = append(out, sdk.String(s))
	}
	return out
}

func gsetDelta(added ...string) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Gset{Gset: &protocol.GSetDelta{Added: strs(added...)}}}
}

func orsetDelta(cleared bool, removed, added []string) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Orset{Orset: &protocol.ORSetDelta{
		Cleared: cleared, Removed: strs(removed...), Added: strs(added...),
	}}}
}

func lwwDelta(v string, clock protocol.CrdtClock, custom int64) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{
		Value: sdk.String(v), Clock: clock, CustomClockValue: custom,
	}}}
}

func flagDelta() *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Flag{Flag: &protocol.FlagDelta{Value: true}}}
}

func mapEntry(key string, d *protocol.CrdtDelta) *protocol.ORMapEntryDelta {
	return &protocol.ORMapEntryDelta{Key: sdk.String(key), Delta: d}
}

func ormapDelta(cleared bool, removed []string, updated, added []*protocol.ORMapEntryDelta) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Ormap{Ormap: &protocol.ORMapDelta{
		Cleared: cleared, Removed: strs(removed...), Updated: updated, Added: added,
	}}}
}

func voteDelta(self bool, votesFor, total int32) *protocol.CrdtDelta {
	return &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self, VotesFor: votesFor, TotalVoters: total}}}
}

// step is one Process command and what the entity must answer.
type step struct {
	actions []*pb.RequestAction
	state   *pb.State
	delta   *protocol.CrdtDelta // nil: no state action
}

// TestCRDTDeltaEncoding checks, for every CRDT type, the deltas a command
// sends for each kind of change, relative to the value the proxy knows.
func TestCRDTDeltaEncoding(t *testing.T) {
	cases := []struct {
		id    string
		steps []step
	}{{
		id: "GCounter-1",
		steps: []step{
			{[]*pb.RequestAction{upd(gcounterInc(5))}, gcounterState(5), gcounterDelta(5)},
			{[]*pb.RequestAction{upd(gcounterInc(2)), upd(gcounterInc(3))}, gcounterState(10), gcounterDelta(5)},
			{[]*pb.RequestAction{upd(gcounterInc(0))}, gcounterState(10), nil},
			{nil, gcounterState(10), nil},
		},
	}, {
		id: "PNCounter-1",
		steps: []step{
			// A new CRDT is created by its first change, even a zero one.
			{[]*pb.RequestAction{upd(pncounterChange(0))}, pncounterState(0), pncounterDelta(0)},
			{[]*pb.RequestAction{upd(pncounterChange(-7))}, pncounterState(-7), pncounterDelta(-7)},
			{[]*pb.RequestAction{upd(pncounterChange(4)), upd(pncounterChange(-4))}, pncounterState(-7), nil},
		},
	}, {
		id: "GSet-1",
		steps: []step{
			{[]*pb.RequestAction{upd(gsetAdd("b")), upd(gsetAdd("a"))}, gsetState("a", "b"), gsetDelta("a", "b")},
			{[]*pb.RequestAction{upd(gsetAdd("a"))}, gsetState("a", "b"), nil},
			{[]*pb.RequestAction{upd(gsetAdd("c")), upd(gsetAdd("a"))}, gsetState("a", "b", "c"), gsetDelta("c")},
		},
	}, {
		id: "ORSet-1",
		steps: []step{
			{[]*pb.RequestAction{upd(orsetAdd("a")), upd(orsetAdd("b")), upd(orsetAdd("c"))}, orsetState("a", "b", "c"), orsetDelta(false, nil, []string{"a", "b", "c"})},
			{[]*pb.RequestAction{upd(orsetRemove("a")), upd(orsetAdd("d"))}, orsetState("b", "c", "d"), orsetDelta(false, []string{"a"}, []string{"d"})},
			// Removed and added back, added and removed: no change.
			{[]*pb.RequestAction{upd(orsetRemove("b")), upd(orsetAdd("b")), upd(orsetAdd("e")), upd(orsetRemove("e"))}, orsetState("b", "c", "d"), nil},
			{[]*pb.RequestAction{upd(orsetRemove("x"))}, orsetState("b", "c", "d"), nil},
			// A clear then adds: cleared plus every element now there.
			{[]*pb.RequestAction{upd(orsetClear()), upd(orsetAdd("c")), upd(orsetAdd("f"))}, orsetState("c", "f"), orsetDelta(true, nil, []string{"c", "f"})},
			{[]*pb.RequestAction{upd(orsetClear())}, orsetState(), orsetDelta(true, nil, nil)},
			// Clearing what the proxy already has empty changes nothing.
			{[]*pb.RequestAction{upd(orsetAdd("g")), upd(orsetClear())}, orsetState(), nil},
		},
	}, {
		id: "LWWRegister-1",
		steps: []step{
			{[]*pb.RequestAction{upd(lwwSet("one", pb.LWWRegisterClockType_DEFAULT, 0))}, lwwState("one"), lwwDelta("one", protocol.CrdtClock_DEFAULT, 0)},
			{[]*pb.RequestAction{upd(lwwSet("two", pb.LWWRegisterClockType_CUSTOM, 42))}, lwwState("two"), lwwDelta("two", protocol.CrdtClock_CUSTOM, 42)},
			{[]*pb.RequestAction{upd(lwwSet("x", pb.LWWRegisterClockType_REVERSE, 0)), upd(lwwSet("three", pb.LWWRegisterClockType_CUSTOM_AUTO_INCREMENT, 7))}, lwwState("three"), lwwDelta("three", protocol.CrdtClock_CUSTOM_AUTO_INCREMENT, 7)},
			// The same value again still goes out: the write moves the clock.
			{[]*pb.RequestAction{upd(lwwSet("three", pb.LWWRegisterClockType_DEFAULT, 0))}, lwwState("three"), lwwDelta("three", protocol.CrdtClock_DEFAULT, 0)},
		},
	}, {
		id: "Flag-1",
		steps: []step{
			{nil, flagState(false), nil},
			{[]*pb.RequestAction{upd(flagEnable())}, flagState(true), flagDelta()},
			{[]*pb.RequestAction{upd(flagEnable())}, flagState(true), nil},
		},
	}, {
		id: "ORMap-1",
		steps: []step{
			{[]*pb.RequestAction{upd(ormapAdd("GCounter-a")), upd(ormapAdd("LWWRegister-r")), upd(ormapUpdate("ORSet-s", orsetAdd("x")))},
				ormapState(entry("GCounter-a", gcounterState(0)), entry("LWWRegister-r", lwwState("")), entry("ORSet-s", orsetState("x"))),
				// Delta lists are ordered by the keys' bytes (as the proxy
				// orders them): a string's length comes first.
				ormapDelta(false, nil, nil, []*protocol.ORMapEntryDelta{
					mapEntry("ORSet-s", orsetDelta(false, nil, []string{"x"})),
					mapEntry("GCounter-a", gcounterDelta(0)),
					mapEntry("LWWRegister-r", &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: sdk.String("")}}}),
				})},
			{[]*pb.RequestAction{upd(ormapUpdate("GCounter-a", gcounterInc(2))), upd(ormapUpdate("LWWRegister-r", lwwSet("v", pb.LWWRegisterClockType_CUSTOM, 3))), upd(ormapUpdate("Vote-v", voteUpdate(true)))},
				ormapState(entry("GCounter-a", gcounterState(2)), entry("LWWRegister-r", lwwState("v")), entry("ORSet-s", orsetState("x")), entry("Vote-v", voteState(true, 1, 1))),
				ormapDelta(false, nil, []*protocol.ORMapEntryDelta{
					mapEntry("GCounter-a", gcounterDelta(2)),
					mapEntry("LWWRegister-r", lwwDelta("v", protocol.CrdtClock_CUSTOM, 3)),
				}, []*protocol.ORMapEntryDelta{
					mapEntry("Vote-v", &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: true}}}),
				})},
			// Removed then created again: removed and added whole.
			{[]*pb.RequestAction{upd(ormapRemove("GCounter-a")), upd(ormapUpdate("GCounter-a", gcounterInc(1))), upd(ormapRemove("ORSet-s")), upd(ormapAdd("Flag-f")), upd(ormapRemove("Flag-f"))},
				ormapState(entry("GCounter-a", gcounterState(1)), entry("LWWRegister-r", lwwState("v")), entry("Vote-v", voteState(true, 1, 1))),
				ormapDelta(false, []string{"ORSet-s", "GCounter-a"}, nil, []*protocol.ORMapEntryDelta{
					mapEntry("GCounter-a", gcounterDelta(1)),
				})},
			{[]*pb.RequestAction{upd(ormapUpdate("ORMap-n", ormapUpdate("PNCounter-p", pncounterChange(-2))))},
				ormapState(entry("GCounter-a", gcounterState(1)), entry("LWWRegister-r", lwwState("v")),
					entry("ORMap-n", ormapState(entry("PNCounter-p", pncounterState(-2)))), entry("Vote-v", voteState(true, 1, 1))),
				ormapDelta(false, nil, nil, []*protocol.ORMapEntryDelta{
					mapEntry("ORMap-n", ormapDelta(false, nil, nil, []*protocol.ORMapEntryDelta{mapEntry("PNCounter-p", pncounterDelta(-2))})),
				})},
			{[]*pb.RequestAction{upd(ormapUpdate("ORMap-n", ormapUpdate("PNCounter-p", pncounterChange(5))))},
				ormapState(entry("GCounter-a", gcounterState(1)), entry("LWWRegister-r", lwwState("v")),
					entry("ORMap-n", ormapState(entry("PNCounter-p", pncounterState(3)))), entry("Vote-v", voteState(true, 1, 1))),
				ormapDelta(false, nil, []*protocol.ORMapEntryDelta{
					mapEntry("ORMap-n", ormapDelta(false, nil, []*protocol.ORMapEntryDelta{mapEntry("PNCounter-p", pncounterDelta(5))}, nil)),
				}, nil)},
			{[]*pb.RequestAction{upd(ormapClear()), upd(ormapAdd("GSet-g"))},
				ormapState(entry("GSet-g", gsetState())),
				ormapDelta(true, nil, nil, []*protocol.ORMapEntryDelta{mapEntry("GSet-g", gsetDelta())})},
		},
	}, {
		id: "Vote-1",
		steps: []step{
			{nil, voteState(false, 0, 1), nil},
			{[]*pb.RequestAction{upd(voteUpdate(true))}, voteState(true, 1, 1), voteDelta(true, 0, 0)},
			{[]*pb.RequestAction{upd(voteUpdate(true))}, voteState(true, 1, 1), nil},
			{[]*pb.RequestAction{upd(voteUpdate(false))}, voteState(false, 0, 1), voteDelta(false, 0, 0)},
		},
	}}
	ts := startServer(t)
	for _, c := range cases {
		t.Run(c.id, func(t *testing.T) {
			s := ts.openCRDT(t)
			s.init(c.id, nil)
			for i, st := range c.steps {
				s.process(c.id, int64(i+1), st.actions...)
				var action *protocol.CrdtStateAction
				if st.delta != nil {
					action = update(st.delta)
				}
				s.expectReply(int64(i+1), st.state, action)
			}
		})
	}
}

// TestCRDTWriteConsistency checks that the consistency a handler sets goes
// with its state action, an update or a delete.
func TestCRDTWriteConsistency(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GCounter-1", nil)
	u := gcounterInc(1)
	u.WriteConsistency = pb.UpdateWriteConsistency_MAJORITY
	s.process("GCounter-1", 1, upd(u))
	s.expectReply(1, gcounterState(1), &protocol.CrdtStateAction{
		Action:           &protocol.CrdtStateAction_Update{Update: gcounterDelta(1)},
		WriteConsistency: protocol.CrdtWriteConsistency_MAJORITY,
	})
	s.process("GCounter-1", 2, &pb.RequestAction{Action: &pb.RequestAction_Delete{Delete: &pb.Delete{}}}, upd(&pb.Update{
		Update: &pb.Update_Gcounter{Gcounter: &pb.GCounterUpdate{Increment: 1}}, WriteConsistency: pb.UpdateWriteConsistency_ALL,
	}))
	// A delete drops the command's other changes.
	s.expectReply(2, gcounterState(2), &protocol.CrdtStateAction{
		Action:           &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}},
		WriteConsistency: protocol.CrdtWriteConsistency_ALL,
	})
	s.expectEnd(true)
}

// TestCRDTInitAndDeltas starts from an initial value and applies deltas from
// the proxy of every kind to a map.
func TestCRDTInitAndDeltas(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("ORMap-1", ormapDelta(false, nil, nil, []*protocol.ORMapEntryDelta{
		mapEntry("GCounter-a", gcounterDelta(3)),
		mapEntry("ORSet-s", orsetDelta(false, nil, []string{"x", "y"})),
		mapEntry("Vote-v", voteDelta(true, 2, 3)),
	}))
	s.process("ORMap-1", 1)
	s.expectReply(1, ormapState(entry("GCounter-a", gcounterState(3)), entry("ORSet-s", orsetState("x", "y")), entry("Vote-v", voteState(true, 2, 3))), nil)

	s.delta(ormapDelta(false, []string{"GCounter-a"}, []*protocol.ORMapEntryDelta{
		mapEntry("ORSet-s", orsetDelta(false, []string{"x"}, []string{"z"})),
		mapEntry("Vote-v", voteDelta(true, 1, 1)),
	}, []*protocol.ORMapEntryDelta{
		mapEntry("LWWRegister-r", &protocol.CrdtDelta{Delta: &protocol.CrdtDelta_Lwwregister{Lwwregister: &protocol.LWWRegisterDelta{Value: sdk.String("hi")}}}),
	}))
	s.process("ORMap-1", 2)
	s.expectReply(2, ormapState(entry("LWWRegister-r", lwwState("hi")), entry("ORSet-s", orsetState("y", "z")), entry("Vote-v", voteState(true, 1, 1))), nil)

	// The function's next change is relative to the value after the delta.
	s.process("ORMap-1", 3, upd(ormapUpdate("ORSet-s", orsetRemove("z"))), upd(ormapUpdate("Vote-v", voteUpdate(false))))
	s.expectReply(3, ormapState(entry("LWWRegister-r", lwwState("hi")), entry("ORSet-s", orsetState("y")), entry("Vote-v", voteState(false, 0, 1))),
		update(ormapDelta(false, nil, []*protocol.ORMapEntryDelta{
			mapEntry("Vote-v", voteDelta(false, 0, 0)),
			mapEntry("ORSet-s", orsetDelta(false, []string{"z"}, nil)),
		}, nil)))

	// Cleared, with a re-typed key (removed and added).
	s.delta(ormapDelta(true, nil, nil, []*protocol.ORMapEntryDelta{mapEntry("GCounter-b", gcounterDelta(1))}))
	s.process("ORMap-1", 4)
	s.expectReply(4, ormapState(entry("GCounter-b", gcounterState(1))), nil)
}

// TestCRDTDeltaCreatesTheCRDT: without a value in init, the first delta
// from the proxy creates the CRDT.
func TestCRDTDeltaCreatesTheCRDT(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GSet-1", nil)
	s.delta(gsetDelta("a"))
	s.process("GSet-1", 1, upd(gsetAdd("b")))
	s.expectReply(1, gsetState("a", "b"), update(gsetDelta("b")))
}

func TestCRDTInvalidDelta(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GSet-1", gsetDelta("a"))
	s.delta(gcounterDelta(1))
	s.expect(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: &protocol.Failure{
		Description: `entity "GSet-1": invalid delta: a GCounter delta for a GSet`,
	}}})
	s.expectEnd(false)
}

func TestCRDTFailureUndoesChanges(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("ORMap-1", nil)
	s.process("ORMap-1", 1, upd(ormapUpdate("GCounter-a", gcounterInc(1))))
	s.expectReply(1, ormapState(entry("GCounter-a", gcounterState(1))),
		update(ormapDelta(false, nil, nil, []*protocol.ORMapEntryDelta{mapEntry("GCounter-a", gcounterDelta(1))})))
	s.process("ORMap-1", 2, upd(ormapUpdate("GCounter-a", gcounterInc(5))), upd(ormapAdd("GSet-b")),
		&pb.RequestAction{Action: &pb.RequestAction_Effect{Effect: &pb.Effect{Id: "x"}}},
		&pb.RequestAction{Action: &pb.RequestAction_Fail{Fail: &pb.Fail{Message: "no way"}}})
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 2, ClientAction: clientFailure(2, "no way", false)}))
	s.process("ORMap-1", 3, upd(ormapUpdate("GCounter-a", gcounterInc(2))))
	s.expectReply(3, ormapState(entry("GCounter-a", gcounterState(3))),
		update(ormapDelta(false, nil, []*protocol.ORMapEntryDelta{mapEntry("GCounter-a", gcounterDelta(2))}, nil)))

	// A failed first change leaves no CRDT behind.
	s2 := startServer(t).openCRDT(t)
	s2.init("Flag-1", nil)
	s2.process("Flag-1", 1, upd(flagEnable()), &pb.RequestAction{Action: &pb.RequestAction_Fail{Fail: &pb.Fail{Message: "no"}}})
	s2.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: clientFailure(1, "no", false)}))
	s2.delta(gcounterDelta(4)) // no clash: the function has no CRDT
	s2.command("Flag-1", 2, "Process", &pb.Request{Id: "Flag-1"}, false)
	// The model reads a Flag, which is now a GCounter: the handler fails.
	s2.expect(crdtReply(&protocol.CrdtReply{CommandId: 2, ClientAction: clientFailure(2, "crdt: the entity's CRDT is a GCounter, not a Flag", false)}))
}

func TestCRDTForwardAndSideEffects(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GCounter-1", nil)
	s.process("GCounter-1", 1, upd(gcounterInc(1)),
		&pb.RequestAction{Action: &pb.RequestAction_Effect{Effect: &pb.Effect{Id: "e1", Synchronous: true}}},
		&pb.RequestAction{Action: &pb.RequestAction_Forward{Forward: &pb.Forward{Id: "f1"}}})
	s.expect(crdtReply(&protocol.CrdtReply{
		CommandId: 1,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
			ServiceName: crdtmodel.TwoServiceName, CommandName: "Call", Payload: mustAny(t, &pb.Request{Id: "f1"}),
		}}},
		SideEffects: []*protocol.SideEffect{{
			ServiceName: crdtmodel.TwoServiceName, CommandName: "Call", Payload: mustAny(t, &pb.Request{Id: "e1"}), Synchronous: true,
		}},
		StateAction: update(gcounterDelta(1)),
	}))
}

func TestCRDTPanicEndsTheStream(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GCounter-1", nil)
	s.process("GCounter-1", 1, upd(gcounterInc(1)), &pb.RequestAction{Action: &pb.RequestAction_Panic{Panic: true}})
	s.expect(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: 1, Description: "command handler of command Process panicked: model panic",
	}}})
	s.expectEnd(false)
}

func TestCRDTDeleteFirst(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delete{Delete: &protocol.CrdtDelete{}}})
	s.expectEnd(true)
}

func TestCRDTDeleteFromProxy(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GCounter-1", gcounterDelta(2))
	s.command("GCounter-1", 1, "ProcessStreamed", &pb.StreamedRequest{Id: "GCounter-1"}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, gcounterState(2)), Streamed: true}))
	s.send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delete{Delete: &protocol.CrdtDelete{}}})
	s.expectEnd(true)
}

func TestCRDTUnknownCommand(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("GCounter-1", nil)
	s.command("GCounter-1", 1, "Nope", &pb.Request{}, false)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: clientFailure(1, "unknown command Nope", false)}))
}

func TestCRDTFirstMessageMustBeInit(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.delta(gcounterDelta(1))
	s.expect(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: &protocol.Failure{
		Description: "expected init as the first message, got delta",
	}}})
	s.expectEnd(false)
}

// TestCRDTStreamed follows a streamed command through every kind of
// change: the proxy's deltas, another command's update, the end state.
func TestCRDTStreamed(t *testing.T) {
	s := startServer(t).openCRDT(t)
	const id = "PNCounter-1"
	s.init(id, nil)
	effect := &protocol.SideEffect{ServiceName: crdtmodel.TwoServiceName, CommandName: "Call", Payload: mustAny(t, &pb.Request{Id: "e"})}
	s.command(id, 1, "ProcessStreamed", &pb.StreamedRequest{
		Id: id, InitialUpdate: pncounterChange(1), EndState: pncounterState(10), Effects: []*pb.Effect{{Id: "e"}},
	}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, pncounterState(1)),
		StateAction: update(pncounterDelta(1)), Streamed: true}))

	// A second stream that sends nothing but keeps the stream open.
	s.command(id, 2, "ProcessStreamed", &pb.StreamedRequest{Id: id, Empty: true}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 2, Streamed: true}))

	// A delta from the proxy reaches every open stream.
	s.delta(pncounterDelta(2))
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, pncounterState(3)),
		SideEffects: []*protocol.SideEffect{effect}}))

	// A command's change: the reply first, then the streams.
	s.process(id, 3, upd(pncounterChange(4)))
	s.expectReply(3, pncounterState(7), update(pncounterDelta(4)))
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, pncounterState(7)),
		SideEffects: []*protocol.SideEffect{effect}}))

	// A command without a change notifies nobody.
	s.process(id, 4)
	s.expectReply(4, pncounterState(7), nil)

	// The end state ends stream 1; stream 2 stays.
	s.delta(pncounterDelta(3))
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, pncounterState(10)),
		SideEffects: []*protocol.SideEffect{effect}, EndStream: true}))
	s.delta(pncounterDelta(1))
	s.process(id, 5)
	s.expectReply(5, pncounterState(11), nil)

	// A streamed handler called without streamed (not a proxy's doing)
	// does not open a stream.
	s.command(id, 6, "ProcessStreamed", &pb.StreamedRequest{Id: id}, false)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 6, ClientAction: stateReply(t, pncounterState(11))}))
}

func TestCRDTStreamEndsAtOnce(t *testing.T) {
	s := startServer(t).openCRDT(t)
	s.init("Flag-1", nil)
	// The end state is already reached by the initial update: the reply
	// keeps the stream open; the next change ends it.
	s.command("Flag-1", 1, "ProcessStreamed", &pb.StreamedRequest{Id: "Flag-1", InitialUpdate: flagEnable(), EndState: flagState(true)}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, flagState(true)),
		StateAction: update(flagDelta()), Streamed: true}))
	s.command("Flag-1", 2, "Process", &pb.Request{Id: "Flag-1"}, false)
	s.expectReply(2, flagState(true), nil)
}

func TestCRDTStreamCancelled(t *testing.T) {
	s := startServer(t).openCRDT(t)
	const id = "ORSet-1"
	s.init(id, orsetDelta(false, nil, []string{"a"}))
	s.command(id, 1, "ProcessStreamed", &pb.StreamedRequest{Id: id, InitialUpdate: orsetAdd("u1"), CancelUpdate: orsetRemove("u1")}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, orsetState("a", "u1")),
		StateAction: update(orsetDelta(false, nil, []string{"u1"})), Streamed: true}))
	s.command(id, 2, "ProcessStreamed", &pb.StreamedRequest{Id: id, InitialUpdate: orsetAdd("u2"), CancelUpdate: orsetRemove("u2")}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 2, ClientAction: stateReply(t, orsetState("a", "u1", "u2")),
		StateAction: update(orsetDelta(false, nil, []string{"u2"})), Streamed: true}))
	// Stream 2's change reached stream 1.
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 1, ClientAction: stateReply(t, orsetState("a", "u1", "u2"))}))

	// Cancelling stream 1 removes u1 and tells stream 2.
	s.cancel(id, 1)
	s.expect(crdtCancelled(&protocol.CrdtStreamCancelledResponse{CommandId: 1, StateAction: update(orsetDelta(false, []string{"u1"}, nil))}))
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 2, ClientAction: stateReply(t, orsetState("a", "u2"))}))

	// Cancelling an unknown or already cancelled stream still gets its one
	// (empty) response.
	s.cancel(id, 1)
	s.expect(crdtCancelled(&protocol.CrdtStreamCancelledResponse{CommandId: 1}))
	s.cancel(id, 99)
	s.expect(crdtCancelled(&protocol.CrdtStreamCancelledResponse{CommandId: 99}))

	s.cancel(id, 2)
	s.expect(crdtCancelled(&protocol.CrdtStreamCancelledResponse{CommandId: 2, StateAction: update(orsetDelta(false, []string{"u2"}, nil))}))
	s.process(id, 3)
	s.expectReply(3, orsetState("a"), nil)
}

func TestCRDTCancelFailureUndoesChanges(t *testing.T) {
	s := startServer(t).openCRDT(t)
	const id = "GCounter-1"
	s.init(id, nil)
	s.command(id, 1, "ProcessStreamed", &pb.StreamedRequest{Id: id, CancelUpdate: gcounterInc(5), FailOnCancel: true, Empty: true}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, Streamed: true}))
	s.cancel(id, 1)
	s.expect(crdtCancelled(&protocol.CrdtStreamCancelledResponse{CommandId: 1}))
	s.process(id, 2)
	s.expectReply(2, gcounterState(0), nil)
}

func TestCRDTOnChangeIsReadOnly(t *testing.T) {
	s := startServer(t).openCRDT(t)
	const id = "GCounter-1"
	s.init(id, gcounterDelta(1))
	s.command(id, 1, "ProcessStreamed", &pb.StreamedRequest{Id: id, ChangeUpdate: gcounterInc(1)}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, gcounterState(1)), Streamed: true}))
	s.delta(gcounterDelta(1))
	s.expect(crdtStreamed(&protocol.CrdtStreamedMessage{CommandId: 1, EndStream: true,
		ClientAction: clientFailure(1, "crdt: the CRDT can only be changed by command and stream-cancel handlers, not by OnChange callbacks", false)}))
	s.process(id, 2)
	s.expectReply(2, gcounterState(2), nil)
}

func TestCRDTOnChangePanic(t *testing.T) {
	s := startServer(t).openCRDT(t)
	const id = "GCounter-1"
	s.init(id, nil)
	s.command(id, 1, "ProcessStreamed", &pb.StreamedRequest{Id: id, PanicOnChange: true}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, gcounterState(0)), Streamed: true}))
	s.process(id, 2, upd(gcounterInc(1)))
	s.expectReply(2, gcounterState(1), update(gcounterDelta(1)))
	s.expect(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: 1, Description: "OnChange of command ProcessStreamed panicked: model panic on change",
	}}})
	s.expectEnd(false)
}

func TestCRDTServerStopEndsStreams(t *testing.T) {
	ts := startServer(t)
	s := ts.openCRDT(t)
	s.init("GCounter-1", nil)
	s.command("GCounter-1", 1, "ProcessStreamed", &pb.StreamedRequest{Id: "GCounter-1"}, true)
	s.expect(crdtReply(&protocol.CrdtReply{CommandId: 1, ClientAction: stateReply(t, gcounterState(0)), Streamed: true}))
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	// Idle streams are cut when the server stops (no reader goroutine waits
	// on them; see stream.go), so the proxy sees the connection end.
	s.expectEnd(false)
}
