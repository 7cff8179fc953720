package sdk_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/steps"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Builders for step requests and the responses they produce.

func group(ss ...*testpb.Step) *testpb.StepGroup { return &testpb.StepGroup{Steps: ss} }

func request(gs ...*testpb.StepGroup) *testpb.StepRequest { return &testpb.StepRequest{Groups: gs} }

func single(ss ...*testpb.Step) *testpb.StepRequest { return request(group(ss...)) }

func replyWith(m string) *testpb.Step  { return &testpb.Step{Step: &testpb.Step_Reply{Reply: m}} }
func forwardTo(id string) *testpb.Step { return &testpb.Step{Step: &testpb.Step_Forward{Forward: id}} }
func failWith(d string) *testpb.Step   { return &testpb.Step{Step: &testpb.Step_Fail{Fail: d}} }
func effectTo(id string) *testpb.Step  { return &testpb.Step{Step: &testpb.Step_Effect{Effect: id}} }
func syncEffect(id string) *testpb.Step {
	return &testpb.Step{Step: &testpb.Step_SyncEffect{SyncEffect: id}}
}
func echoMetadata(key string) *testpb.Step {
	return &testpb.Step{Step: &testpb.Step_EchoMetadata{EchoMetadata: key}}
}
func finish() *testpb.Step            { return &testpb.Step{Step: &testpb.Step_Finish{Finish: true}} }
func panicWith(v string) *testpb.Step { return &testpb.Step{Step: &testpb.Step_Panic{Panic: v}} }
func waitCancel() *testpb.Step        { return &testpb.Step{Step: &testpb.Step_Wait{Wait: true}} }
func statusStep(c codes.Code, m string) *testpb.Step {
	return &testpb.Step{Step: &testpb.Step_Status{Status: &testpb.StepStatus{Code: int32(c), Message: m}}}
}

func stringMetadata(kv ...string) *protocol.Metadata {
	md := &protocol.Metadata{}
	for i := 0; i+1 < len(kv); i += 2 {
		md.Entries = append(md.Entries, &protocol.MetadataEntry{Key: kv[i], Value: &protocol.MetadataEntry_StringValue{StringValue: kv[i+1]}})
	}
	return md
}

// fullCommand is the one ActionCommand of a unary or server-streaming call.
func fullCommand(t *testing.T, method string, in proto.Message, md *protocol.Metadata) *protocol.ActionCommand {
	return &protocol.ActionCommand{ServiceName: steps.ServiceName, Name: method, Payload: mustAny(t, in), Metadata: md}
}

// header is the first ActionCommand of a streamed-in call: no payload.
func header(method string, md *protocol.Metadata) *protocol.ActionCommand {
	return &protocol.ActionCommand{ServiceName: steps.ServiceName, Name: method, Metadata: md}
}

// message is a following ActionCommand of a streamed-in call.
func message(t *testing.T, in proto.Message) *protocol.ActionCommand {
	return &protocol.ActionCommand{Payload: mustAny(t, in)}
}

func effects(t *testing.T, sync bool, ids ...string) []*protocol.SideEffect {
	var out []*protocol.SideEffect
	for _, id := range ids {
		out = append(out, &protocol.SideEffect{
			ServiceName: steps.ServiceName, CommandName: "Call",
			Payload: mustAny(t, &testpb.CallRequest{Id: id}), Synchronous: sync,
		})
	}
	return out
}

func replied(t *testing.T, msg string, se ...*protocol.SideEffect) *protocol.ActionResponse {
	return &protocol.ActionResponse{
		Response:    &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: mustAny(t, &testpb.StepReply{Message: msg})}},
		SideEffects: se,
	}
}

func forwarded(t *testing.T, id string, se ...*protocol.SideEffect) *protocol.ActionResponse {
	return &protocol.ActionResponse{
		Response: &protocol.ActionResponse_Forward{Forward: &protocol.Forward{
			ServiceName: steps.ServiceName, CommandName: "Call", Payload: mustAny(t, &testpb.CallRequest{Id: id}),
		}},
		SideEffects: se,
	}
}

func failed(description string, se ...*protocol.SideEffect) *protocol.ActionResponse {
	return &protocol.ActionResponse{
		Response:    &protocol.ActionResponse_Failure{Failure: &protocol.Failure{Description: description}},
		SideEffects: se,
	}
}

