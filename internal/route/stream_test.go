package route

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// streamFunc is a handler for both unary calls (forward and side-effect
// targets) and streaming calls, each a plain function.
type streamFunc struct {
	unary  handlerFunc
	stream func(ctx context.Context, call StreamCall, emit func(Outcome) error) error
}

func (h streamFunc) Unary(ctx context.Context, call Call) (Outcome, error) { return h.unary(ctx, call) }

func (h streamFunc) Stream(ctx context.Context, call StreamCall, emit func(Outcome) error) error {
	return h.stream(ctx, call, emit)
}

// streamModel is testModel plus streaming methods of t.S: Watch (server
// streaming, keyed like Keyed), Upload (client streaming) and Chat (bidi);
// and a service t.P of entity type "plain", whose handler cannot stream.
func streamModel() *discovery.Model {
	m := testModel()
	svc := m.Services["t.S"]
	keyed := svc.Methods["Keyed"]
	watch := *keyed
	watch.Name, watch.Path, watch.ServerStreaming = "Watch", "/t.S/Watch", true
	svc.Methods["Watch"] = &watch
	for _, name := range []string{"Upload", "Chat"} {
		svc.Methods[name] = &discovery.Method{Service: svc, Name: name, Path: "/t.S/" + name,
			InputTypeURL: "type.googleapis.com/t.In", OutputTypeURL: "type.googleapis.com/t.Out",
			ClientStreaming: true, ServerStreaming: name == "Chat"}
	}
	plain := &discovery.Service{Name: "t.P", EntityType: "plain", Methods: map[string]*discovery.Method{}}
	plain.Methods["Chat"] = &discovery.Method{Service: plain, Name: "Chat", Path: "/t.P/Chat",
		InputTypeURL: "type.googleapis.com/t.In", OutputTypeURL: "type.googleapis.com/t.Out",
		ClientStreaming: true, ServerStreaming: true}
	none := &discovery.Service{Name: "t.N", EntityType: "none", Methods: map[string]*discovery.Method{}}
	none.Methods["Chat"] = &discovery.Method{Service: none, Name: "Chat", Path: "/t.N/Chat",
		InputTypeURL: "type.googleapis.com/t.In", OutputTypeURL: "type.googleapis.com/t.Out",
		ClientStreaming: true, ServerStreaming: true}
	m.Services["t.P"], m.Services["t.N"] = plain, none
	m.ServiceNames = append(m.ServiceNames, "t.P", "t.N")
	return m
}

// events is an ordered, concurrency-safe log of what happened.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.log = append(e.log, fmt.Sprintf(format, args...))
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.log, " ")
}

// streamRouter returns a router whose "test" handler is h and whose
// "plain" handler cannot stream.
func streamRouter(h streamFunc) (*Router, *reports) {
	rep := &reports{}
	plain := handlerFunc(func(context.Context, Call) (Outcome, error) { return reply("plain"), nil })
	return New(streamModel(), map[string]Handler{"test": h, "plain": plain}, rep, slog.New(slog.DiscardHandler)), rep
}

// unaryTargets is a unary handler for forward and side-effect targets:
// it logs each call and answers with what it got; B forwards to C.
func unaryTargets(ev *events) handlerFunc {
	return func(_ context.Context, c Call) (Outcome, error) {
		body := string(c.Payload.GetValue())
		ev.add("%s(%s)", c.Method.Name, body)
		if c.Method.Name == "B" && strings.HasPrefix(body, "chain") {
			return forward("C", body+"+c"), nil
		}
		return reply(strings.ToLower(c.Method.Name) + " got " + body), nil
	}
}

// messages returns a recv function yielding bodies, then io.EOF.
func messages(bodies ...string) func() ([]byte, error) {
	var mu sync.Mutex
	return func() ([]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		if len(bodies) == 0 {
			return nil, io.EOF
		}
		b := bodies[0]
		bodies = bodies[1:]
		return []byte(b), nil
	}
}

