package sdk_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/register"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// valueStream is one ValueEntity/handle stream to the server.
type valueStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[protocol.ValueEntityStreamIn, protocol.ValueEntityStreamOut]
}

func (ts *testServer) openValue(t *testing.T) *valueStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := protocol.NewValueEntityClient(ts.conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &valueStream{t: t, stream: stream}
}

func (s *valueStream) send(in *protocol.ValueEntityStreamIn) {
	s.t.Helper()
	if err := s.stream.Send(in); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

// init sends init with the stored value (nil: nothing stored).
func (s *valueStream) init(entityID string, value proto.Message) {
	s.t.Helper()
	state := &protocol.ValueEntityInitState{}
	if value != nil {
		state.Value = mustAny(s.t, value)
	}
	s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
		ServiceName: register.ServiceName, EntityId: entityID, State: state,
	}}})
}

func (s *valueStream) command(entityID string, id int64, name string, in proto.Message) {
	s.t.Helper()
	s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Command{Command: &protocol.Command{
		EntityId: entityID, Id: id, Name: name, Payload: mustAny(s.t, in),
	}}})
}

func (s *valueStream) recv() *protocol.ValueEntityStreamOut {
	s.t.Helper()
	out, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return out
}

func (s *valueStream) expect(want *protocol.ValueEntityStreamOut) {
	s.t.Helper()
	got := s.recv()
	if !proto.Equal(got, want) {
		s.t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func (s *valueStream) expectEnd(clean bool) {
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

// process sends Process with ops to register r1 as command id.
func (s *valueStream) process(id int64, ops ...*testpb.RegisterOp) {
	s.t.Helper()
	s.command("r1", id, "Process", &testpb.ProcessRegister{RegisterId: "r1", Ops: ops})
}

// get sends Get to r1 and expects the reply state.
func (s *valueStream) get(id int64, want *testpb.RegisterState) {
	s.t.Helper()
	s.command("r1", id, "Get", &testpb.GetRegister{RegisterId: "r1"})
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: id, ClientAction: clientReply(s.t, want, nil)}))
}

func valueReply(r *protocol.ValueEntityReply) *protocol.ValueEntityStreamOut {
	return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: r}}
}

func valueTopLevelFailure(id int64, description string) *protocol.ValueEntityStreamOut {
	return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: id, Description: description,
	}}}
}

func updateAction(t *testing.T, state proto.Message) *protocol.ValueEntityAction {
	return &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Update{Update: &protocol.ValueEntityUpdate{Value: mustAny(t, state)}}}
}

func deleteAction() *protocol.ValueEntityAction {
	return &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Delete{Delete: &protocol.ValueEntityDelete{}}}
}

func opUpdate(v string) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Update{Update: v}}
}
func opDelete() *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Delete{Delete: true}}
}
func opFail(d string) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Fail{Fail: d}}
}
func opMutate(v string) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Mutate{Mutate: v}}
}
func opForward(id string) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Forward{Forward: id}}
}
func opEffect(id string, sync bool) *testpb.RegisterOp {
	return &testpb.RegisterOp{Op: &testpb.RegisterOp_Effect{Effect: &testpb.RegisterEffect{RegisterId: id, Synchronous: sync}}}
}

func TestValueInitWithoutState(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", nil)
	s.get(1, &testpb.RegisterState{Value: register.InitialValue})
	if err := s.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	s.expectEnd(true)
}

func TestValueInitWithStoredState(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", &testpb.RegisterState{Value: "stored", Writes: 3})
	s.get(1, &testpb.RegisterState{Value: "stored", Writes: 3})
	// The next write builds on the stored value.
	s.process(2, opUpdate("next"))
	want := &testpb.RegisterState{Value: "next", Writes: 4}
	s.expect(valueReply(&protocol.ValueEntityReply{
		CommandId: 2, ClientAction: clientReply(t, want, nil), StateAction: updateAction(t, want),
	}))
}

func TestValueInitWithEmptyStoredValue(t *testing.T) {
	// An empty message encodes as zero bytes: it is a stored value all the
	// same, not a missing one.
	s := startServer(t).openValue(t)
	s.init("r1", &testpb.RegisterState{})
	s.get(1, &testpb.RegisterState{})
}

