package route

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// StreamCall is one streaming call (client, server or bidirectional).
type StreamCall struct {
	Method *discovery.Method
	// EntityID is the id from the (single) request of a server-streaming call
	// to an entity; "" for actions.
	EntityID string
	// Recv returns the client's next message as an Any of the input type,
	// io.EOF after the last. Server-streaming calls have exactly one.
	Recv     func() (*anypb.Any, error)
	Metadata *protocol.Metadata
}

// StreamHandler is the optional capability of handlers that serve
// streaming methods (actions, and CRDT entities' streamed commands). Stream
// calls emit for every outcome the function produces, in order, and
// returns when the call is over; an error from emit ends the call.
type StreamHandler interface {
	Stream(ctx context.Context, call StreamCall, emit func(Outcome) error) error
}

// Stream serves a streaming call of method m. recv yields the client's
// messages (io.EOF at the end); send delivers each reply. Every outcome's
// side effects run before its client action; a forward's result is sent
// as a reply; a failure ends the call with UNKNOWN and its description.
func (r *Router) Stream(ctx context.Context, m *discovery.Method, recv func() ([]byte, error), send func(*protocol.Reply) error, md *protocol.Metadata) error {
	h, ok := r.handlers[m.Service.EntityType].(StreamHandler)
	if !ok {
		return status.Errorf(codes.Unimplemented, "streaming method %s is not supported for entity type %s", m.Path, m.Service.EntityType)
	}
	call := StreamCall{Method: m, Metadata: md, Recv: func() (*anypb.Any, error) {
		b, err := recv()
		if err != nil {
			return nil, err
		}
		return &anypb.Any{TypeUrl: m.InputTypeURL, Value: b}, nil
	}}
	if !m.ClientStreaming {
		// One request: read it now to route by its key.
		first, err := call.Recv()
		if errors.Is(err, io.EOF) {
			return status.Errorf(codes.InvalidArgument, "%s: the request message is missing", m.Path)
		}
		if err != nil {
			return err
		}
		id, err := EntityID(m, first.GetValue())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "%s: %v", m.Path, err)
		}
		call.EntityID = id
		sent := false
		call.Recv = func() (*anypb.Any, error) {
			if sent {
				return nil, io.EOF
			}
			sent = true
			return first, nil
		}
	}
	from := Call{Method: m, EntityID: call.EntityID}
	return h.Stream(ctx, call, func(out Outcome) error {
		if err := r.sideEffects(ctx, from, out.SideEffects, nil, 0); err != nil {
			return err
		}
		var reply *protocol.Reply
		switch a := out.Action.GetAction().(type) {
		case nil:
			return nil
		case *protocol.ClientAction_Failure:
			return status.Error(codes.Unknown, a.Failure.GetDescription())
		case *protocol.ClientAction_Reply:
			r.checkReplyType(ctx, m, a.Reply)
			reply = a.Reply
		case *protocol.ClientAction_Forward:
			f := a.Forward
			tr := trace{}.with("forwarded from " + m.Path)
			next, err := r.target(ctx, f.GetServiceName(), f.GetCommandName(), f.GetPayload(), f.GetMetadata(), tr)
			if err != nil {
				return err
			}
			if reply, err = r.serve(ctx, next, tr, 0); err != nil {
				return err
			}
		}
		if reply.GetPayload() == nil {
			return nil
		}
		return send(reply)
	})
}
