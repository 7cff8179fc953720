package action

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// The tests call a Handler whose user function is a real gRPC server on
// loopback; each test gives the fake function the behaviour of the one
// method it exercises.

type (
	inServer   = grpc.ClientStreamingServer[protocol.ActionCommand, protocol.ActionResponse]
	outServer  = grpc.ServerStreamingServer[protocol.ActionResponse]
	bidiServer = grpc.BidiStreamingServer[protocol.ActionCommand, protocol.ActionResponse]
)

type fakeAction struct {
	protocol.UnimplementedActionProtocolServer
	unary func(ctx context.Context, cmd *protocol.ActionCommand) (*protocol.ActionResponse, error)
	in    func(s inServer) error
	out   func(cmd *protocol.ActionCommand, s outServer) error
	bidi  func(s bidiServer) error
}

func (f *fakeAction) HandleUnary(ctx context.Context, cmd *protocol.ActionCommand) (*protocol.ActionResponse, error) {
	return f.unary(ctx, cmd)
}

func (f *fakeAction) HandleStreamedIn(s inServer) error { return f.in(s) }

func (f *fakeAction) HandleStreamedOut(cmd *protocol.ActionCommand, s outServer) error {
	return f.out(cmd, s)
}

func (f *fakeAction) HandleStreamed(s bidiServer) error { return f.bidi(s) }

// methods of the test service, one per streaming shape.
type methods struct {
	unary, out, in, bidi *discovery.Method
}

func testMethods() methods {
	svc := &discovery.Service{Name: "test.Act", EntityType: discovery.Action, Methods: map[string]*discovery.Method{}}
	m := func(name string, clientStreaming, serverStreaming bool) *discovery.Method {
		mm := &discovery.Method{Service: svc, Name: name, Path: "/test.Act/" + name,
			InputTypeURL: "type.googleapis.com/test.In", OutputTypeURL: "type.googleapis.com/test.Out",
			ClientStreaming: clientStreaming, ServerStreaming: serverStreaming}
		svc.Methods[name] = mm
		return mm
	}
	return methods{unary: m("Unary", false, false), out: m("Out", false, true), in: m("In", true, false), bidi: m("Bidi", true, true)}
}

// newHandler serves fn on loopback and returns a Handler calling it.
func newHandler(t *testing.T, fn *fakeAction) *Handler {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protocol.RegisterActionProtocolServer(srv, fn)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return New(protocol.NewActionProtocolClient(conn))
}

func in(body string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.In", Value: []byte(body)}
}

func out(body string) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/test.Out", Value: []byte(body)}
}

func headers() *protocol.Metadata {
	return &protocol.Metadata{Entries: []*protocol.MetadataEntry{
		{Key: "x-user", Value: &protocol.MetadataEntry_StringValue{StringValue: "ann"}},
		{Key: "x-bin-bin", Value: &protocol.MetadataEntry_BytesValue{BytesValue: []byte{1, 2}}},
	}}
}

func replyResp(body string) *protocol.ActionResponse {
	return &protocol.ActionResponse{Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: out(body)}}}
}

func effects() []*protocol.SideEffect {
	return []*protocol.SideEffect{
		{ServiceName: "test.Other", CommandName: "First", Payload: in("fx1"), Synchronous: true},
		{ServiceName: "test.Other", CommandName: "Second", Payload: in("fx2")},
	}
}

// wantOutcome compares an outcome with the response it must come from.
func wantOutcome(t *testing.T, got route.Outcome, resp *protocol.ActionResponse) {
	t.Helper()
	var action *protocol.ClientAction
	switch r := resp.GetResponse().(type) {
	case *protocol.ActionResponse_Reply:
		action = &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: r.Reply}}
	case *protocol.ActionResponse_Forward:
		action = &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: r.Forward}}
	case *protocol.ActionResponse_Failure:
		action = &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: r.Failure}}
	}
	if action == nil && got.Action != nil || action != nil && !proto.Equal(got.Action, action) {
		t.Fatalf("client action %v, want %v", got.Action, action)
	}
	if len(got.SideEffects) != len(resp.GetSideEffects()) {
		t.Fatalf("side effects %v, want %v", got.SideEffects, resp.GetSideEffects())
	}
	for i := range got.SideEffects {
		if !proto.Equal(got.SideEffects[i], resp.GetSideEffects()[i]) {
			t.Fatalf("side effect %d is %v, want %v", i, got.SideEffects[i], resp.GetSideEffects()[i])
		}
	}
}

