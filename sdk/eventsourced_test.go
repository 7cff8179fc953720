package sdk_test

import (
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestCommandsEmitEventsAndReply(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 2})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    1,
		ClientAction: clientReply(t, &emptypb.Empty{}, nil),
		Events:       anys(t, &testpb.Added{Amount: 2}),
	}))
	s.command("c1", 2, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    2,
		ClientAction: clientReply(t, &testpb.Value{Value: 2}, nil),
	}))
	s.command("c1", 3, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 1})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    3,
		ClientAction: clientReply(t, &emptypb.Empty{}, nil),
		Events:       anys(t, &testpb.Added{Amount: 1}),
	}))
	// A nil reply is sent as the empty output message. Sequence 3 is a
	// multiple of the snapshot interval, so a snapshot comes with the event.
	s.command("c1", 4, "Clear", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    4,
		ClientAction: clientReply(t, &emptypb.Empty{}, nil),
		Events:       anys(t, &testpb.Cleared{}),
		Snapshot:     mustAny(t, &testpb.CounterState{Value: 0, Adds: 2}),
	}))
	if err := s.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	s.expectEnd(true)
}

func TestReplyTypeURLIsTheMethodOutput(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Get", &testpb.GetRequest{CounterId: "c1"})
	got := s.recv().GetReply().GetClientAction().GetReply().GetPayload().GetTypeUrl()
	if want := "type.googleapis.com/cloudstate.sdktest.Value"; got != want {
		t.Fatalf("type url %q, want %q", got, want)
	}
}

func TestSnapshotAndReplay(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", &protocol.EventSourcedSnapshot{
		SnapshotSequence: 4,
		Snapshot:         mustAny(t, &testpb.CounterState{Value: 10, Adds: 4}),
	})
	s.event(5, &testpb.Added{Amount: 1})
	s.command("c1", 1, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 1, ClientAction: clientReply(t, &testpb.Value{Value: 11}, nil)}))

	// Sequence 5 -> 6 crosses a multiple of 3: the snapshot includes the event.
	s.command("c1", 2, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 1})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    2,
		ClientAction: clientReply(t, &emptypb.Empty{}, nil),
		Events:       anys(t, &testpb.Added{Amount: 1}),
		Snapshot:     mustAny(t, &testpb.CounterState{Value: 12, Adds: 6}),
	}))
	// 6 -> 7 and 7 -> 8: no snapshot; 8 -> 9: snapshot.
	for i, wantSnap := range []bool{false, false, true} {
		id := int64(3 + i)
		s.command("c1", id, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 1})
		r := s.recv().GetReply()
		if r.GetCommandId() != id || len(r.GetEvents()) != 1 {
			t.Fatalf("command %d: reply %v", id, r)
		}
		if (r.GetSnapshot() != nil) != wantSnap {
			t.Fatalf("command %d (sequence %d): snapshot %v, want one: %v", id, 6+i+1, r.GetSnapshot(), wantSnap)
		}
	}
}

func TestFailureWithoutEvents(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 0})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    1,
		ClientAction: clientFailure(1, "amount must be positive, got 0", false),
	}))
	// The entity carries on.
	s.command("c1", 2, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 2, ClientAction: clientReply(t, &testpb.Value{}, nil)}))
}

func TestFailureAfterEmitAsksForRestart(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 3, FailAfterEmit: true})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    1,
		ClientAction: clientFailure(1, "failed after emit", true),
	}))
	// The proxy must restart the entity; a further command on this stream is
	// refused because the state no longer matches the journal.
	s.command("c1", 2, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.expect(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: 2, Description: "entity must be restarted: a failed command left its state out of date",
	}}})
	s.expectEnd(false)
}

func TestUnknownCommand(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Nope", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 1, ClientAction: clientFailure(1, "unknown command Nope", false)}))
	s.command("c1", 2, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 2, ClientAction: clientReply(t, &testpb.Value{}, nil)}))
}

func TestWrongPayloadType(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Get", wrapperspb.String("c1"))
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 1, ClientAction: clientFailure(1,
		`command Get: payload has type "type.googleapis.com/google.protobuf.StringValue", want cloudstate.sdktest.GetRequest`, false)}))
}

