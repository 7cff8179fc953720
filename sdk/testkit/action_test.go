package testkit_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/steps"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func newSteps(t *testing.T, h steps.Hooks) *testkit.Action {
	t.Helper()
	a, err := testkit.NewAction(steps.New(h))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func stepReq(groups ...[]*testpb.Step) *testpb.StepRequest {
	r := &testpb.StepRequest{}
	for _, g := range groups {
		r.Groups = append(r.Groups, &testpb.StepGroup{Steps: g})
	}
	return r
}

func reply(m string) *testpb.Step   { return &testpb.Step{Step: &testpb.Step_Reply{Reply: m}} }
func fail(d string) *testpb.Step    { return &testpb.Step{Step: &testpb.Step_Fail{Fail: d}} }
func effect(id string) *testpb.Step { return &testpb.Step{Step: &testpb.Step_Effect{Effect: id}} }
func forward(id string) *testpb.Step {
	return &testpb.Step{Step: &testpb.Step_Forward{Forward: id}}
}

func TestActionUnary(t *testing.T) {
	a := newSteps(t, steps.Hooks{})
	res, err := testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{stepReq([]*testpb.Step{reply("hi"), effect("x")})})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 1 {
		t.Fatalf("responses %+v", res.Responses)
	}
	r := res.Responses[0]
	if r.Reply.GetMessage() != "hi" || r.Failure != nil || r.Forward != nil || len(r.SideEffects) != 1 {
		t.Fatalf("response %+v", r)
	}
	if se := r.SideEffects[0]; se.Service != steps.ServiceName || se.Method != "Call" || se.Synchronous ||
		!proto.Equal(se.Message, &testpb.CallRequest{Id: "x"}) {
		t.Fatalf("side effect %+v", se)
	}

	res, err = testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{stepReq([]*testpb.Step{forward("f")})})
	if err != nil {
		t.Fatal(err)
	}
	if fw := res.Responses[0].Forward; fw == nil || fw.Method != "Call" || !proto.Equal(fw.Message, &testpb.CallRequest{Id: "f"}) {
		t.Fatalf("forward %+v", res.Responses[0])
	}

	res, err = testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{stepReq([]*testpb.Step{fail("no"), effect("y")})})
	if err != nil {
		t.Fatal(err)
	}
	if f := res.Responses[0].Failure; f == nil || f.Description != "no" || len(res.Responses[0].SideEffects) != 1 {
		t.Fatalf("failure %+v", res.Responses[0])
	}

	// No reply at all.
	res, err = testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{stepReq(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 1 || res.Responses[0].Reply != nil || len(res.Replies()) != 0 {
		t.Fatalf("responses %+v", res.Responses)
	}
}

func TestActionMetadata(t *testing.T) {
	a := newSteps(t, steps.Hooks{})
	var md sdk.Metadata
	md.Add("x-user", "alice")
	echo := &testpb.Step{Step: &testpb.Step_EchoMetadata{EchoMetadata: "x-user"}}
	for _, method := range []string{"Unary", "ServerStream", "ClientStream", "BidiStream"} {
		res, err := testkit.CallAction[*testpb.StepReply](a, method, []*testpb.StepRequest{stepReq([]*testpb.Step{echo})}, testkit.WithCommandMetadata(md))
		if err != nil {
			t.Fatal(err)
		}
		if r := res.Replies(); len(r) != 1 || r[0].GetMessage() != "alice" {
			t.Fatalf("%s: replies %v", method, r)
		}
	}
}

func TestActionStreams(t *testing.T) {
	a := newSteps(t, steps.Hooks{})
	in := stepReq([]*testpb.Step{reply("one")}, nil, []*testpb.Step{fail("two")}, []*testpb.Step{reply("three")})

	res, err := testkit.CallAction[*testpb.StepReply](a, "ServerStream", []*testpb.StepRequest{in})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 4 || res.Responses[1].Reply != nil || res.Responses[2].Failure == nil {
		t.Fatalf("responses %+v", res.Responses)
	}
	if r := res.Replies(); len(r) != 2 || r[0].GetMessage() != "one" || r[1].GetMessage() != "three" {
		t.Fatalf("replies %v", r)
	}

	// Bidi: one response per group of each input.
	res, err = testkit.CallAction[*testpb.StepReply](a, "BidiStream", []*testpb.StepRequest{in, stepReq([]*testpb.Step{reply("four")})})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 5 || res.Responses[4].Reply.GetMessage() != "four" {
		t.Fatalf("responses %+v", res.Responses)
	}

	// Client stream: one response after all inputs, with all side effects.
	res, err = testkit.CallAction[*testpb.StepReply](a, "ClientStream", []*testpb.StepRequest{
		stepReq([]*testpb.Step{reply("a"), effect("1")}),
		stepReq([]*testpb.Step{effect("2")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 1 || res.Responses[0].Reply.GetMessage() != "a" || len(res.Responses[0].SideEffects) != 2 {
		t.Fatalf("responses %+v", res.Responses)
	}

	// Answered early: later inputs are not read.
	finish := &testpb.Step{Step: &testpb.Step_Finish{Finish: true}}
	res, err = testkit.CallAction[*testpb.StepReply](a, "ClientStream", []*testpb.StepRequest{
		stepReq([]*testpb.Step{reply("early"), finish}),
		stepReq([]*testpb.Step{reply("late")}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.Replies(); len(r) != 1 || r[0].GetMessage() != "early" {
		t.Fatalf("replies %v", r)
	}
}

func TestActionErrors(t *testing.T) {
	a := newSteps(t, steps.Hooks{})
	statusStep := &testpb.Step{Step: &testpb.Step_Status{Status: &testpb.StepStatus{Code: int32(codes.NotFound), Message: "gone"}}}
	res, err := testkit.CallAction[*testpb.StepReply](a, "ServerStream", []*testpb.StepRequest{
		stepReq([]*testpb.Step{reply("first")}, []*testpb.Step{statusStep}),
	})
	if code := statusCode(err); code != codes.NotFound {
		t.Fatalf("err %v, want NotFound", err)
	}
	if res == nil || len(res.Replies()) != 1 {
		t.Fatalf("responses before the error: %+v", res)
	}

	panicStep := &testpb.Step{Step: &testpb.Step_Panic{Panic: "boom"}}
	if _, err := testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{stepReq([]*testpb.Step{panicStep})}); !errors.Is(err, testkit.ErrCrashed) {
		t.Fatalf("panic: %v", err)
	}
	if _, err := testkit.CallAction[*testpb.StepReply](a, "Nope", []*testpb.StepRequest{}); err == nil {
		t.Fatal("unknown method accepted")
	}
	if _, err := testkit.CallAction[*testpb.StepReply](a, "Unary", []*testpb.StepRequest{}); err == nil {
		t.Fatal("a unary call without input was accepted")
	}
	if _, err := testkit.CallAction[*testpb.CallRequest](a, "Call", []*testpb.CallRequest{{Id: "x"}}); err == nil {
		t.Fatal("a reply of the wrong type was accepted")
	}
	if _, err := testkit.NewAction(sdk.NewAction("no.such.Service")); err == nil {
		t.Fatal("an invalid action was accepted")
	}
}

func TestActionCancellation(t *testing.T) {
	waiting := make(chan string, 1)
	cancelled := make(chan error, 1)
	a := newSteps(t, steps.Hooks{Waiting: waiting, Cancelled: cancelled})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-waiting
		cancel()
	}()
	wait := &testpb.Step{Step: &testpb.Step_Wait{Wait: true}}
	res, err := testkit.CallActionContext[*testpb.StepReply](ctx, a, "ServerStream", []*testpb.StepRequest{stepReq([]*testpb.Step{wait})})
	if code := statusCode(err); code != codes.Canceled {
		t.Fatalf("err %v, want Canceled", err)
	}
	if err := <-cancelled; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler saw %v", err)
	}
	if r := res.Replies(); len(r) != 1 || r[0].GetMessage() != "waiting" {
		t.Fatalf("replies %v", r)
	}
}

func statusCode(err error) codes.Code {
	return status.Code(err)
}