func wantStatus(t *testing.T, err error, code codes.Code, desc string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || st.Message() != desc {
		t.Fatalf("got error %v, want %s %q", err, code, desc)
	}
}

// client plays the calling client of a streaming call: the test pushes
// its messages and closes it to complete; Recv is StreamCall.Recv.
type client struct {
	msgs chan recvResult
	once sync.Once
}

type recvResult struct {
	msg *anypb.Any
	err error
}

func newClient(t *testing.T) *client {
	c := &client{msgs: make(chan recvResult, 100)}
	t.Cleanup(c.complete) // let a receiver still waiting go
	return c
}

func (c *client) send(body string) { c.msgs <- recvResult{msg: in(body)} }
func (c *client) fail(err error)   { c.msgs <- recvResult{err: err} }
func (c *client) complete()        { c.once.Do(func() { close(c.msgs) }) }

func (c *client) Recv() (*anypb.Any, error) {
	r, ok := <-c.msgs
	if !ok {
		return nil, io.EOF
	}
	return r.msg, r.err
}

// single returns a Recv yielding one message, then io.EOF, as the router
// gives a server-streaming call.
func single(body string) func() (*anypb.Any, error) {
	var mu sync.Mutex
	sent := false
	return func() (*anypb.Any, error) {
		mu.Lock()
		defer mu.Unlock()
		if sent {
			return nil, io.EOF
		}
		sent = true
		return in(body), nil
	}
}

// collector is an emit function that records outcomes and can be told to
// fail from a given outcome on.
type collector struct {
	mu      sync.Mutex
	got     []route.Outcome
	each    chan route.Outcome
	failAt  int // 1-based; 0 never fails
	failErr error
}

func newCollector() *collector { return &collector{each: make(chan route.Outcome, 100)} }

func (c *collector) emit(o route.Outcome) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, o)
	c.each <- o
	if c.failAt > 0 && len(c.got) >= c.failAt {
		return c.failErr
	}
	return nil
}

func (c *collector) outcomes() []route.Outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]route.Outcome(nil), c.got...)
}

// next waits for the next emitted outcome.
func (c *collector) next(t *testing.T) route.Outcome {
	t.Helper()
	select {
	case o := <-c.each:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for an emitted outcome")
		return route.Outcome{}
	}
}

// runStream runs h.Stream on its own goroutine; the result arrives on the
// returned channel.
func runStream(ctx context.Context, h *Handler, call route.StreamCall, emit func(route.Outcome) error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.Stream(ctx, call, emit) }()
	return done
}

// waitDone waits for a Stream to return; if it does not within the
// deadline the test fails and cancel is used to end it.
func waitDone(t *testing.T, done <-chan error, cancel context.CancelFunc) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Errorf("Stream did not return within 5s")
		cancel()
		return <-done
	}
}