func noReply(se ...*protocol.SideEffect) *protocol.ActionResponse {
	return &protocol.ActionResponse{SideEffects: se}
}

func expectResponse(t *testing.T, got, want *protocol.ActionResponse) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func expectStatus(t *testing.T, err error, code codes.Code, message string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code || st.Message() != message {
		t.Fatalf("error %v, want status %v %q", err, code, message)
	}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestActionUnary(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	tests := []struct {
		name string
		in   *testpb.StepRequest
		want *protocol.ActionResponse
	}{
		{"reply", single(replyWith("one")), replied(t, "one")},
		{"reply with side effects", single(replyWith("two"), effectTo("a"), syncEffect("b"), effectTo("c")),
			replied(t, "two", append(append(effects(t, false, "a"), effects(t, true, "b")...), effects(t, false, "c")...)...)},
		{"no reply", single(), noReply()},
		{"no reply with side effects", single(effectTo("a"), effectTo("b")), noReply(effects(t, false, "a", "b")...)},
		{"forward", single(forwardTo("one")), forwarded(t, "one")},
		{"forward with side effects", single(forwardTo("two"), syncEffect("x")), forwarded(t, "two", effects(t, true, "x")...)},
		{"failure", single(failWith("one")), failed("one")},
		// Side effects run whatever the response (the protocol says so).
		{"failure with side effects", single(failWith("two"), effectTo("a"), effectTo("b")), failed("two", effects(t, false, "a", "b")...)},
		{"groups merge, later replies win", request(group(replyWith("a")), group(replyWith("b"))), replied(t, "b")},
		{"forward and reply", single(forwardTo("x"), replyWith("y")), failed("command Unary both forwarded and returned a reply")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := client.HandleUnary(callCtx(t), fullCommand(t, "Unary", tt.in, nil))
			if err != nil {
				t.Fatal(err)
			}
			expectResponse(t, got, tt.want)
		})
	}
}

func TestActionUnaryMetadataAndPayload(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	got, err := client.HandleUnary(callCtx(t), fullCommand(t, "Unary", single(echoMetadata("X-User")), stringMetadata("x-user", "alice")))
	if err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, replied(t, "alice"))

	// The reply's type URL is the method's output type.
	got, err = client.HandleUnary(callCtx(t), fullCommand(t, "Call", &testpb.CallRequest{Id: "7"}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if url := got.GetReply().GetPayload().GetTypeUrl(); url != "type.googleapis.com/cloudstate.sdktest.StepReply" {
		t.Fatalf("type url %q", url)
	}

	got, err = client.HandleUnary(callCtx(t), fullCommand(t, "Unary", wrapperspb.String("x"), nil))
	if err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, failed(`command Unary: payload has type "type.googleapis.com/google.protobuf.StringValue", want cloudstate.sdktest.StepRequest`))
}

func TestActionUnaryErrors(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	_, err := client.HandleUnary(callCtx(t), fullCommand(t, "Unary", single(statusStep(codes.NotFound, "no such cart")), nil))
	expectStatus(t, err, codes.NotFound, "no such cart")

	_, err = client.HandleUnary(callCtx(t), fullCommand(t, "Unary", single(panicWith("boom")), nil))
	expectStatus(t, err, codes.Internal, "action Unary panicked: boom")

	_, err = client.HandleUnary(callCtx(t), &protocol.ActionCommand{ServiceName: "no.Such", Name: "Unary"})
	expectStatus(t, err, codes.NotFound, `unknown action service "no.Such"`)

	_, err = client.HandleUnary(callCtx(t), &protocol.ActionCommand{ServiceName: steps.ServiceName, Name: "Nope"})
	expectStatus(t, err, codes.Unimplemented, `action cloudstate.sdktest.Steps has no method "Nope"`)

	_, err = client.HandleUnary(callCtx(t), fullCommand(t, "ServerStream", single(), nil))
	expectStatus(t, err, codes.Unimplemented, "cloudstate.sdktest.Steps/ServerStream is server-streaming but was called as unary")
}

