package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/proto"
)

// Action is an action under test. Its calls run the sdk's own call
// handling (the code the gRPC server runs), with the proxy's part played by
// CallAction. It is safe for concurrent use, as actions are stateless.
//
//	act, err := testkit.NewAction(NewCartActions())
//	res, err := testkit.CallAction[*pb.Summary](act, "AddItems", []*pb.AddLineItem{{UserId: "u1", ProductId: "p1", Quantity: 1}})
//	// res.Responses[0].Reply is the summary, res.Responses[0].SideEffects the calls it asked for.
type Action struct {
	def    bridge.ActionDefinition
	logger *slog.Logger
}

// NewAction validates action like sdk.Server.RegisterAction does. Of the
// options, only WithLogger applies.
func NewAction(action *sdk.Action, opts ...Option) (*Action, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.snapshot != nil || len(o.events) > 0 || o.value != nil || o.crdtValue != nil {
		return nil, errors.New("actions have no state: WithSnapshot, WithEvents, WithValue and WithCRDTValue do not apply")
	}
	def, err := bridge.CompileAction(action)
	if err != nil {
		return nil, err
	}
	return &Action{def: def, logger: o.logger}, nil
}

// ActionResponse is one response of an action call: a reply, a forward, a
// failure, or none of them, with the side effects that go with it.
type ActionResponse[Out proto.Message] struct {
	// Reply is the reply message, or the zero Out when the response has
	// none.
	Reply         Out
	ReplyMetadata sdk.Metadata
	// Failure is non-nil when the response is a failure, which ends the
	// client's call.
	Failure *Failure
	// Forward is non-nil when the response is a forward.
	Forward     *Effect
	SideEffects []Effect
}

// ActionResult is the outcome of one action call: its responses in order
// (exactly one for unary and client-streaming methods).
type ActionResult[Out proto.Message] struct {
	Responses []ActionResponse[Out]
}

// Replies returns the replies of all responses in order, skipping the
// responses without one.
func (r *ActionResult[Out]) Replies() []Out {
	var out []Out
	for _, resp := range r.Responses {
		if proto.Message(resp.Reply) != nil && resp.Reply.ProtoReflect().IsValid() {
			out = append(out, resp.Reply)
		}
	}
	return out
}

// CallAction calls method with inputs as the proxy would for a client's
// call, and collects the responses. Unary and server-streaming methods take
// exactly one input; client-streaming and bidi methods take the inputs as
// the client's stream, which then ends. A failure response is reported in
// the result; an error means the call could not be made, ended with a gRPC
// status (status.Code works on it) or crashed (ErrCrashed). On an error the
// result, if not nil, holds the responses sent before it. Out is the
// method's reply type; write it explicitly:
//
//	res, err := testkit.CallAction[*pb.Tick](act, "Countdown", []*pb.CountdownRequest{{From: 3}})
func CallAction[Out proto.Message, In proto.Message](a *Action, method string, inputs []In, opts ...CallOption) (*ActionResult[Out], error) {
	return CallActionContext[Out](context.Background(), a, method, inputs, opts...)
}

// CallActionContext is CallAction with a context: the handler's context is
// cancelled when ctx is, which ends calls that stream until cancelled.
func CallActionContext[Out proto.Message, In proto.Message](ctx context.Context, a *Action, method string, inputs []In, opts ...CallOption) (*ActionResult[Out], error) {
	shape, ok := a.def.Shape(method)
	if !ok {
		return nil, fmt.Errorf("call %s: action %s has no method %q", method, a.def.ServiceName(), method)
	}
	// Options are written for entity commands; take their metadata.
	var cmd protocol.Command
	for _, opt := range opts {
		opt(&cmd)
	}
	header := &protocol.ActionCommand{ServiceName: a.def.ServiceName(), Name: method, Metadata: cmd.GetMetadata()}
	var messages []*protocol.ActionCommand
	for _, in := range inputs {
		payload, err := sdk.MarshalAny(in)
		if err != nil {
			return nil, fmt.Errorf("call %s: %w", method, err)
		}
		messages = append(messages, &protocol.ActionCommand{Payload: payload})
	}
	var recv func() (*protocol.ActionCommand, error)
	switch shape {
	case bridge.Unary, bridge.ServerStream:
		if len(messages) != 1 {
			return nil, fmt.Errorf("call %s: the method takes exactly one input, got %d", method, len(messages))
		}
		header.Payload = messages[0].GetPayload()
	default:
		recv = func() (*protocol.ActionCommand, error) {
			if len(messages) == 0 {
				return nil, io.EOF
			}
			next := messages[0]
			messages = messages[1:]
			return next, nil
		}
	}
	// The call's context ends with the call, as with gRPC.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sent []*protocol.ActionResponse // appended by one send at a time
	callErr := a.def.Handle(ctx, shape, header, recv, func(r *protocol.ActionResponse) error {
		sent = append(sent, r)
		return nil
	}, a.logger)

	res := &ActionResult[Out]{}
	for _, r := range sent {
		resp, err := actionResponseOf[Out](r)
		if err != nil {
			return nil, fmt.Errorf("call %s: %w", method, err)
		}
		res.Responses = append(res.Responses, *resp)
	}
	switch {
	case errors.Is(callErr, bridge.ErrPanicked):
		return res, fmt.Errorf("call %s: %w: %w", method, ErrCrashed, callErr)
	case callErr != nil:
		return res, fmt.Errorf("call %s: %w", method, callErr)
	}
	return res, nil
}

func actionResponseOf[Out proto.Message](r *protocol.ActionResponse) (*ActionResponse[Out], error) {
	var resp ActionResponse[Out]
	var err error
	if resp.SideEffects, err = sideEffectsOf(r.GetSideEffects()); err != nil {
		return nil, err
	}
	switch x := r.GetResponse().(type) {
	case *protocol.ActionResponse_Failure:
		resp.Failure = &Failure{Description: x.Failure.GetDescription(), Restart: x.Failure.GetRestart()}
	case *protocol.ActionResponse_Forward:
		if resp.Forward, err = forwardOf(x.Forward); err != nil {
			return nil, err
		}
	case *protocol.ActionResponse_Reply:
		if resp.Reply, err = replyOf[Out](x.Reply); err != nil {
			return nil, err
		}
		resp.ReplyMetadata = metadataOf(x.Reply.GetMetadata())
	}
	return &resp, nil
}