func waitSignal(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestUnaryCommandAndResponses(t *testing.T) {
	cases := map[string]*protocol.ActionResponse{
		"reply": {Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: out("r"), Metadata: headers()}}, SideEffects: effects()},
		"forward": {Response: &protocol.ActionResponse_Forward{Forward: &protocol.Forward{
			ServiceName: "test.Other", CommandName: "Next", Payload: in("f"), Metadata: headers()}}, SideEffects: effects()},
		"failure": {Response: &protocol.ActionResponse_Failure{Failure: &protocol.Failure{Description: "bad input"}}, SideEffects: effects()},
		"nothing": {SideEffects: effects()},
	}
	cmds := make(chan *protocol.ActionCommand, len(cases))
	m := testMethods()
	h := newHandler(t, &fakeAction{unary: func(_ context.Context, cmd *protocol.ActionCommand) (*protocol.ActionResponse, error) {
		cmds <- cmd
		return cases[string(cmd.GetPayload().GetValue())], nil
	}})
	for name, resp := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := h.Unary(context.Background(), route.Call{Method: m.unary, Payload: in(name), Metadata: headers()})
			if err != nil {
				t.Fatal(err)
			}
			wantOutcome(t, got, resp)
			cmd := <-cmds
			want := &protocol.ActionCommand{ServiceName: "test.Act", Name: "Unary", Payload: in(name), Metadata: headers()}
			if !proto.Equal(cmd, want) {
				t.Fatalf("the function got %v, want %v", cmd, want)
			}
		})
	}
}

func TestUnaryFunctionErrorPassesThrough(t *testing.T) {
	cases := []struct {
		code codes.Code
		desc string
	}{
		{codes.FailedPrecondition, "not today"},
		{codes.Unknown, "something broke"},
		{codes.PermissionDenied, "who are you"},
	}
	for _, tc := range cases {
		t.Run(tc.code.String(), func(t *testing.T) {
			h := newHandler(t, &fakeAction{unary: func(context.Context, *protocol.ActionCommand) (*protocol.ActionResponse, error) {
				return nil, status.Error(tc.code, tc.desc)
			}})
			_, err := h.Unary(context.Background(), route.Call{Method: testMethods().unary, Payload: in("x")})
			wantStatus(t, err, tc.code, tc.desc)
		})
	}
}

func TestServerStreamingEmitsEachResponseInOrder(t *testing.T) {
	responses := []*protocol.ActionResponse{
		replyResp("one"),
		{Response: &protocol.ActionResponse_Forward{Forward: &protocol.Forward{ServiceName: "test.Other", CommandName: "Next", Payload: in("f")}}, SideEffects: effects()},
		{SideEffects: effects()},
		replyResp("four"),
	}
	for _, end := range []error{nil, status.Error(codes.Aborted, "stopped here")} {
		t.Run(fmt.Sprint(status.Code(end)), func(t *testing.T) {
			cmds := make(chan *protocol.ActionCommand, 1)
			m := testMethods()
			h := newHandler(t, &fakeAction{out: func(cmd *protocol.ActionCommand, s outServer) error {
				cmds <- cmd
				for _, r := range responses {
					if err := s.Send(r); err != nil {
						return err
					}
				}
				return end
			}})
			c := newCollector()
			err := h.Stream(context.Background(), route.StreamCall{Method: m.out, Recv: single("req"), Metadata: headers()}, c.emit)
			if end == nil && err != nil {
				t.Fatalf("Stream returned %v, want nil", err)
			}
			if end != nil {
				wantStatus(t, err, codes.Aborted, "stopped here")
			}
			got := c.outcomes()
			if len(got) != len(responses) {
				t.Fatalf("%d outcomes emitted, want %d", len(got), len(responses))
			}
			for i := range responses {
				wantOutcome(t, got[i], responses[i])
			}
			want := &protocol.ActionCommand{ServiceName: "test.Act", Name: "Out", Payload: in("req"), Metadata: headers()}
			if cmd := <-cmds; !proto.Equal(cmd, want) {
				t.Fatalf("the function got %v, want %v", cmd, want)
			}
		})
	}
}

func TestServerStreamingEmitErrorCancelsTheFunction(t *testing.T) {
	cancelled := make(chan struct{})
	h := newHandler(t, &fakeAction{out: func(_ *protocol.ActionCommand, s outServer) error {
		if err := s.Send(replyResp("one")); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
		return nil
	}})
	c := newCollector()
	c.failAt, c.failErr = 1, status.Error(codes.Unknown, "client failure")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().out, Recv: single("req")}, c.emit)
	wantStatus(t, waitDone(t, done, cancel), codes.Unknown, "client failure")
	waitSignal(t, cancelled, "the function's call to be cancelled")
}

