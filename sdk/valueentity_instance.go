package sdk

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/proto"
)

// valueEntityInstance is one activation of a value entity: the current
// value and the command logic. The gRPC stream handler and the testkit both
// drive it, one command at a time.
type valueEntityInstance struct {
	def      *valueEntityDef
	entityID string
	logger   *slog.Logger
	// state is the stored value as last sent to (or received from) the
	// proxy, decoded; handlers only ever see copies of it.
	state proto.Message
}

var _ bridge.ValueEntityDefinition = (*valueEntityDef)(nil)
var _ bridge.ValueEntityInstance = (*valueEntityInstance)(nil)

// ServiceName returns the entity's gRPC service full name.
func (d *valueEntityDef) ServiceName() string { return d.serviceName }

// Start implements bridge.ValueEntityDefinition.
func (d *valueEntityDef) Start(init *protocol.ValueEntityInit, logger *slog.Logger) (bridge.ValueEntityInstance, error) {
	inst, err := d.start(init, logger)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// start builds the state of init's entity: the stored value if there is
// one, the initial state otherwise.
func (d *valueEntityDef) start(init *protocol.ValueEntityInit, logger *slog.Logger) (_ *valueEntityInstance, err error) {
	defer recoverError(&err, logger, "initialise entity")
	inst := &valueEntityInstance{
		def:      d,
		entityID: init.GetEntityId(),
		logger:   logger.With("service", d.serviceName, "entity_id", init.GetEntityId()),
	}
	if v := init.GetState().GetValue(); v != nil {
		if inst.state, err = unmarshalAnyAs(v, d.stateType); err != nil {
			return nil, fmt.Errorf("stored value: %w", err)
		}
		return inst, nil
	}
	if inst.state, err = d.newState(init.GetEntityId()); err != nil {
		return nil, err
	}
	return inst, nil
}

// State returns the current value (an S).
func (i *valueEntityInstance) State() any { return i.state }

// HandleCommand runs one command and returns the message for the proxy: a
// reply, or a top-level failure (handler panic) after which the stream must
// end.
func (i *valueEntityInstance) HandleCommand(ctx context.Context, cmd *protocol.Command) (out *protocol.ValueEntityStreamOut) {
	defer func() {
		if r := recover(); r != nil {
			i.logger.Error("command handler panicked", "command", cmd.GetName(), "command_id", cmd.GetId(),
				"panic", r, "stack", string(debug.Stack()))
			out = valueTopLevelFailure(cmd.GetId(), fmt.Sprintf("command %s panicked: %v", cmd.GetName(), r))
		}
	}()
	h := i.def.commands[cmd.GetName()]
	if h == nil {
		return valueFailureReply(cmd.GetId(), "unknown command "+cmd.GetName())
	}
	in := h.input.New().Interface()
	if p := cmd.GetPayload(); p != nil {
		var err error
		if in, err = unmarshalAnyAs(p, h.input); err != nil {
			return valueFailureReply(cmd.GetId(), fmt.Sprintf("command %s: %v", cmd.GetName(), err))
		}
	}
	vc := &ValueContext{ctx: ctx, instance: i, cmd: cmd}
	// The handler gets a copy, so that changes it makes in place before
	// failing cannot leak into the value the next command sees.
	reply, err := h.call(vc, proto.Clone(i.state), in)
	if vc.fx.err != nil {
		err = vc.fx.err
	}
	var action *protocol.ClientAction
	if err == nil {
		action, err = vc.fx.clientAction(cmd.GetName(), h.method, h.output, reply)
	}
	var next proto.Message
	if err == nil {
		next, err = i.nextState(vc)
	}
	if err != nil {
		return valueFailureReply(cmd.GetId(), failureDescription(err))
	}
	i.state = next
	return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: &protocol.ValueEntityReply{
		CommandId:    cmd.GetId(),
		ClientAction: action,
		SideEffects:  vc.fx.sideEffects,
		StateAction:  vc.stateAction,
	}}}
}

// nextState is the value after a successful command: a decoded copy of an
// update (exactly what the proxy stores, and what a reactivation would
// see), the initial state after a delete, or the current value.
func (i *valueEntityInstance) nextState(vc *ValueContext) (proto.Message, error) {
	switch {
	case vc.update != nil:
		return unmarshalAnyAs(vc.update, i.def.stateType)
	case vc.stateAction != nil:
		return i.def.newState(i.entityID)
	default:
		return i.state, nil
	}
}

// valueFailureReply is a client-visible failure of one command: no state
// action, no side effects.
func valueFailureReply(commandID int64, description string) *protocol.ValueEntityStreamOut {
	return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Reply{Reply: &protocol.ValueEntityReply{
		CommandId: commandID,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{
			CommandId: commandID, Description: description,
		}}},
	}}}
}

// valueTopLevelFailure reports an unexpected error of the user function.
func valueTopLevelFailure(commandID int64, description string) *protocol.ValueEntityStreamOut {
	return &protocol.ValueEntityStreamOut{Message: &protocol.ValueEntityStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: commandID, Description: description,
	}}}
}
