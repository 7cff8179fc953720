// Package action serves stateless actions (cloudstate.action.ActionProtocol):
// every client call becomes one call to the user function with the same
// streaming shape as the user's method (PROTOCOL.md §7.4, BEHAVIOR.md ACT-1..4).
// There is no entity, no key and no state; cancellation flows both ways
// because the function's call runs on the client's context.
package action

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Handler calls actions on the user function. It implements route.Handler
// and route.StreamHandler.
type Handler struct {
	client protocol.ActionProtocolClient
}

var (
	_ route.Handler       = (*Handler)(nil)
	_ route.StreamHandler = (*Handler)(nil)
)

// New returns a handler calling the function through client.
func New(client protocol.ActionProtocolClient) *Handler {
	return &Handler{client: client}
}

// Unary calls handleUnary with one full command.
func (h *Handler) Unary(ctx context.Context, call route.Call) (route.Outcome, error) {
	resp, err := h.client.HandleUnary(ctx, &protocol.ActionCommand{
		ServiceName: call.Method.Service.Name,
		Name:        call.Method.Name,
		Payload:     call.Payload,
		Metadata:    call.Metadata,
	})
	if err != nil {
		return route.Outcome{}, functionError(err)
	}
	return outcome(resp), nil
}

// Stream serves the three streaming shapes. emit receives each response's
// outcome in order; an error from emit (a failure, or the client gone) ends
// the call and cancels the function's side.
func (h *Handler) Stream(ctx context.Context, call route.StreamCall, emit func(route.Outcome) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	m := call.Method
	switch {
	case !m.ClientStreaming:
		in, err := call.Recv()
		if err != nil {
			return err
		}
		out, err := h.client.HandleStreamedOut(ctx, &protocol.ActionCommand{
			ServiceName: m.Service.Name, Name: m.Name, Payload: in, Metadata: call.Metadata,
		})
		if err != nil {
			return functionError(err)
		}
		return relay(out, emit)
	case !m.ServerStreaming:
		s, err := h.client.HandleStreamedIn(ctx)
		if err != nil {
			return functionError(err)
		}
		pumpErr := pump(ctx, cancel, s, call)
		resp := new(protocol.ActionResponse)
		if err := s.RecvMsg(resp); err != nil {
			return firstError(pumpErr, err)
		}
		// An answer before the client finished completes the call; the
		// client's further messages are discarded (PROTOCOL.md §7.4).
		cancel()
		return emit(outcome(resp))
	default:
		s, err := h.client.HandleStreamed(ctx)
		if err != nil {
			return functionError(err)
		}
		pumpErr := pump(ctx, cancel, s, call)
		if err := relay(s, emit); err != nil {
			return firstError(pumpErr, err)
		}
		return nil
	}
}

// pump sends the header command and then every client message to the
// function on its own goroutine, half-closing when the client completes.
// If the client's stream fails, the function's call is cancelled and the
// returned channel yields the client's error.
func pump(ctx context.Context, cancel context.CancelFunc, s grpc.ClientStream, call route.StreamCall) <-chan error {
	m := call.Method
	errc := make(chan error, 1)
	go func() {
		defer close(errc)
		send := func(c *protocol.ActionCommand) bool { return s.SendMsg(c) == nil }
		if !send(&protocol.ActionCommand{ServiceName: m.Service.Name, Name: m.Name, Metadata: call.Metadata}) {
			return
		}
		for {
			in, err := call.Recv()
			if errors.Is(err, io.EOF) {
				_ = s.CloseSend()
				return
			}
			if err != nil {
				errc <- err
				cancel()
				return
			}
			if ctx.Err() != nil || !send(&protocol.ActionCommand{Payload: in}) {
				return
			}
		}
	}()
	return errc
}

// relay emits every response of a server-streaming function call until it
// ends; the function's status becomes the client's (ACT-3).
func relay(s interface {
	Recv() (*protocol.ActionResponse, error)
}, emit func(route.Outcome) error) error {
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return functionError(err)
		}
		if err := emit(outcome(resp)); err != nil {
			return err
		}
	}
}

// firstError prefers the client's own stream error over the function's:
// when the client's stream failed, pump stored its error before cancelling
// the function's call, so it is already in the channel.
func firstError(pumpErr <-chan error, err error) error {
	select {
	case perr, ok := <-pumpErr:
		if ok && perr != nil {
			return perr
		}
	default:
	}
	return functionError(err)
}

// functionError passes the function's status through unchanged; other
// errors (a context ended) become their status.
func functionError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Unavailable, err.Error())
}

// outcome turns an ActionResponse into the router's outcome.
func outcome(resp *protocol.ActionResponse) route.Outcome {
	out := route.Outcome{SideEffects: resp.GetSideEffects()}
	switch r := resp.GetResponse().(type) {
	case *protocol.ActionResponse_Reply:
		out.Action = &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: r.Reply}}
	case *protocol.ActionResponse_Forward:
		out.Action = &protocol.ClientAction{Action: &protocol.ClientAction_Forward{Forward: r.Forward}}
	case *protocol.ActionResponse_Failure:
		out.Action = &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: r.Failure}}
	}
	return out
}
