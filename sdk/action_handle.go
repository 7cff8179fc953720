package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

var _ bridge.ActionDefinition = (*actionDef)(nil)

// ServiceName returns the action's gRPC service full name.
func (d *actionDef) ServiceName() string { return d.serviceName }

// Handle implements bridge.ActionDefinition.
func (d *actionDef) Handle(ctx context.Context, shape bridge.Shape, header *protocol.ActionCommand,
	recv func() (*protocol.ActionCommand, error), send func(*protocol.ActionResponse) error, logger *slog.Logger) error {
	return d.handle(ctx, actionShape(shape), header, recv, send, logger)
}

// handle runs one call of the action, the same way for the gRPC server and
// the testkit. header is the call's first ActionCommand (with the payload
// for unary and server-streaming calls); recv yields the following ones
// (client-streaming and bidi calls only); send delivers responses, at most
// one at a time. It returns nil when the call ends normally, or an error
// carrying the gRPC status to end it with.
func (d *actionDef) handle(ctx context.Context, shape actionShape, header *protocol.ActionCommand,
	recv func() (*protocol.ActionCommand, error), send func(*protocol.ActionResponse) error, logger *slog.Logger) (err error) {
	m := d.methods[header.GetName()]
	if m == nil {
		return status.Errorf(codes.Unimplemented, "action %s has no method %q", d.serviceName, header.GetName())
	}
	if m.shape != shape {
		return status.Errorf(codes.Unimplemented, "%s/%s is %s but was called as %s", d.serviceName, header.GetName(), m.shape, shape)
	}
	ac := &ActionContext{ctx: ctx, header: header, method: m}
	defer func() {
		if r := recover(); r != nil {
			logger.Error("action handler panicked", "service", d.serviceName, "method", header.GetName(),
				"panic", r, "stack", string(debug.Stack()))
			ac.done.Store(true)
			err = &panicError{description: fmt.Sprintf("action %s panicked: %v", header.GetName(), r)}
		}
	}()

	switch shape {
	case shapeUnary, shapeClientStream:
		var out proto.Message
		if shape == shapeUnary {
			var in proto.Message
			if in, err = m.decode(header.GetPayload()); err == nil {
				out, err = m.unary(ac, in)
			}
		} else {
			out, err = m.clientStream(ac, ac.receiver(recv))
		}
		ac.done.Store(true)
		ac.mu.Lock()
		resp, st := ac.takeLocked(out, err)
		ac.mu.Unlock()
		if st != nil {
			return st
		}
		return send(resp)
	case shapeServerStream:
		in, err := m.decode(header.GetPayload())
		if err == nil {
			err = m.serverStream(ac, in, ac.sender(send))
		}
		return ac.end(err, send)
	default:
		return ac.end(m.bidiStream(ac, ac.receiver(recv), ac.sender(send)), send)
	}
}

// decode decodes a payload as the method's input; no payload is an empty
// input message.
func (m *actionMethod) decode(p *anypb.Any) (proto.Message, error) {
	if p == nil {
		return m.input.New().Interface(), nil
	}
	in, err := unmarshalAnyAs(p, m.input)
	if err != nil {
		return nil, fmt.Errorf("command %s: %w", m.method.Name(), err)
	}
	return in, nil
}

// errHandlerReturned is returned by send and recv used after the handler
// returned.
var errHandlerReturned = errors.New("the action handler has returned")

// receiver returns the recv function of a streamed call: the decoded
// payloads of the ActionCommands after the header. A header carrying a
// payload (which the protocol does not do) counts as the first message
// rather than being dropped.
func (c *ActionContext) receiver(recv func() (*protocol.ActionCommand, error)) func() (proto.Message, error) {
	first := c.header.GetPayload()
	return func() (proto.Message, error) {
		if c.done.Load() {
			return nil, errHandlerReturned
		}
		if first != nil {
			p := first
			first = nil
			return c.method.decode(p)
		}
		cmd, err := recv()
		if err != nil {
			return nil, err
		}
		return c.method.decode(cmd.GetPayload())
	}
}

// sender returns the send function of a server-streaming or bidi call:
// each call makes one response from the recorded effects and out.
func (c *ActionContext) sender(send func(*protocol.ActionResponse) error) func(proto.Message) error {
	return func(out proto.Message) error {
		c.sendMu.Lock()
		defer c.sendMu.Unlock()
		if c.done.Load() {
			return errHandlerReturned
		}
		c.mu.Lock()
		resp, _ := c.takeLocked(out, nil) // no handler error, so no status
		c.mu.Unlock()
		return send(resp)
	}
}

// end finishes a server-streaming or bidi call after its handler returned
// herr: effects not yet sent, or herr as a failure, go out in one last
// response; herr with a gRPC status ends the call with it.
func (c *ActionContext) end(herr error, send func(*protocol.ActionResponse) error) error {
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	c.done.Store(true)
	c.mu.Lock()
	if herr == nil && !c.pendingLocked() {
		c.mu.Unlock()
		return nil
	}
	resp, st := c.takeLocked(nil, herr)
	c.mu.Unlock()
	if st != nil {
		return st
	}
	return send(resp)
}

// panicError ends a call whose handler panicked, with status INTERNAL.
type panicError struct {
	description string
}

func (e *panicError) Error() string { return e.description }

// GRPCStatus gives the call's end status.
func (e *panicError) GRPCStatus() *status.Status { return status.New(codes.Internal, e.description) }

// Unwrap lets the testkit recognise a crash.
func (e *panicError) Unwrap() error { return bridge.ErrPanicked }

// Shape implements bridge.ActionDefinition.
func (d *actionDef) Shape(method string) (bridge.Shape, bool) {
	m := d.methods[method]
	if m == nil {
		return 0, false
	}
	return bridge.Shape(m.shape), true
}