func TestValueInitWithoutStateField(t *testing.T) {
	// The protocol always sets init.state; tolerate a proxy that does not.
	s := startServer(t).openValue(t)
	s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
		ServiceName: register.ServiceName, EntityId: "r1",
	}}})
	s.get(1, &testpb.RegisterState{Value: register.InitialValue})
}

func TestValueUpdates(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", nil)

	a := &testpb.RegisterState{Value: "a", Writes: 1}
	s.process(1, opUpdate("a"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 1, ClientAction: clientReply(t, a, nil), StateAction: updateAction(t, a)}))
	s.get(2, a)

	// Several updates in one command collapse into the last.
	c := &testpb.RegisterState{Value: "c", Writes: 3}
	s.process(3, opUpdate("b"), opUpdate("c"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 3, ClientAction: clientReply(t, c, nil), StateAction: updateAction(t, c)}))
	s.get(4, c)

	// A command without Update or Delete has no state action, and changes
	// the handler makes to its copy are not kept.
	s.process(5, opMutate("scratch"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 5, ClientAction: clientReply(t, &testpb.RegisterState{Value: "scratch", Writes: 3}, nil)}))
	s.get(6, c)
}

func TestValueDelete(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", &testpb.RegisterState{Value: "stored", Writes: 1})

	// Update then delete: the delete wins.
	s.process(1, opUpdate("x"), opDelete())
	s.expect(valueReply(&protocol.ValueEntityReply{
		CommandId: 1, ClientAction: clientReply(t, &testpb.RegisterState{Value: "x", Writes: 2}, nil), StateAction: deleteAction(),
	}))
	s.get(2, &testpb.RegisterState{Value: register.InitialValue})

	// Delete then update: the update wins.
	y := &testpb.RegisterState{Value: "y", Writes: 1}
	s.process(3, opDelete(), opUpdate("y"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 3, ClientAction: clientReply(t, y, nil), StateAction: updateAction(t, y)}))
	s.get(4, y)
}

func TestValueFailureChangesNothing(t *testing.T) {
	s := startServer(t).openValue(t)
	stored := &testpb.RegisterState{Value: "stored", Writes: 1}
	s.init("r1", stored)

	// No state action and no side effects with a failure.
	s.process(1, opUpdate("lost"), opEffect("r2", true), opFail("nope"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 1, ClientAction: clientFailure(1, "nope", false)}))
	s.get(2, stored)

	// Neither an in-place change before the failure.
	s.process(3, opMutate("lost"), opFail("again"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 3, ClientAction: clientFailure(3, "again", false)}))
	s.get(4, stored)

	// Nor a delete.
	s.process(5, opDelete(), opFail("no delete"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 5, ClientAction: clientFailure(5, "no delete", false)}))
	s.get(6, stored)

	s.process(7, &testpb.RegisterOp{Op: &testpb.RegisterOp_UpdateWrongType{UpdateWrongType: true}})
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 7, ClientAction: clientFailure(7,
		"update: the state is a google.protobuf.StringValue, want cloudstate.sdktest.RegisterState", false)}))
	s.get(8, stored)
}

func TestValueForwardAndSideEffects(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", nil)
	s.process(1, opUpdate("v"), opEffect("r2", true), opEffect("r3", false), opForward("r2"))
	s.expect(valueReply(&protocol.ValueEntityReply{
		CommandId: 1,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
			ServiceName: register.ServiceName, CommandName: "Get", Payload: mustAny(t, &testpb.GetRegister{RegisterId: "r2"}),
		}}},
		SideEffects: []*protocol.SideEffect{{
			ServiceName: register.ServiceName, CommandName: "Get",
			Payload: mustAny(t, &testpb.GetRegister{RegisterId: "r2"}), Synchronous: true,
		}, {
			ServiceName: register.ServiceName, CommandName: "Get",
			Payload: mustAny(t, &testpb.GetRegister{RegisterId: "r3"}),
		}},
		StateAction: updateAction(t, &testpb.RegisterState{Value: "v", Writes: 1}),
	}))
}

