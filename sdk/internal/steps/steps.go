// Package steps is the action the SDK's own tests run: every request lists
// groups of steps (reply, forward, fail, side effects, ...), and each shape
// of method turns groups into responses.
package steps

import (
	"errors"
	"io"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ServiceName is the action's gRPC service.
const ServiceName = "cloudstate.sdktest.Steps"

// Hooks lets tests observe handlers.
type Hooks struct {
	// Waiting receives the method name of a call when it starts waiting
	// for its cancellation (the wait step), if set.
	Waiting chan<- string
	// Cancelled receives the context error of a call that waited for its
	// cancellation (the wait step). It must be buffered or read.
	Cancelled chan<- error
}

// New returns the action definition.
func New(h Hooks) *sdk.Action {
	a := sdk.NewAction(ServiceName)
	sdk.OnUnary(a, "Unary", func(ctx *sdk.ActionContext, in *testpb.StepRequest) (*testpb.StepReply, error) {
		var reply *testpb.StepReply
		for _, g := range in.GetGroups() {
			r, err := run(ctx, h, g, nil)
			if err != nil {
				return nil, err
			}
			if r != nil {
				reply = r
			}
		}
		return reply, nil
	})
	sdk.OnServerStream(a, "ServerStream", func(ctx *sdk.ActionContext, in *testpb.StepRequest, send func(*testpb.StepReply) error) error {
		for _, g := range in.GetGroups() {
			r, err := run(ctx, h, g, send)
			if err != nil {
				return err
			}
			if err := send(r); err != nil {
				return err
			}
		}
		return nil
	})
	sdk.OnClientStream(a, "ClientStream", func(ctx *sdk.ActionContext, recv func() (*testpb.StepRequest, error)) (*testpb.StepReply, error) {
		var reply *testpb.StepReply
		for {
			in, err := recv()
			if errors.Is(err, io.EOF) {
				return reply, nil
			}
			if err != nil {
				return nil, err
			}
			finish := false
			for _, g := range in.GetGroups() {
				r, err := run(ctx, h, g, nil)
				if err != nil {
					return nil, err
				}
				if r != nil {
					reply = r
				}
				finish = finish || hasFinish(g)
			}
			if finish {
				return reply, nil
			}
		}
	})
	sdk.OnBidiStream(a, "BidiStream", func(ctx *sdk.ActionContext, recv func() (*testpb.StepRequest, error), send func(*testpb.StepReply) error) error {
		for {
			in, err := recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			for _, g := range in.GetGroups() {
				r, err := run(ctx, h, g, send)
				if err != nil {
					return err
				}
				if err := send(r); err != nil {
					return err
				}
			}
		}
	})
	sdk.OnUnary(a, "Call", func(ctx *sdk.ActionContext, in *testpb.CallRequest) (*testpb.StepReply, error) {
		return &testpb.StepReply{Message: "called " + in.GetId()}, nil
	})
	return a
}

// run performs the steps of one group on ctx and returns its reply (nil
// for none). send is the stream's, for the wait step.
func run(ctx *sdk.ActionContext, h Hooks, g *testpb.StepGroup, send func(*testpb.StepReply) error) (*testpb.StepReply, error) {
	var reply *testpb.StepReply
	for _, step := range g.GetSteps() {
		switch s := step.GetStep().(type) {
		case *testpb.Step_Reply:
			reply = &testpb.StepReply{Message: s.Reply}
		case *testpb.Step_Forward:
			ctx.Forward(ServiceName, "Call", &testpb.CallRequest{Id: s.Forward})
		case *testpb.Step_Fail:
			ctx.Fail("%s", s.Fail)
		case *testpb.Step_Effect:
			ctx.SideEffect(ServiceName, "Call", &testpb.CallRequest{Id: s.Effect}, false)
		case *testpb.Step_SyncEffect:
			ctx.SideEffect(ServiceName, "Call", &testpb.CallRequest{Id: s.SyncEffect}, true)
		case *testpb.Step_EchoMetadata:
			v, _ := ctx.Metadata().Get(s.EchoMetadata)
			reply = &testpb.StepReply{Message: v}
		case *testpb.Step_Panic:
			panic(s.Panic)
		case *testpb.Step_Status:
			return nil, status.Error(codes.Code(s.Status.GetCode()), s.Status.GetMessage())
		case *testpb.Step_Wait:
			if send != nil {
				if err := send(&testpb.StepReply{Message: "waiting"}); err != nil {
					return nil, err
				}
			}
			if h.Waiting != nil {
				h.Waiting <- ctx.CommandName()
			}
			<-ctx.Context().Done()
			if h.Cancelled != nil {
				h.Cancelled <- ctx.Context().Err()
			}
			return nil, ctx.Context().Err()
		}
	}
	return reply, nil
}

func hasFinish(g *testpb.StepGroup) bool {
	for _, s := range g.GetSteps() {
		if s.GetFinish() {
			return true
		}
	}
	return false
}