// sender records what is sent to the client, in the events log.
func sender(ev *events) func(*protocol.Reply) error {
	return func(r *protocol.Reply) error {
		ev.add("send:%s", r.GetPayload().GetValue())
		return nil
	}
}

// emitAll is a stream function that emits outs in order and stops at the
// first error emit returns, as a real handler does.
func emitAll(outs ...Outcome) func(context.Context, StreamCall, func(Outcome) error) error {
	return func(_ context.Context, _ StreamCall, emit func(Outcome) error) error {
		for _, o := range outs {
			if err := emit(o); err != nil {
				return err
			}
		}
		return nil
	}
}

func withEffects(o Outcome, effects ...*protocol.SideEffect) Outcome {
	o.SideEffects = effects
	return o
}

func failure(desc string) Outcome {
	return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: desc}}}}
}

func TestStreamPassesTheClientMessagesAndMetadata(t *testing.T) {
	md := &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-user", Value: &protocol.MetadataEntry_StringValue{StringValue: "ann"}}}}
	var got []*anypb.Any
	var gotCall StreamCall
	r, _ := streamRouter(streamFunc{stream: func(_ context.Context, call StreamCall, _ func(Outcome) error) error {
		gotCall = call
		for {
			a, err := call.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			got = append(got, a)
		}
	}})
	m := r.Model().Lookup("t.S", "Chat")
	if err := r.Stream(context.Background(), m, messages("x", "y"), sender(&events{}), md); err != nil {
		t.Fatal(err)
	}
	if gotCall.Method != m || gotCall.EntityID != "" || !proto.Equal(gotCall.Metadata, md) {
		t.Fatalf("call %+v", gotCall)
	}
	if len(got) != 2 || !proto.Equal(got[0], &anypb.Any{TypeUrl: "type.googleapis.com/t.In", Value: []byte("x")}) ||
		!proto.Equal(got[1], &anypb.Any{TypeUrl: "type.googleapis.com/t.In", Value: []byte("y")}) {
		t.Fatalf("client messages %v, want x and y as t.In", got)
	}
}

func TestStreamSideEffectsRunBeforeEachReply(t *testing.T) {
	ev := &events{}
	r, _ := streamRouter(streamFunc{unary: unaryTargets(ev), stream: emitAll(
		withEffects(reply("1"), effect("B", true)),
		withEffects(reply("2"), effect("C", true), effect("A", true)),
		withEffects(Outcome{}, effect("B", true)),
	)})
	if err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), sender(ev), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := ev.String(), "B(fx) send:1 C(fx) A(fx) send:2 B(fx)"; got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

func TestStreamForwardResultsAreSentAsReplies(t *testing.T) {
	ev := &events{}
	r, _ := streamRouter(streamFunc{unary: unaryTargets(ev), stream: emitAll(
		forward("B", "to-b"),
		reply("direct"),
		forward("B", "chain"),
	)})
	if err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), sender(ev), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := ev.String(), "B(to-b) send:b got to-b send:direct B(chain) C(chain+c) send:c got chain+c"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestStreamFailureEndsTheCallWithUnknown(t *testing.T) {
	ev := &events{}
	r, _ := streamRouter(streamFunc{unary: unaryTargets(ev), stream: emitAll(
		reply("1"),
		withEffects(failure("out of stock"), effect("B", true)),
		reply("never"),
	)})
	err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), sender(ev), nil)
	if st, _ := status.FromError(err); err == nil || st.Code() != codes.Unknown || st.Message() != "out of stock" {
		t.Fatalf("got %v, want UNKNOWN \"out of stock\"", err)
	}
	// The failure's side effects still ran (FX-5); nothing after it was sent.
	if got, want := ev.String(), "send:1 B(fx)"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestStreamNoActionSendsNothing(t *testing.T) {
	ev := &events{}
	r, _ := streamRouter(streamFunc{stream: emitAll(
		Outcome{},
		Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{}}}},
		reply("x"),
	)})
	if err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), sender(ev), nil); err != nil {
		t.Fatal(err)
	}
	if got := ev.String(); got != "send:x" {
		t.Fatalf("sent %q, want only x", got)
	}
}

