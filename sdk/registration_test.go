package sdk_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/register"
	"github.com/cloudstate-go/cloudstate/sdk/internal/steps"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type state struct{}

func newState(string) *state { return &state{} }

// fullCounter registers handlers for every Counter method except skip.
func fullCounter(e *sdk.EventSourcedEntity[state], skip string) {
	empty := func(*sdk.CommandContext, *state, *testpb.GetRequest) (*emptypb.Empty, error) { return nil, nil }
	if skip != "Add" {
		sdk.OnCommand(e, "Add", func(*sdk.CommandContext, *state, *testpb.AddRequest) (*emptypb.Empty, error) { return nil, nil })
	}
	if skip != "Get" {
		sdk.OnCommand(e, "Get", func(*sdk.CommandContext, *state, *testpb.GetRequest) (*testpb.Value, error) { return nil, nil })
	}
	if skip != "Relay" {
		sdk.OnCommand(e, "Relay", func(*sdk.CommandContext, *state, *testpb.RelayRequest) (*testpb.Value, error) { return nil, nil })
	}
	for _, m := range []string{"Clear", "Boom"} {
		if skip != m {
			sdk.OnCommand(e, m, empty)
		}
	}
}

func TestRegistrationErrors(t *testing.T) {
	tests := []struct {
		name  string
		build func() *sdk.EventSourcedEntity[state]
		want  []string // substrings of the error
	}{
		{"unknown service", func() *sdk.EventSourcedEntity[state] {
			return sdk.NewEventSourcedEntity("no.such.Service", newState)
		}, []string{`service "no.such.Service" is not in the protobuf registry`}},
		{"not a service", func() *sdk.EventSourcedEntity[state] {
			return sdk.NewEventSourcedEntity("cloudstate.sdktest.Value", newState)
		}, []string{"not a service"}},
		{"missing handler", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState)
			fullCounter(e, "Boom")
			return e
		}, []string{"command Boom: no handler"}},
		{"unknown method and wrong types", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState)
			fullCounter(e, "Get")
			sdk.OnCommand(e, "Get", func(*sdk.CommandContext, *state, *testpb.AddRequest) (*testpb.Value, error) { return nil, nil })
			sdk.OnCommand(e, "Nope", func(*sdk.CommandContext, *state, *testpb.AddRequest) (*testpb.Value, error) { return nil, nil })
			sdk.OnCommand(e, "Clear", func(*sdk.CommandContext, *state, *testpb.GetRequest) (*testpb.Value, error) { return nil, nil })
			return e
		}, []string{
			"command Get: input type is cloudstate.sdktest.AddRequest, the method takes cloudstate.sdktest.GetRequest",
			"command Nope: service cloudstate.sdktest.Counter has no such method",
			"command Clear: reply type is cloudstate.sdktest.Value, the method returns google.protobuf.Empty",
			"command Get: no handler",
		}},
		{"duplicate handlers", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState)
			fullCounter(e, "")
			sdk.OnCommand(e, "Boom", func(*sdk.CommandContext, *state, *testpb.GetRequest) (*emptypb.Empty, error) { return nil, nil })
			sdk.OnEvent(e, func(*state, *testpb.Added) error { return nil })
			sdk.OnEvent(e, func(*state, *testpb.Added) error { return nil })
			return e
		}, []string{"command Boom: handler set twice", "event cloudstate.sdktest.Added: handler set twice"}},
		{"snapshots without handler", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState, sdk.WithSnapshotEvery(10))
			fullCounter(e, "")
			return e
		}, []string{"WithSnapshotEvery needs OnSnapshot"}},
		{"bad options", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState, sdk.WithSnapshotEvery(-1), sdk.WithPersistenceID(""))
			fullCounter(e, "")
			return e
		}, []string{"snapshot interval -1 must not be negative", "persistence id must not be empty"}},
		{"interface type parameter", func() *sdk.EventSourcedEntity[state] {
			e := sdk.NewEventSourcedEntity(counter.ServiceName, newState)
			fullCounter(e, "")
			sdk.OnEvent(e, func(*state, proto.Message) error { return nil })
			return e
		}, []string{"is an interface, not a generated message type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sdk.NewServer().RegisterEventSourced(tt.build())
			if err == nil {
				t.Fatal("registration succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestRegisterTwiceAndAfterStart(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.RegisterEventSourced(counter.New()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterEventSourced(counter.New()); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second registration: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	// Registration after Serve is refused once Serve has marked the server
	// started; it is marked before Serve does anything else, so poll.
	e := sdk.NewEventSourcedEntity(counter.ServiceName, newState)
	fullCounter(e, "")
	for {
		err := srv.RegisterEventSourced(e)
		if err != nil && strings.Contains(err.Error(), "already started") {
			break
		}
		if err != nil && !strings.Contains(err.Error(), "already registered") {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestServeWithoutEntities(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sdk.NewServer().Serve(context.Background(), lis); err == nil {
		t.Fatal("Serve with no entities succeeded")
	}
}

func TestMarshalAny(t *testing.T) {
	a, err := sdk.MarshalAny(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	if a.GetTypeUrl() != "type.googleapis.com/google.protobuf.StringValue" {
		t.Fatalf("type url %q", a.GetTypeUrl())
	}
	m, err := sdk.UnmarshalAny(a)
	if err != nil {
		t.Fatal(err)
	}
	if m.(*wrapperspb.StringValue).GetValue() != "x" {
		t.Fatalf("round trip gave %v", m)
	}
	a.TypeUrl = "type.googleapis.com/no.Such"
	if _, err := sdk.UnmarshalAny(a); err == nil {
		t.Fatal("unknown type resolved")
	}
}

func TestAddr(t *testing.T) {
	t.Setenv("HOST", "")
	t.Setenv("PORT", "")
	if got := sdk.Addr(); got != "127.0.0.1:8080" {
		t.Fatalf("default Addr %q", got)
	}
	t.Setenv("HOST", "0.0.0.0")
	t.Setenv("PORT", "9123")
	if got := sdk.Addr(); got != "0.0.0.0:9123" {
		t.Fatalf("Addr %q", got)
	}
}

func TestMetadataAccessors(t *testing.T) {
	var md sdk.Metadata
	md.Add("Content-Type", "text/plain")
	md.AddBytes("bin", nil)
	if v, ok := md.Get("content-type"); !ok || v != "text/plain" {
		t.Fatalf("Get = %q, %v", v, ok)
	}
	if _, ok := md.Get("bin"); ok {
		t.Fatal("Get returned a binary entry")
	}
	if b, ok := md.GetBytes("BIN"); !ok || b == nil || len(b) != 0 {
		t.Fatalf("GetBytes = %v, %v", b, ok)
	}
}

func TestValueEntityRegistrationErrors(t *testing.T) {
	get := func(*sdk.ValueContext, *testpb.RegisterState, *testpb.GetRegister) (*testpb.RegisterState, error) {
		return nil, nil
	}
	tests := []struct {
		name  string
		build func() sdk.ValueEntityDefinition
		want  []string
	}{
		{"unknown service", func() sdk.ValueEntityDefinition {
			return sdk.NewValueEntity[*testpb.RegisterState]("no.such.Service", nil)
		}, []string{`service "no.such.Service" is not in the protobuf registry`}},
		{"missing handlers and wrong types", func() sdk.ValueEntityDefinition {
			e := sdk.NewValueEntity[*testpb.RegisterState](register.ServiceName, nil)
			sdk.OnValueCommand(e, "Get", get)
			sdk.OnValueCommand(e, "Get", get)
			sdk.OnValueCommand(e, "Boom", get)
			return e
		}, []string{
			"command Get: handler set twice",
			"command Boom: reply type is cloudstate.sdktest.RegisterState, the method returns google.protobuf.Empty",
			"command Process: no handler",
		}},
		{"streaming method", func() sdk.ValueEntityDefinition {
			e := sdk.NewValueEntity[*testpb.RegisterState](steps.ServiceName, nil)
			sdk.OnValueCommand(e, "ServerStream", func(*sdk.ValueContext, *testpb.RegisterState, *testpb.StepRequest) (*testpb.StepReply, error) {
				return nil, nil
			})
			return e
		}, []string{"command ServerStream: streaming methods are not supported by value entities"}},
		{"options", func() sdk.ValueEntityDefinition {
			e := sdk.NewValueEntity[*testpb.RegisterState](register.ServiceName, nil, sdk.WithSnapshotEvery(3), sdk.WithPassivationTimeout(-1))
			return e
		}, []string{"WithSnapshotEvery does not apply to value entities", "passivation timeout -1ns must not be negative"}},
		{"interface state type", func() sdk.ValueEntityDefinition {
			return sdk.NewValueEntity[proto.Message](register.ServiceName, nil)
		}, []string{"is an interface, not a generated message type"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := sdk.NewServer().RegisterValueEntity(tt.build())
			if err == nil {
				t.Fatal("registration succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestActionRegistrationErrors(t *testing.T) {
	unary := func(*sdk.ActionContext, *testpb.StepRequest) (*testpb.StepReply, error) { return nil, nil }
	a := sdk.NewAction(steps.ServiceName)
	sdk.OnUnary(a, "Unary", unary)
	sdk.OnUnary(a, "Unary", unary)
	sdk.OnUnary(a, "ServerStream", unary)
	sdk.OnBidiStream(a, "ClientStream", func(*sdk.ActionContext, func() (*testpb.StepRequest, error), func(*testpb.StepReply) error) error {
		return nil
	})
	sdk.OnClientStream(a, "ClientStream", func(*sdk.ActionContext, func() (*testpb.CallRequest, error)) (*testpb.StepReply, error) {
		return nil, nil
	})
	sdk.OnUnary(a, "Nope", unary)
	sdk.OnUnary[*testpb.CallRequest, *testpb.StepReply](a, "Call", nil)
	err := sdk.NewServer().RegisterAction(a)
	if err == nil {
		t.Fatal("registration succeeded")
	}
	for _, w := range []string{
		"method Unary: handler set twice",
		"method ServerStream is server-streaming, so its handler must be set with OnServerStream, not OnUnary",
		"method ClientStream is client-streaming, so its handler must be set with OnClientStream, not OnBidiStream",
		"method ClientStream: input type is cloudstate.sdktest.CallRequest, the method takes cloudstate.sdktest.StepRequest",
		"method Nope: service cloudstate.sdktest.Steps has no such method",
		"method Call: handler must not be nil",
		"method BidiStream: no handler",
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	if err := sdk.NewServer().RegisterAction(nil); err == nil {
		t.Fatal("a nil action was accepted")
	}
}

func TestRegisterTheSameServiceTwiceAcrossTypes(t *testing.T) {
	srv := sdk.NewServer()
	if err := srv.RegisterAction(steps.New(steps.Hooks{})); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterValueEntity(register.New()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterAction(steps.New(steps.Hooks{})); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second registration: %v", err)
	}
	if err := srv.RegisterValueEntity(register.New()); err == nil || !strings.Contains(err.Error(), "already registered") {
		t.Fatalf("second registration: %v", err)
	}
}
