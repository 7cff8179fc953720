package sdk

import (
	"context"
	"fmt"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Failure is a command failure that is reported to the client with its
// Description. The Fail methods of the contexts create one; any other error
// returned by a handler is reported the same way, with its Error text.
type Failure struct {
	Description string
}

// Error returns the description.
func (f *Failure) Error() string { return f.Description }

// CommandContext is what a command handler can see and do besides changing
// the state: the command's identity and metadata, emitting events, failing,
// forwarding and requesting side effects. It is valid only until the handler
// returns and must not be shared with other goroutines.
type CommandContext struct {
	ctx      context.Context
	instance *eventSourcedInstance
	cmd      *protocol.Command

	events  []*anypb.Any
	applied bool // an event handler ran, so the state may differ from the journal
	fx      effects
}

// Context returns the context of the entity's stream; it is cancelled when
// the proxy goes away. Use it for calls the handler makes.
func (c *CommandContext) Context() context.Context { return c.ctx }

// EntityID returns the id of the entity the command is for.
func (c *CommandContext) EntityID() string {
	if id := c.cmd.GetEntityId(); id != "" {
		return id
	}
	return c.instance.entityID
}

// CommandName returns the gRPC method name of the command, for example
// "AddItem".
func (c *CommandContext) CommandName() string { return c.cmd.GetName() }

// CommandID returns the command's id, unique within the entity's stream.
func (c *CommandContext) CommandID() int64 { return c.cmd.GetId() }

// Metadata returns the command's metadata (often empty: proxies do not send
// request headers to entities by default).
func (c *CommandContext) Metadata() Metadata { return metadataFromProto(c.cmd.GetMetadata()) }

// Sequence returns the sequence number of the last event applied to the
// state, counting the events this command has emitted so far.
func (c *CommandContext) Sequence() int64 { return c.instance.seq + int64(len(c.events)) }

// Emit records an event and applies it to the state at once, through the
// event handler registered for its type, so the rest of the handler sees the
// new state. The events are persisted by the proxy only if the command
// succeeds. If the event cannot be applied (no handler, or the handler
// fails), the command fails and later calls to Emit are ignored.
func (c *CommandContext) Emit(event proto.Message) {
	if c.fx.err != nil {
		return
	}
	if !isSet(event) {
		c.fx.fail(fmt.Errorf("emit: nil event"))
		return
	}
	name := event.ProtoReflect().Descriptor().FullName()
	h := c.instance.def.events[name]
	if h == nil {
		c.fx.fail(fmt.Errorf("emit %s: no event handler for this type", name))
		return
	}
	a, err := MarshalAny(event)
	if err != nil {
		c.fx.fail(fmt.Errorf("emit: %w", err))
		return
	}
	// Apply a decoded copy, exactly what a replay would see, so live and
	// replayed state cannot drift and later changes to event do not leak.
	decoded, err := unmarshalAnyAs(a, h.typ)
	if err != nil {
		c.fx.fail(fmt.Errorf("emit: %w", err))
		return
	}
	c.applied = true
	if err := h.apply(c.instance.state, decoded); err != nil {
		c.fx.fail(fmt.Errorf("apply event %s: %w", name, err))
		return
	}
	c.events = append(c.events, a)
}

// Fail returns a Failure with the formatted description and also records it,
// so the command fails even if the handler does not return the error:
//
//	return nil, ctx.Fail("Cannot add a quantity of %d", q)
func (c *CommandContext) Fail(format string, args ...any) error {
	return c.fx.failf(format, args...)
}

// Forward hands the command on to method of service (full name, for example
// "com.example.shoppingcart.ShoppingCart") with msg as input; that method's
// reply becomes the reply to the client. The handler should then return a
// nil reply. The target is checked against the protobuf registry; a mistake
// fails the command.
func (c *CommandContext) Forward(service, method string, msg proto.Message, opts ...EffectOption) {
	c.fx.addForward(service, method, msg, opts)
}

// SideEffect asks the proxy to call method of service with msg after the
// command's events are persisted, discarding the result. A synchronous side
// effect completes before the client gets the reply. Side effects are dropped
// when the command fails. The target is checked like Forward's.
func (c *CommandContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}

// SetReplyMetadata attaches metadata to the reply (proxies may turn it into
// response headers).
func (c *CommandContext) SetReplyMetadata(md Metadata) { c.fx.replyMetadata = md }