func TestClientStreamingSendsHeaderThenPayloads(t *testing.T) {
	gotc := make(chan []*protocol.ActionCommand, 1)
	resp := &protocol.ActionResponse{Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: out("3 messages")}}, SideEffects: effects()}
	h := newHandler(t, &fakeAction{in: func(s inServer) error {
		var got []*protocol.ActionCommand
		for {
			cmd, err := s.Recv()
			if errors.Is(err, io.EOF) {
				gotc <- got
				return s.SendAndClose(resp)
			}
			if err != nil {
				return err
			}
			got = append(got, cmd)
		}
	}})
	cl := newClient(t)
	for _, b := range []string{"a", "b", "c"} {
		cl.send(b)
	}
	cl.complete()
	c := newCollector()
	if err := h.Stream(context.Background(), route.StreamCall{Method: testMethods().in, Recv: cl.Recv, Metadata: headers()}, c.emit); err != nil {
		t.Fatal(err)
	}
	got := <-gotc
	want := []*protocol.ActionCommand{
		{ServiceName: "test.Act", Name: "In", Metadata: headers()},
		{Payload: in("a")}, {Payload: in("b")}, {Payload: in("c")},
	}
	if len(got) != len(want) {
		t.Fatalf("the function got %d messages, want %d: %v", len(got), len(want), got)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("message %d is %v, want %v", i, got[i], want[i])
		}
	}
	outs := c.outcomes()
	if len(outs) != 1 {
		t.Fatalf("%d outcomes emitted, want 1", len(outs))
	}
	wantOutcome(t, outs[0], resp)
}

func TestClientStreamingEarlyResponseCompletesTheCall(t *testing.T) {
	h := newHandler(t, &fakeAction{in: func(s inServer) error {
		for i := 0; i < 2; i++ { // the header and one message
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
		return s.SendAndClose(replyResp("early"))
	}})
	cl := newClient(t)
	cl.send("a") // and the client never completes
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().in, Recv: cl.Recv}, c.emit)
	if err := waitDone(t, done, cancel); err != nil {
		t.Fatalf("Stream returned %v, want nil", err)
	}
	outs := c.outcomes()
	if len(outs) != 1 {
		t.Fatalf("%d outcomes emitted, want 1", len(outs))
	}
	wantOutcome(t, outs[0], replyResp("early"))
	// Further client messages are discarded, not an error.
	cl.send("late")
}

func TestBidiInterleavesAndHalfCloses(t *testing.T) {
	headerc := make(chan *protocol.ActionCommand, 1)
	h := newHandler(t, &fakeAction{bidi: func(s bidiServer) error {
		header, err := s.Recv()
		if err != nil {
			return err
		}
		headerc <- header
		for {
			cmd, err := s.Recv()
			if errors.Is(err, io.EOF) {
				return s.Send(replyResp("bye"))
			}
			if err != nil {
				return err
			}
			if cmd.GetServiceName() != "" || cmd.GetName() != "" || cmd.GetMetadata() != nil {
				return status.Errorf(codes.InvalidArgument, "message %v carries more than the payload", cmd)
			}
			if err := s.Send(replyResp("echo " + string(cmd.GetPayload().GetValue()))); err != nil {
				return err
			}
		}
	}})
	cl := newClient(t)
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().bidi, Recv: cl.Recv, Metadata: headers()}, c.emit)
	// Each answer arrives while the client stream is still open.
	for _, b := range []string{"a", "b", "c"} {
		cl.send(b)
		wantOutcome(t, c.next(t), replyResp("echo "+b))
	}
	cl.complete()
	wantOutcome(t, c.next(t), replyResp("bye"))
	if err := waitDone(t, done, cancel); err != nil {
		t.Fatalf("Stream returned %v, want nil", err)
	}
	want := &protocol.ActionCommand{ServiceName: "test.Act", Name: "Bidi", Metadata: headers()}
	if header := <-headerc; !proto.Equal(header, want) {
		t.Fatalf("header %v, want %v", header, want)
	}
}