func TestValueMetadataAndUnknownCommand(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", nil)
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-echo", Value: &protocol.MetadataEntry_StringValue{StringValue: "hi"}}}}
	s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Command{Command: &protocol.Command{
		EntityId: "r1", Id: 1, Name: "Process", Payload: mustAny(t, &testpb.ProcessRegister{RegisterId: "r1"}), Metadata: md,
	}}})
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 1, ClientAction: clientReply(t, &testpb.RegisterState{Value: register.InitialValue}, md)}))

	s.command("r1", 2, "Nope", &testpb.GetRegister{RegisterId: "r1"})
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 2, ClientAction: clientFailure(2, "unknown command Nope", false)}))
	s.command("r1", 3, "Get", wrapperspb.String("r1"))
	s.expect(valueReply(&protocol.ValueEntityReply{CommandId: 3, ClientAction: clientFailure(3,
		`command Get: payload has type "type.googleapis.com/google.protobuf.StringValue", want cloudstate.sdktest.GetRegister`, false)}))
	s.get(4, &testpb.RegisterState{Value: register.InitialValue})
}

func TestValuePanicIsTopLevelFailure(t *testing.T) {
	s := startServer(t).openValue(t)
	s.init("r1", nil)
	s.get(1, &testpb.RegisterState{Value: register.InitialValue})
	s.command("r1", 2, "Boom", &testpb.GetRegister{RegisterId: "r1"})
	s.expect(valueTopLevelFailure(2, "command Boom panicked: boom"))
	s.expectEnd(false)
}

func TestValueProtocolViolations(t *testing.T) {
	ts := startServer(t)
	t.Run("first message not init", func(t *testing.T) {
		s := ts.openValue(t)
		s.process(1)
		s.expect(valueTopLevelFailure(0, "expected init as the first message, got command"))
		s.expectEnd(false)
	})
	t.Run("unknown service", func(t *testing.T) {
		s := ts.openValue(t)
		s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
			ServiceName: "no.Such", EntityId: "x", State: &protocol.ValueEntityInitState{},
		}}})
		s.expect(valueTopLevelFailure(0, `unknown value entity service "no.Such"`))
		s.expectEnd(false)
	})
	t.Run("stored value of the wrong type", func(t *testing.T) {
		s := ts.openValue(t)
		s.init("r1", wrapperspb.String("x"))
		s.expect(valueTopLevelFailure(0, `initialise entity "r1" of cloudstate.sdktest.Register: stored value: `+
			`payload has type "type.googleapis.com/google.protobuf.StringValue", want cloudstate.sdktest.RegisterState`))
		s.expectEnd(false)
	})
	t.Run("undecodable stored value", func(t *testing.T) {
		s := ts.openValue(t)
		s.send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
			ServiceName: register.ServiceName, EntityId: "r1", State: &protocol.ValueEntityInitState{Value: &anypb.Any{
				TypeUrl: "type.googleapis.com/cloudstate.sdktest.RegisterState", Value: []byte{0xff},
			}},
		}}})
		if f := s.recv().GetFailure(); f == nil {
			t.Fatal("want a top-level failure")
		}
		s.expectEnd(false)
	})
	t.Run("second init", func(t *testing.T) {
		s := ts.openValue(t)
		s.init("r1", nil)
		s.init("r1", nil)
		s.expect(valueTopLevelFailure(0, `entity "r1": init received twice`))
		s.expectEnd(false)
	})
	t.Run("empty message", func(t *testing.T) {
		s := ts.openValue(t)
		s.init("r1", nil)
		s.send(&protocol.ValueEntityStreamIn{})
		s.expect(valueTopLevelFailure(0, `entity "r1": empty stream message`))
		s.expectEnd(false)
	})
	t.Run("half-close before init", func(t *testing.T) {
		s := ts.openValue(t)
		if err := s.stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		s.expectEnd(true)
	})
}

func TestValueShutdownEndsOpenStreams(t *testing.T) {
	ts := startServer(t)
	s := ts.openValue(t)
	s.init("r1", nil)
	s.get(1, &testpb.RegisterState{Value: register.InitialValue})
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	// Idle streams are cut when the server stops (no reader goroutine waits
	// on them; see stream.go), so the proxy sees the connection end.
	s.expectEnd(false)
}
