package route

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// The router is tested with handlers that are plain functions: they stand
// for entity managers, which have their own tests.

type handlerFunc func(ctx context.Context, call Call) (Outcome, error)

func (f handlerFunc) Unary(ctx context.Context, call Call) (Outcome, error) { return f(ctx, call) }

type reports struct {
	mu   sync.Mutex
	msgs []string
}

func (r *reports) ReportError(_ context.Context, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg)
}

func (r *reports) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// testModel has service "t.S" with methods A, B, C, Keyed; A..C have no key
// fields, Keyed uses ProxyInfo.proxy_name as its key.
func testModel() *discovery.Model {
	svc := &discovery.Service{Name: "t.S", EntityType: "test", Methods: map[string]*discovery.Method{}}
	for _, name := range []string{"A", "B", "C"} {
		svc.Methods[name] = &discovery.Method{Service: svc, Name: name, Path: "/t.S/" + name,
			InputTypeURL: "type.googleapis.com/t.In", OutputTypeURL: "type.googleapis.com/t.Out"}
	}
	discover := protocol.File_cloudstate_entity_proto.Services().ByName("EntityDiscovery").Methods().ByName("discover")
	svc.Methods["Keyed"] = &discovery.Method{Service: svc, Name: "Keyed", Path: "/t.S/Keyed", Desc: discover,
		InputTypeURL: "type.googleapis.com/cloudstate.ProxyInfo", OutputTypeURL: "type.googleapis.com/t.Out",
		KeyFields: []protoreflect.FieldDescriptor{discover.Input().Fields().ByName("proxy_name")}}
	return &discovery.Model{Services: map[string]*discovery.Service{"t.S": svc}, ServiceNames: []string{"t.S"}}
}

func reply(body string) Outcome {
	return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{
		Payload: &anypb.Any{TypeUrl: "type.googleapis.com/t.Out", Value: []byte(body)}}}}}
}

func forward(method, body string) Outcome {
	return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: &protocol.Forward{
		ServiceName: "t.S", CommandName: method, Payload: &anypb.Any{TypeUrl: "type.googleapis.com/t.In", Value: []byte(body)}}}}}
}

func effect(method string, sync bool) *protocol.SideEffect {
	return &protocol.SideEffect{ServiceName: "t.S", CommandName: method, Synchronous: sync,
		Payload: &anypb.Any{TypeUrl: "type.googleapis.com/t.In", Value: []byte("fx")}}
}

func newRouter(h handlerFunc) (*Router, *reports) {
	rep := &reports{}
	return New(testModel(), map[string]Handler{"test": h}, rep, slog.New(slog.DiscardHandler)), rep
}

func TestForwardChainRepliesWithTheLastTarget(t *testing.T) {
	r, _ := newRouter(func(_ context.Context, c Call) (Outcome, error) {
		switch c.Method.Name {
		case "A":
			return forward("B", "to-b"), nil
		case "B":
			return forward("C", string(c.Payload.Value)+"+to-c"), nil
		}
		return reply("c got " + string(c.Payload.Value)), nil
	})
	got, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.GetPayload().GetValue()) != "c got to-b+to-c" {
		t.Fatalf("reply %q", got.GetPayload().GetValue())
	}
}

func TestSynchronousSideEffectsRunInOrderBeforeTheReply(t *testing.T) {
	var mu sync.Mutex
	var order []string
	r, _ := newRouter(func(_ context.Context, c Call) (Outcome, error) {
		mu.Lock()
		order = append(order, c.Method.Name)
		mu.Unlock()
		if c.Method.Name == "A" {
			out := reply("a")
			out.SideEffects = []*protocol.SideEffect{effect("B", true), effect("C", true)}
			return out, nil
		}
		if c.Method.Name == "B" {
			// A side effect's own failure is a discarded result.
			return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: "no"}}}}, nil
		}
		return reply("c"), nil
	})
	got, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil)
	if err != nil || string(got.GetPayload().GetValue()) != "a" {
		t.Fatalf("reply %v, err %v", got, err)
	}
	if strings.Join(order, ",") != "A,B,C" {
		t.Fatalf("order %v, want A,B,C", order)
	}
}