func TestStreamSendErrorEndsTheCall(t *testing.T) {
	r, _ := streamRouter(streamFunc{stream: emitAll(reply("1"), reply("2"))})
	sends := 0
	gone := status.Error(codes.Canceled, "client went away")
	err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), func(*protocol.Reply) error {
		sends++
		return gone
	}, nil)
	if !errors.Is(err, gone) || sends != 1 {
		t.Fatalf("got %v after %d sends, want the send error after 1", err, sends)
	}
}

func TestStreamForwardToUnknownTargetIsReported(t *testing.T) {
	r, rep := streamRouter(streamFunc{stream: emitAll(Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
		ServiceName: "t.Missing", CommandName: "X"}}}})})
	err := r.Stream(context.Background(), r.Model().Lookup("t.S", "Chat"), messages(), sender(&events{}), nil)
	if status.Code(err) != codes.Internal {
		t.Fatalf("got %v, want INTERNAL", err)
	}
	if msgs := rep.all(); len(msgs) != 1 || !strings.HasPrefix(msgs[0], "Service [t.Missing] unknown\n  forwarded from /t.S/Chat") {
		t.Fatalf("reports %q", msgs)
	}
}

func TestServerStreamingRoutesByTheKeyOfItsRequest(t *testing.T) {
	req, _ := proto.Marshal(&protocol.ProxyInfo{ProxyName: "cart-7"})
	var gotID string
	var got []*anypb.Any
	called := 0
	r, _ := streamRouter(streamFunc{stream: func(_ context.Context, call StreamCall, emit func(Outcome) error) error {
		called++
		gotID = call.EntityID
		for {
			a, err := call.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			got = append(got, a)
		}
		return emit(reply("ok"))
	}})
	m := r.Model().Lookup("t.S", "Watch")
	ev := &events{}
	if err := r.Stream(context.Background(), m, messages(string(req)), sender(ev), nil); err != nil {
		t.Fatal(err)
	}
	if gotID != "cart-7" || len(got) != 1 || !proto.Equal(got[0], &anypb.Any{TypeUrl: m.InputTypeURL, Value: req}) || ev.String() != "send:ok" {
		t.Fatalf("id %q, messages %v, sent %q", gotID, got, ev.String())
	}
	empty, _ := proto.Marshal(&protocol.ProxyInfo{})
	for name, bad := range map[string][]byte{"garbage": {0xff, 0xff, 0xff}, "empty key": empty} {
		if err := r.Stream(context.Background(), m, messages(string(bad)), sender(ev), nil); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: got %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if called != 1 {
		t.Fatalf("handler called %d times, want only for the good request", called)
	}
}

func TestServerStreamingWithoutRequest(t *testing.T) {
	called := false
	r, _ := streamRouter(streamFunc{stream: func(context.Context, StreamCall, func(Outcome) error) error {
		called = true
		return nil
	}})
	m := r.Model().Lookup("t.S", "Watch")
	if err := r.Stream(context.Background(), m, messages(), sender(&events{}), nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want INVALID_ARGUMENT for a missing request", err)
	}
	broken := status.Error(codes.Canceled, "client went away")
	err := r.Stream(context.Background(), m, func() ([]byte, error) { return nil, broken }, sender(&events{}), nil)
	if !errors.Is(err, broken) {
		t.Fatalf("got %v, want the client's own error", err)
	}
	if called {
		t.Fatal("the handler was called without a request")
	}
}

func TestStreamNeedsAStreamHandler(t *testing.T) {
	r, _ := streamRouter(streamFunc{})
	for _, svc := range []string{"t.P", "t.N"} {
		err := r.Stream(context.Background(), r.Model().Lookup(svc, "Chat"), messages("x"), sender(&events{}), nil)
		if status.Code(err) != codes.Unimplemented {
			t.Fatalf("%s: got %v, want UNIMPLEMENTED", svc, err)
		}
	}
}