func TestActionUnaryCancellation(t *testing.T) {
	ts := startServer(t)
	client := protocol.NewActionProtocolClient(ts.conn)
	ctx, cancel := context.WithCancel(callCtx(t))
	done := make(chan error, 1)
	go func() {
		_, err := client.HandleUnary(ctx, fullCommand(t, "Unary", single(waitCancel()), nil))
		done <- err
	}()
	select {
	case <-ts.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	cancel()
	expectCancelled(t, ts)
	if err := <-done; status.Code(err) != codes.Canceled {
		t.Fatalf("call ended with %v", err)
	}
}

// expectCancelled waits for the steps action to report that its context
// was cancelled.
func expectCancelled(t *testing.T, ts *testServer) {
	t.Helper()
	select {
	case err := <-ts.cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("handler context ended with %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's context was not cancelled")
	}
}

func TestActionServerStream(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	in := request(
		group(replyWith("one")),
		group(replyWith("two"), effectTo("other")),
		group(),
		group(syncEffect("another")),
		group(forwardTo("three"), effectTo("a"), effectTo("b")),
		group(failWith("four"), effectTo("c")),
		group(replyWith("after failure")),
	)
	stream, err := client.HandleStreamedOut(callCtx(t), fullCommand(t, "ServerStream", in, nil))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []*protocol.ActionResponse{
		replied(t, "one"),
		replied(t, "two", effects(t, false, "other")...),
		noReply(),
		noReply(effects(t, true, "another")...),
		forwarded(t, "three", effects(t, false, "a", "b")...),
		failed("four", effects(t, false, "c")...),
		replied(t, "after failure"),
	} {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		expectResponse(t, got, want)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestActionServerStreamEnd(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	t.Run("error after responses", func(t *testing.T) {
		stream, err := client.HandleStreamedOut(callCtx(t), fullCommand(t, "ServerStream",
			request(group(replyWith("one")), group(effectTo("x"), statusStep(codes.FailedPrecondition, "stop"))), nil))
		if err != nil {
			t.Fatal(err)
		}
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, replied(t, "one"))
		_, err = stream.Recv()
		expectStatus(t, err, codes.FailedPrecondition, "stop")
	})
	t.Run("no responses", func(t *testing.T) {
		stream, err := client.HandleStreamedOut(callCtx(t), fullCommand(t, "ServerStream", request(), nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	})
}

func TestActionServerStreamCancellation(t *testing.T) {
	ts := startServer(t)
	client := protocol.NewActionProtocolClient(ts.conn)
	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := client.HandleStreamedOut(ctx, fullCommand(t, "ServerStream", single(waitCancel()), nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, replied(t, "waiting"))
	cancel()
	expectCancelled(t, ts)
}

func TestActionClientStream(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	t.Run("reply after the end, with every side effect", func(t *testing.T) {
		stream, err := client.HandleStreamedIn(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []*protocol.ActionCommand{
			header("ClientStream", nil),
			message(t, single(replyWith("two"), effectTo("a"))),
			message(t, single(syncEffect("b"))),
			message(t, single(effectTo("c"), effectTo("d"))),
		} {
			if err := stream.Send(cmd); err != nil {
				t.Fatal(err)
			}
		}
		got, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, replied(t, "two",
			append(append(effects(t, false, "a"), effects(t, true, "b")...), effects(t, false, "c", "d")...)...))
	})
	t.Run("no messages", func(t *testing.T) {
		stream, err := client.HandleStreamedIn(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(header("ClientStream", nil)); err != nil {
			t.Fatal(err)
		}
		got, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, noReply())
	})
	t.Run("failure", func(t *testing.T) {
		stream, err := client.HandleStreamedIn(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []*protocol.ActionCommand{
			header("ClientStream", nil),
			message(t, single(failWith("two"), effectTo("a"))),
			message(t, single(effectTo("b"))),
		} {
			if err := stream.Send(cmd); err != nil {
				t.Fatal(err)
			}
		}
		got, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, failed("two", effects(t, false, "a", "b")...))
	})
	t.Run("no header", func(t *testing.T) {
		stream, err := client.HandleStreamedIn(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		_, err = stream.CloseAndRecv()
		expectStatus(t, err, codes.InvalidArgument, "the call ended before its first command")
	})
}

func TestActionClientStreamMetadataOnTheFirstMessageOnly(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	stream, err := client.HandleStreamedIn(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	later := message(t, single(echoMetadata("x-user")))
	later.Metadata = stringMetadata("x-user", "mallory")
	for _, cmd := range []*protocol.ActionCommand{header("ClientStream", stringMetadata("x-user", "alice")), later} {
		if err := stream.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	got, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, replied(t, "alice"))
}

func TestActionClientStreamAnsweredBeforeTheEnd(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	stream, err := client.HandleStreamedIn(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []*protocol.ActionCommand{
		header("ClientStream", nil),
		message(t, single(replyWith("early"), effectTo("a"), finish())),
	} {
		if err := stream.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	// The client has not half-closed: the answer comes anyway.
	got := new(protocol.ActionResponse)
	if err := stream.RecvMsg(got); err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, replied(t, "early", effects(t, false, "a")...))
	// The call is complete; further messages go nowhere.
	if err := stream.RecvMsg(new(protocol.ActionResponse)); !errors.Is(err, io.EOF) {
		t.Fatalf("after the response: %v", err)
	}
}

func TestActionBidiStream(t *testing.T) {
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	stream, err := client.HandleStreamed(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	send := func(cmd *protocol.ActionCommand) {
		t.Helper()
		if err := stream.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want *protocol.ActionResponse) {
		t.Helper()
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, want)
	}
	send(header("BidiStream", stringMetadata("x-user", "alice")))
	// Responses flow back as they are produced, before the client is done.
	send(message(t, single(replyWith("one"))))
	expect(replied(t, "one"))
	send(message(t, single(replyWith("two"), effectTo("other"))))
	expect(replied(t, "two", effects(t, false, "other")...))
	send(message(t, single(forwardTo("three"), syncEffect("x"))))
	expect(forwarded(t, "three", effects(t, true, "x")...))
	send(message(t, single(failWith("four"))))
	expect(failed("four"))
	send(message(t, request(group(), group(effectTo("y")), group(echoMetadata("x-user")))))
	expect(noReply())
	expect(noReply(effects(t, false, "y")...))
	expect(replied(t, "alice"))
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("end of stream: %v", err)
	}
}

func TestActionBidiStreamErrors(t *testing.T) {
	ts := startServer(t)
	client := protocol.NewActionProtocolClient(ts.conn)
	open := func(first *protocol.ActionCommand) grpcBidi {
		t.Helper()
		stream, err := client.HandleStreamed(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(first); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	t.Run("status", func(t *testing.T) {
		stream := open(header("BidiStream", nil))
		if err := stream.Send(message(t, single(statusStep(codes.PermissionDenied, "go away")))); err != nil {
			t.Fatal(err)
		}
		_, err := stream.Recv()
		expectStatus(t, err, codes.PermissionDenied, "go away")
	})
	t.Run("panic", func(t *testing.T) {
		stream := open(header("BidiStream", nil))
		if err := stream.Send(message(t, single(panicWith("boom")))); err != nil {
			t.Fatal(err)
		}
		_, err := stream.Recv()
		expectStatus(t, err, codes.Internal, "action BidiStream panicked: boom")
	})
	t.Run("shape mismatch", func(t *testing.T) {
		stream := open(header("ClientStream", nil))
		_, err := stream.Recv()
		expectStatus(t, err, codes.Unimplemented, "cloudstate.sdktest.Steps/ClientStream is client-streaming but was called as bidi-streaming")
	})
	t.Run("cancellation", func(t *testing.T) {
		ctx, cancel := context.WithCancel(callCtx(t))
		stream, err := client.HandleStreamed(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []*protocol.ActionCommand{header("BidiStream", nil), message(t, single(waitCancel()))} {
			if err := stream.Send(cmd); err != nil {
				t.Fatal(err)
			}
		}
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		expectResponse(t, got, replied(t, "waiting"))
		cancel()
		expectCancelled(t, ts)
	})
}

type grpcBidi = interface {
	Send(*protocol.ActionCommand) error
	Recv() (*protocol.ActionResponse, error)
}

func TestActionStreamedHeaderWithPayload(t *testing.T) {
	// The protocol sends no payload with the header of a streamed-in call;
	// if a proxy does, the payload is the first message, not lost.
	client := protocol.NewActionProtocolClient(startServer(t).conn)
	stream, err := client.HandleStreamedIn(callCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	first := header("ClientStream", nil)
	first.Payload = mustAny(t, single(replyWith("from the header"), effectTo("a")))
	for _, cmd := range []*protocol.ActionCommand{first, message(t, single(effectTo("b")))} {
		if err := stream.Send(cmd); err != nil {
			t.Fatal(err)
		}
	}
	got, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	expectResponse(t, got, replied(t, "from the header", effects(t, false, "a", "b")...))
}