func TestAsynchronousSideEffectDoesNotDelayTheReply(t *testing.T) {
	release := make(chan struct{})
	ran := make(chan struct{})
	r, _ := newRouter(func(_ context.Context, c Call) (Outcome, error) {
		if c.Method.Name == "B" {
			<-release
			close(ran)
			return reply("b"), nil
		}
		out := reply("a")
		out.SideEffects = []*protocol.SideEffect{effect("B", false)}
		return out, nil
	})
	if _, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Fatal("asynchronous side effect never ran")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	r.Close(ctx)
}

func TestUnknownTargetsAreReportedAndFailTheCall(t *testing.T) {
	cases := []struct {
		name string
		out  Outcome
		msg  string
	}{
		{"forward to unknown service", Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Forward{
			Forward: &protocol.Forward{ServiceName: "t.Nope", CommandName: "A"}}}}, "Service [t.Nope] unknown"},
		{"forward to unknown method", forward("Zed", ""), "Service [t.S] does not have a command named: [Zed]"},
		{"synchronous effect to unknown method", Outcome{SideEffects: []*protocol.SideEffect{effect("Zed", true)}},
			"Service [t.S] does not have a command named: [Zed]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, rep := newRouter(func(context.Context, Call) (Outcome, error) { return tc.out, nil })
			_, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil)
			if status.Code(err) != codes.Internal || status.Convert(err).Message() != tc.msg {
				t.Fatalf("got %v, want INTERNAL %q", err, tc.msg)
			}
			msgs := rep.all()
			if len(msgs) != 1 || !strings.HasPrefix(msgs[0], tc.msg) || !strings.Contains(msgs[0], "/t.S/A") {
				t.Fatalf("reported %q, want %q with the chain", msgs, tc.msg)
			}
		})
	}
}

func TestAsynchronousEffectToUnknownTargetIsReportedButTheCallSucceeds(t *testing.T) {
	r, rep := newRouter(func(context.Context, Call) (Outcome, error) {
		out := reply("ok")
		out.SideEffects = []*protocol.SideEffect{effect("Zed", false)}
		return out, nil
	})
	if _, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil); err != nil {
		t.Fatal(err)
	}
	if len(rep.all()) != 1 {
		t.Fatalf("reports %v, want one", rep.all())
	}
}

func TestFailureBecomesUnknownWithTheDescription(t *testing.T) {
	r, _ := newRouter(func(context.Context, Call) (Outcome, error) {
		return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: "Item not in cart"}}}}, nil
	})
	_, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil)
	if status.Code(err) != codes.Unknown || status.Convert(err).Message() != "Item not in cart" {
		t.Fatalf("got %v", err)
	}
}

func TestNoActionMeansNoReply(t *testing.T) {
	r, _ := newRouter(func(context.Context, Call) (Outcome, error) { return Outcome{}, nil })
	got, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil)
	if err != nil || got != nil {
		t.Fatalf("got %v, %v; want no reply", got, err)
	}
}

func TestEntityIDComesFromTheKeyAndBadPayloadsAreInvalid(t *testing.T) {
	var gotID string
	r, _ := newRouter(func(_ context.Context, c Call) (Outcome, error) { gotID = c.EntityID; return reply("ok"), nil })
	m := r.Model().Lookup("t.S", "Keyed")
	payload, _ := proto.Marshal(&protocol.ProxyInfo{ProxyName: "cart-7"})
	if _, err := r.Unary(context.Background(), m, payload, nil); err != nil || gotID != "cart-7" {
		t.Fatalf("id %q err %v", gotID, err)
	}
	for name, bad := range map[string][]byte{"garbage": {0xff, 0xff, 0xff}, "empty key": nil} {
		if _, err := r.Unary(context.Background(), m, bad, nil); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: got %v, want INVALID_ARGUMENT", name, err)
		}
	}
}

func TestReplyTypeMismatchIsReportedOnce(t *testing.T) {
	r, rep := newRouter(func(context.Context, Call) (Outcome, error) {
		return Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{
			Payload: &anypb.Any{TypeUrl: "type.googleapis.com/t.Other", Value: []byte("x")}}}}}, nil
	})
	for i := 0; i < 3; i++ {
		got, err := r.Unary(context.Background(), r.Model().Lookup("t.S", "A"), nil, nil)
		if err != nil || string(got.GetPayload().GetValue()) != "x" {
			t.Fatalf("the bytes must still be sent: %v %v", got, err)
		}
	}
	msgs := rep.all()
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "Warning: t.S.A: Expected reply type_url to be [type.googleapis.com/t.Out] but was [type.googleapis.com/t.Other].") {
		t.Fatalf("reports %q", msgs)
	}
}