func TestForwardAndSideEffects(t *testing.T) {
	s := startServer(t).open(t)
	s.init("a", nil)
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "from", Value: &protocol.MetadataEntry_StringValue{StringValue: "a"}}}}
	sideEffect := func(sync bool) []*protocol.SideEffect {
		return []*protocol.SideEffect{{
			ServiceName: counter.ServiceName, CommandName: "Add",
			Payload:     mustAny(t, &testpb.AddRequest{CounterId: "b", Amount: 1}),
			Synchronous: sync, Metadata: md,
		}}
	}
	s.command("a", 1, "Relay", &testpb.RelayRequest{CounterId: "a", TargetId: "b", Forward: true, Synchronous: true})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId: 1,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
			ServiceName: counter.ServiceName, CommandName: "Get", Payload: mustAny(t, &testpb.GetRequest{CounterId: "b"}),
		}}},
		SideEffects: sideEffect(true),
	}))
	s.command("a", 2, "Relay", &testpb.RelayRequest{CounterId: "a", TargetId: "b"})
	s.expect(replyOut(&protocol.EventSourcedReply{
		CommandId:    2,
		ClientAction: clientReply(t, &testpb.Value{}, nil),
		SideEffects:  sideEffect(false),
	}))
}

func TestMetadata(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "X-Echo", Value: &protocol.MetadataEntry_StringValue{StringValue: "hi"}}}}
	s.send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Command{Command: &protocol.Command{
		EntityId: "c1", Id: 1, Name: "Get", Payload: mustAny(t, &testpb.GetRequest{CounterId: "c1"}), Metadata: md,
	}}})
	want := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-echo", Value: &protocol.MetadataEntry_StringValue{StringValue: "hi"}}}}
	s.expect(replyOut(&protocol.EventSourcedReply{CommandId: 1, ClientAction: clientReply(t, &testpb.Value{}, want)}))
}

func TestPanicIsTopLevelFailure(t *testing.T) {
	s := startServer(t).open(t)
	s.init("c1", nil)
	s.command("c1", 7, "Boom", &testpb.GetRequest{CounterId: "c1"})
	s.expect(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: 7, Description: "command Boom panicked: boom",
	}}})
	s.expectEnd(false)
}

func TestProtocolViolations(t *testing.T) {
	ts := startServer(t)
	t.Run("first message not init", func(t *testing.T) {
		s := ts.open(t)
		s.command("c1", 1, "Get", &testpb.GetRequest{CounterId: "c1"})
		s.expect(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{
			Description: "expected init as the first message, got command",
		}}})
		s.expectEnd(false)
	})
	t.Run("unknown service", func(t *testing.T) {
		s := ts.open(t)
		s.send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Init{Init: &protocol.EventSourcedInit{
			ServiceName: "no.Such", EntityId: "x",
		}}})
		s.expect(&protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{
			Description: `unknown event-sourced entity service "no.Such"`,
		}}})
		s.expectEnd(false)
	})
	t.Run("unknown event type in replay", func(t *testing.T) {
		s := ts.open(t)
		s.init("c1", nil)
		s.event(1, wrapperspb.Int64(3))
		if f := s.recv().GetFailure(); f == nil || f.GetCommandId() != 0 {
			t.Fatalf("want a top-level failure, got %v", f)
		}
		s.expectEnd(false)
	})
	t.Run("snapshot of the wrong type", func(t *testing.T) {
		s := ts.open(t)
		s.init("c1", &protocol.EventSourcedSnapshot{SnapshotSequence: 1, Snapshot: mustAny(t, wrapperspb.Int64(1))})
		if f := s.recv().GetFailure(); f == nil {
			t.Fatalf("want a top-level failure")
		}
		s.expectEnd(false)
	})
	t.Run("second init", func(t *testing.T) {
		s := ts.open(t)
		s.init("c1", nil)
		s.init("c1", nil)
		if f := s.recv().GetFailure(); f == nil {
			t.Fatalf("want a top-level failure")
		}
		s.expectEnd(false)
	})
	t.Run("half-close before init", func(t *testing.T) {
		s := ts.open(t)
		if err := s.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		s.expectEnd(true)
	})
}

func TestEntitiesAreIndependent(t *testing.T) {
	ts := startServer(t)
	a, b := ts.open(t), ts.open(t)
	a.init("a", nil)
	b.init("b", nil)
	a.command("a", 1, "Add", &testpb.AddRequest{CounterId: "a", Amount: 5})
	a.recv()
	b.command("b", 1, "Get", &testpb.GetRequest{CounterId: "b"})
	b.expect(replyOut(&protocol.EventSourcedReply{CommandId: 1, ClientAction: clientReply(t, &testpb.Value{}, nil)}))
}

func TestShutdownEndsOpenStreams(t *testing.T) {
	ts := startServer(t)
	s := ts.open(t)
	s.init("c1", nil)
	s.command("c1", 1, "Get", &testpb.GetRequest{CounterId: "c1"})
	s.recv()
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Idle streams are cut when the server stops (no reader goroutine waits
	// on them; see stream.go), so the proxy sees the connection end.
	s.expectEnd(false)
}