func TestBidiCallerCancelCancelsTheFunction(t *testing.T) {
	started := make(chan struct{})
	cancelled := make(chan struct{})
	h := newHandler(t, &fakeAction{bidi: func(s bidiServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		close(started)
		select {
		case <-s.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
		return nil
	}})
	cl := newClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().bidi, Recv: cl.Recv}, newCollector().emit)
	waitSignal(t, started, "the function's call")
	cancel()
	if err := waitDone(t, done, cancel); status.Code(err) != codes.Canceled {
		t.Fatalf("Stream returned %v, want CANCELLED", err)
	}
	waitSignal(t, cancelled, "the function's call to be cancelled")
}

func TestBidiFunctionErrorEndsTheCall(t *testing.T) {
	h := newHandler(t, &fakeAction{bidi: func(s bidiServer) error {
		for i := 0; i < 2; i++ { // the header and one message
			if _, err := s.Recv(); err != nil {
				return err
			}
		}
		if err := s.Send(replyResp("one")); err != nil {
			return err
		}
		return status.Error(codes.ResourceExhausted, "quota used up")
	}})
	cl := newClient(t)
	cl.send("a") // and the client stays open
	c := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().bidi, Recv: cl.Recv}, c.emit)
	wantStatus(t, waitDone(t, done, cancel), codes.ResourceExhausted, "quota used up")
	if outs := c.outcomes(); len(outs) != 1 {
		t.Fatalf("%d outcomes emitted, want 1", len(outs))
	}
}

func TestBidiEmitErrorCancelsTheFunction(t *testing.T) {
	cancelled := make(chan struct{})
	h := newHandler(t, &fakeAction{bidi: func(s bidiServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		if err := s.Send(replyResp("one")); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			close(cancelled)
		case <-time.After(10 * time.Second):
		}
		return nil
	}})
	cl := newClient(t)
	c := newCollector()
	c.failAt, c.failErr = 1, status.Error(codes.Unknown, "client failure")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := runStream(ctx, h, route.StreamCall{Method: testMethods().bidi, Recv: cl.Recv}, c.emit)
	wantStatus(t, waitDone(t, done, cancel), codes.Unknown, "client failure")
	waitSignal(t, cancelled, "the function's call to be cancelled")
}

// A client stream that fails (for example a message over the size limit,
// which does not cancel the call's context) must end the call and cancel
// the function, whose side would otherwise wait for more messages forever.
func TestClientStreamErrorEndsTheCallAndCancelsTheFunction(t *testing.T) {
	for _, shape := range []string{"client streaming", "bidi"} {
		t.Run(shape, func(t *testing.T) {
			cancelled := make(chan struct{})
			wait := func(recv func() (*protocol.ActionCommand, error)) error {
				for {
					if _, err := recv(); err != nil {
						if status.Code(err) == codes.Canceled {
							close(cancelled)
						}
						return err
					}
				}
			}
			fn := &fakeAction{
				in:   func(s inServer) error { return wait(s.Recv) },
				bidi: func(s bidiServer) error { return wait(s.Recv) },
			}
			h := newHandler(t, fn)
			m := testMethods().in
			if shape == "bidi" {
				m = testMethods().bidi
			}
			cl := newClient(t)
			cl.send("a")
			cl.fail(status.Error(codes.ResourceExhausted, "message too large"))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := runStream(ctx, h, route.StreamCall{Method: m, Recv: cl.Recv}, newCollector().emit)
			wantStatus(t, waitDone(t, done, cancel), codes.ResourceExhausted, "message too large")
			waitSignal(t, cancelled, "the function's call to be cancelled")
		})
	}
}
