package sdk

import (
	"context"
	"fmt"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// ValueContext is what a value entity's command handler can see and do
// besides replying: the command's identity and metadata, replacing or
// deleting the stored value, failing, forwarding and requesting side
// effects. It is valid only until the handler returns and must not be
// shared with other goroutines.
type ValueContext struct {
	ctx      context.Context
	instance *valueEntityInstance
	cmd      *protocol.Command

	// update is the encoded new value after Update, nil after Delete;
	// stateAction is set by the last Update or Delete call.
	update      *anypb.Any
	stateAction *protocol.ValueEntityAction
	fx          effects
}

// Context returns the context of the entity's stream; it is cancelled when
// the proxy goes away. Use it for calls the handler makes.
func (c *ValueContext) Context() context.Context { return c.ctx }

// EntityID returns the id of the entity the command is for.
func (c *ValueContext) EntityID() string {
	if id := c.cmd.GetEntityId(); id != "" {
		return id
	}
	return c.instance.entityID
}

// CommandName returns the gRPC method name of the command, for example
// "AddItem".
func (c *ValueContext) CommandName() string { return c.cmd.GetName() }

// CommandID returns the command's id, unique within the entity's stream.
func (c *ValueContext) CommandID() int64 { return c.cmd.GetId() }

// Metadata returns the command's metadata (often empty: proxies do not send
// request headers to entities by default).
func (c *ValueContext) Metadata() Metadata { return metadataFromProto(c.cmd.GetMetadata()) }

// Update replaces the entity's value with state, which must be a message of
// the entity's state type. The proxy stores it before the client gets the
// reply, and the next command sees it. Only the last Update or Delete of a
// command counts, and none does if the command fails. state is encoded at
// once, so changing it afterwards has no effect.
func (c *ValueContext) Update(state proto.Message) {
	if !isSet(state) {
		c.fx.fail(fmt.Errorf("update: nil state"))
		return
	}
	want := c.instance.def.stateType.Descriptor().FullName()
	if got := state.ProtoReflect().Descriptor().FullName(); got != want {
		c.fx.fail(fmt.Errorf("update: the state is a %s, want %s", got, want))
		return
	}
	a, err := MarshalAny(state)
	if err != nil {
		c.fx.fail(fmt.Errorf("update: %w", err))
		return
	}
	c.update = a
	c.stateAction = &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Update{
		Update: &protocol.ValueEntityUpdate{Value: a},
	}}
}

// Delete removes the entity's stored value; the next command sees the
// initial state again. Only the last Update or Delete of a command counts,
// and none does if the command fails.
func (c *ValueContext) Delete() {
	c.update = nil
	c.stateAction = &protocol.ValueEntityAction{Action: &protocol.ValueEntityAction_Delete{
		Delete: &protocol.ValueEntityDelete{},
	}}
}

// Fail returns a Failure with the formatted description and also records it,
// so the command fails even if the handler does not return the error:
//
//	return nil, ctx.Fail("Cannot add a quantity of %d", q)
func (c *ValueContext) Fail(format string, args ...any) error {
	return c.fx.failf(format, args...)
}

// Forward hands the command on to method of service (full name) with msg
// as input, after the state change (if any) is stored; that method's reply
// becomes the reply to the client. The handler should then return a nil
// reply. The target is checked against the protobuf registry; a mistake
// fails the command.
func (c *ValueContext) Forward(service, method string, msg proto.Message, opts ...EffectOption) {
	c.fx.addForward(service, method, msg, opts)
}

// SideEffect asks the proxy to call method of service with msg after the
// state change (if any) is stored, discarding the result. A synchronous side
// effect completes before the client gets the reply. Side effects are
// dropped when the command fails. The target is checked like Forward's.
func (c *ValueContext) SideEffect(service, method string, msg proto.Message, synchronous bool, opts ...EffectOption) {
	c.fx.addSideEffect(service, method, msg, synchronous, opts)
}

// SetReplyMetadata attaches metadata to the reply (proxies may turn it into
// response headers).
func (c *ValueContext) SetReplyMetadata(md Metadata) { c.fx.replyMetadata = md }
