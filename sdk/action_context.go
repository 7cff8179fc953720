package sdk

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// ActionContext is what an action handler can see and do besides replying:
// the call's context (cancelled when the caller cancels the call or the
// proxy goes away), its method and request metadata, and the effects of
// the next response: a failure, a forward, side effects and reply metadata.
//
// Effects are recorded until the next response is made, and belong to it:
// in unary and client-streaming handlers that is the handler's return; in
// server-streaming and bidi handlers it is the next call of send (or the
// return). Its methods are safe for concurrent use, but effects recorded by
// two goroutines race for the same response.
type ActionContext struct {
	ctx    context.Context
	header *protocol.ActionCommand
	method *actionMethod

	mu sync.Mutex
	fx effects // effects of the next response, guarded by mu

	// sendMu serialises responses (gRPC allows one sender at a time) and
	// the end of the call. It is taken before mu, and mu is never held
	// during I/O, so recording effects never waits for a slow send.
	sendMu sync.Mutex
	done   atomic.Bool // the handler returned: no more responses or receives
}

// Context returns the call's context; it is cancelled when the caller
// cancels the call, when the proxy goes away, and after the handler
// returns. Use it for calls the handler makes and to stop long streams.
func (c *ActionContext) Context() context.Context { return c.ctx }

// ServiceName returns the full name of the action's gRPC service.
func (c *ActionContext) ServiceName() string { return c.header.GetServiceName() }

// CommandName returns the gRPC method name of the call, for example
// "Checkout".
func (c *ActionContext) CommandName() string { return c.header.GetName() }

// Metadata returns the call's metadata: the request headers the client
// sent (gRPC has them once per call, so streamed messages add none).
func (c *ActionContext) Metadata() Metadata { return metadataFromProto(c.header.GetMetadata()) }

// Fail returns a Failure with the formatted description and also records
// it, so the next response is that failure (with the side effects recorded
// for it) even if the handler does not return the error. A failure ends
// the client's call with the description; in a stream it need not end the
// handler, but the proxy stops delivering its responses.
//
//	return nil, ctx.Fail("Cannot check out an empty cart")
func (c *ActionContext) Fail(format string, args ...any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fx.failf(format, args...)
}

// Forward makes the next response a forward: the proxy calls method of
// service (full name) with msg as input, and that call's reply goes to the
// client in place of one from this handler, which should then reply nil.
// The target is checked against the protobuf registry; a mistake makes the
// response a failure.
func (c *ActionContext) Forward(service, method string, msg proto.Message, opts ...EffectOption) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fx.addForward(service, method, msg, opts)
}

// SideEffect adds to the next response a call of method of service with
// msg, whose result the proxy discards. Side effects run whatever the
// response is, failures included; a synchronous one completes before the
// response's reply or forward is carried out. The target is checked like
// Forward's.
func (c *ActionContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}

// SetReplyMetadata attaches metadata to the next reply (proxies may turn it
// into response headers).
func (c *ActionContext) SetReplyMetadata(md Metadata) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fx.replyMetadata = md
}

// takeLocked makes a response from the recorded effects, reply (nil for
// none) and herr (an error the handler returned), and clears the effects
// for the next response. When herr carries a gRPC status instead, it
// returns that status as the error: the call must end with it. Call with
// c.mu held.
func (c *ActionContext) takeLocked(reply proto.Message, herr error) (*protocol.ActionResponse, error) {
	fx := c.fx
	c.fx = effects{}
	resp := &protocol.ActionResponse{SideEffects: fx.sideEffects}
	err := fx.err
	if err == nil && herr != nil {
		if st := callStatus(c.ctx, herr); st != nil {
			return nil, st
		}
		err = herr
	}
	if err == nil && fx.forward != nil && isSet(reply) {
		err = fmt.Errorf("command %s both forwarded and returned a reply", c.header.GetName())
	}
	if err == nil && fx.forward != nil {
		resp.Response = &protocol.ActionResponse_Forward{Forward: fx.forward}
		return resp, nil
	}
	if err == nil && isSet(reply) {
		var r *protocol.Reply
		if r, err = fx.reply(c.header.GetName(), c.method.method, reply); err == nil {
			resp.Response = &protocol.ActionResponse_Reply{Reply: r}
			return resp, nil
		}
	}
	if err != nil {
		resp.Response = &protocol.ActionResponse_Failure{Failure: &protocol.Failure{Description: failureDescription(err)}}
	}
	return resp, nil
}

// pendingLocked reports whether effects are waiting for a response.
func (c *ActionContext) pendingLocked() bool {
	return c.fx.err != nil || c.fx.forward != nil || len(c.fx.sideEffects) > 0
}

// callStatus returns the status a handler's error ends the call with, or
// nil when the error is a failure to report in a response: errors carrying
// a gRPC status end the call with it, and so do the context's own errors
// once the call is cancelled or past its deadline.
func callStatus(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return status.FromContextError(err).Err()
	}
	if st, ok := status.FromError(err); ok {
		return st.Err()
	}
	return nil
}
