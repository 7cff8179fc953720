package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/types/known/anypb"
)

// eventSourcedInstance is one activation of an event-sourced entity: the
// state built from the snapshot and the journal, and the command loop logic.
// The gRPC stream handler and the testkit both drive it, one message at a
// time.
type eventSourcedInstance struct {
	def      *eventSourcedDef
	entityID string
	logger   *slog.Logger
	state    any
	seq      int64
	// stale is set after a failed command had already applied events: the
	// state no longer matches the journal and the proxy must restart the
	// entity before it can take another command.
	stale bool
}

var _ bridge.EventSourcedDefinition = (*eventSourcedDef)(nil)
var _ bridge.EventSourcedInstance = (*eventSourcedInstance)(nil)

// ServiceName returns the entity's gRPC service full name.
func (d *eventSourcedDef) ServiceName() string { return d.serviceName }

// Start implements bridge.EventSourcedDefinition.
func (d *eventSourcedDef) Start(init *protocol.EventSourcedInit, logger *slog.Logger) (bridge.EventSourcedInstance, error) {
	inst, err := d.start(init, logger)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// start builds a fresh state for init's entity and applies init's snapshot.
func (d *eventSourcedDef) start(init *protocol.EventSourcedInit, logger *slog.Logger) (_ *eventSourcedInstance, err error) {
	defer recoverError(&err, logger, "initialise entity")
	state, err := d.newState(init.GetEntityId())
	if err != nil {
		return nil, err
	}
	inst := &eventSourcedInstance{
		def:      d,
		entityID: init.GetEntityId(),
		logger:   logger.With("service", d.serviceName, "entity_id", init.GetEntityId()),
		state:    state,
	}
	if snap := init.GetSnapshot(); snap != nil {
		if d.snapshot == nil {
			return nil, errors.New("received a snapshot, but the entity has no snapshot handler")
		}
		msg, err := unmarshalAnyAs(snap.GetSnapshot(), d.snapshot.typ)
		if err != nil {
			return nil, fmt.Errorf("snapshot at sequence %d: %w", snap.GetSnapshotSequence(), err)
		}
		if err := d.snapshot.apply(state, msg); err != nil {
			return nil, fmt.Errorf("apply snapshot at sequence %d: %w", snap.GetSnapshotSequence(), err)
		}
		inst.seq = snap.GetSnapshotSequence()
	}
	return inst, nil
}

// State returns the current state (a *T).
func (i *eventSourcedInstance) State() any { return i.state }

// Sequence returns the sequence number of the last applied event.
func (i *eventSourcedInstance) Sequence() int64 { return i.seq }

// ApplyEvent applies one replayed journal event.
func (i *eventSourcedInstance) ApplyEvent(ev *protocol.EventSourcedEvent) (err error) {
	defer recoverError(&err, i.logger, "apply event")
	payload := ev.GetPayload()
	h := i.def.events[anyMessageName(payload)]
	if h == nil {
		return fmt.Errorf("event %d: no event handler for type %q", ev.GetSequence(), payload.GetTypeUrl())
	}
	msg, err := unmarshalAnyAs(payload, h.typ)
	if err != nil {
		return fmt.Errorf("event %d: %w", ev.GetSequence(), err)
	}
	if err := h.apply(i.state, msg); err != nil {
		return fmt.Errorf("apply event %d (%s): %w", ev.GetSequence(), h.typ.Descriptor().FullName(), err)
	}
	i.seq = ev.GetSequence()
	return nil
}

// HandleCommand runs one command and returns the message for the proxy: a
// reply, or a top-level failure (handler panic, or a command on a stale
// state) after which the stream must end.
func (i *eventSourcedInstance) HandleCommand(ctx context.Context, cmd *protocol.Command) (out *protocol.EventSourcedStreamOut) {
	defer func() {
		if r := recover(); r != nil {
			i.logger.Error("command handler panicked", "command", cmd.GetName(), "command_id", cmd.GetId(),
				"panic", r, "stack", string(debug.Stack()))
			i.stale = true
			out = topLevelFailure(cmd.GetId(), fmt.Sprintf("command %s panicked: %v", cmd.GetName(), r))
		}
	}()
	if i.stale {
		return topLevelFailure(cmd.GetId(), "entity must be restarted: a failed command left its state out of date")
	}
	h := i.def.commands[cmd.GetName()]
	if h == nil {
		return failureReply(cmd.GetId(), "unknown command "+cmd.GetName(), false)
	}
	in := h.input.New().Interface()
	if p := cmd.GetPayload(); p != nil {
		var err error
		if in, err = unmarshalAnyAs(p, h.input); err != nil {
			return failureReply(cmd.GetId(), fmt.Sprintf("command %s: %v", cmd.GetName(), err), false)
		}
	}
	cc := &CommandContext{ctx: ctx, instance: i, cmd: cmd}
	reply, err := h.call(cc, i.state, in)
	if cc.fx.err != nil {
		err = cc.fx.err
	}
	var action *protocol.ClientAction
	if err == nil {
		action, err = cc.fx.clientAction(cmd.GetName(), h.method, h.output, reply)
	}
	if err != nil {
		// Events already applied cannot be taken back: ask for a restart so
		// the proxy rebuilds the state from the journal (PROTOCOL 7.1).
		if cc.applied {
			i.stale = true
		}
		return failureReply(cmd.GetId(), failureDescription(err), cc.applied)
	}
	before := i.seq
	i.seq += int64(len(cc.events))
	r := &protocol.EventSourcedReply{
		CommandId:    cmd.GetId(),
		ClientAction: action,
		SideEffects:  cc.fx.sideEffects,
		Events:       cc.events,
		Snapshot:     i.maybeSnapshot(before),
	}
	return &protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Reply{Reply: r}}
}

// maybeSnapshot takes a snapshot when the sequence crossed a multiple of the
// snapshot interval since before. A snapshot is an optimisation, so a failure
// to take one is logged and the reply goes out without it.
func (i *eventSourcedInstance) maybeSnapshot(before int64) *anypb.Any {
	n := i.def.cfg.snapshotEvery
	if n <= 0 || before/n == i.seq/n {
		return nil
	}
	snap, err := i.def.snapshot.take(i.state)
	if err == nil {
		var a *anypb.Any
		if a, err = MarshalAny(snap); err == nil {
			return a
		}
	}
	i.logger.Error("taking a snapshot failed; continuing without it", "sequence", i.seq, "error", err)
	return nil
}

func failureDescription(err error) string {
	var f *Failure
	if errors.As(err, &f) {
		return f.Description
	}
	return err.Error()
}

// failureReply is a client-visible failure of one command.
func failureReply(commandID int64, description string, restart bool) *protocol.EventSourcedStreamOut {
	return &protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Reply{Reply: &protocol.EventSourcedReply{
		CommandId: commandID,
		ClientAction: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{
			CommandId: commandID, Description: description, Restart: restart,
		}}},
	}}}
}

// topLevelFailure reports an unexpected error of the user function.
func topLevelFailure(commandID int64, description string) *protocol.EventSourcedStreamOut {
	return &protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: commandID, Description: description,
	}}}
}

// recoverError turns a panic in user code into an error (with a logged
// stack), for the paths where a panic must end the activation, not the
// process.
func recoverError(err *error, logger *slog.Logger, what string) {
	if r := recover(); r != nil {
		logger.Error(what+" panicked", "panic", r, "stack", string(debug.Stack()))
		*err = fmt.Errorf("%s panicked: %v", what, r)
	}
}
