package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk/internal/bridge"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// crdtInstance is one activation of a CRDT entity: the CRDT's value and the
// open streamed commands. The gRPC stream handler and the testkit both
// drive it, one message at a time.
type crdtInstance struct {
	def      *crdtDef
	entityID string
	logger   *slog.Logger
	h        *crdtHost
	streams  map[int64]*crdtStream // open streamed commands by command id
	deleted  bool                  // the function deleted the CRDT: the activation is over
}

// crdtStream is a streamed command: its callbacks, and whether its handler
// ended it.
type crdtStream struct {
	cmd      *protocol.Command
	handler  *crdtCommandHandler
	onChange func(*CRDTChangeContext) (proto.Message, error)
	onCancel func(*CRDTCancelContext) error
	ended    bool
}

var _ bridge.CRDTDefinition = (*crdtDef)(nil)
var _ bridge.CRDTInstance = (*crdtInstance)(nil)

// ServiceName returns the entity's gRPC service full name.
func (d *crdtDef) ServiceName() string { return d.serviceName }

// Streamed reports whether method is a streamed (server-streaming) method,
// and whether the entity has it at all.
func (d *crdtDef) Streamed(method string) (streamed, ok bool) {
	h := d.commands[method]
	if h == nil {
		return false, false
	}
	return h.streamed, true
}

// Start implements bridge.CRDTDefinition.
func (d *crdtDef) Start(init *protocol.CrdtInit, logger *slog.Logger) (bridge.CRDTInstance, error) {
	inst, err := d.start(init, logger)
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// start creates the activation with the value in init, if any.
func (d *crdtDef) start(init *protocol.CrdtInit, logger *slog.Logger) (*crdtInstance, error) {
	inst := &crdtInstance{
		def:      d,
		entityID: init.GetEntityId(),
		logger:   logger.With("service", d.serviceName, "entity_id", init.GetEntityId()),
		h:        newCRDTHost(),
		streams:  make(map[int64]*crdtStream),
	}
	if delta := init.GetDelta(); delta != nil {
		if err := inst.h.applyDelta(delta); err != nil {
			return nil, fmt.Errorf("initial value: %w", err)
		}
	}
	return inst, nil
}

// State returns the CRDT (a CRDT, or nil).
func (i *crdtInstance) State() any {
	if i.h.root == nil {
		return nil
	}
	return i.h.root
}

// FullDelta returns the CRDT's value as an init delta, nil if none.
func (i *crdtInstance) FullDelta() *protocol.CrdtDelta { return i.h.fullDelta() }

// Deleted reports whether a command or cancellation deleted the CRDT.
func (i *crdtInstance) Deleted() bool { return i.deleted }

func (i *crdtInstance) openStreams(method string) int {
	n := 0
	for _, st := range i.streams {
		if method == "" || st.cmd.GetName() == method {
			n++
		}
	}
	return n
}

// crdtPanic is a handler panic, which ends the activation.
type crdtPanic struct{ description string }

func (p *crdtPanic) Error() string { return p.description }

// run runs a handler with the CRDT host set up for it. A panic is logged,
// the handler's changes undone, and a *crdtPanic returned.
func (i *crdtInstance) run(fx *effects, writable bool, what string, cmd *protocol.Command, fn func() (proto.Message, error)) (reply proto.Message, err error) {
	i.h.begin(fx, writable)
	defer func() {
		if r := recover(); r != nil {
			i.logger.Error(what+" panicked", "command", cmd.GetName(), "command_id", cmd.GetId(),
				"panic", r, "stack", string(debug.Stack()))
			i.h.end(false)
			reply, err = nil, &crdtPanic{fmt.Sprintf("%s of command %s panicked: %v", what, cmd.GetName(), r)}
		}
	}()
	return fn()
}

// HandleCommand runs one command. It returns the reply, then the messages
// of other streams that the command's change caused; a top-level failure
// (handler panic) among them ends the activation.
func (i *crdtInstance) HandleCommand(ctx context.Context, cmd *protocol.Command) []*protocol.CrdtStreamOut {
	id := cmd.GetId()
	h := i.def.commands[cmd.GetName()]
	if h == nil {
		return []*protocol.CrdtStreamOut{crdtFailureReply(id, "unknown command "+cmd.GetName())}
	}
	in := h.input.New().Interface()
	if p := cmd.GetPayload(); p != nil {
		var err error
		if in, err = unmarshalAnyAs(p, h.input); err != nil {
			return []*protocol.CrdtStreamOut{crdtFailureReply(id, fmt.Sprintf("command %s: %v", cmd.GetName(), err))}
		}
	}
	cc := &CRDTContext{crdtAccess: crdtAccess{i.h}, ctx: ctx, inst: i, cmd: cmd}
	var st *crdtStream
	if h.streamed {
		st = &crdtStream{cmd: cmd, handler: h}
	}
	reply, err := i.run(&cc.fx, true, "command handler", cmd, func() (proto.Message, error) { return h.call(cc, st, in) })
	if pe := (*crdtPanic)(nil); errors.As(err, &pe) {
		return []*protocol.CrdtStreamOut{crdtTopLevelFailure(id, pe.description)}
	}
	if err == nil && cc.fx.err != nil {
		err = cc.fx.err
	}
	var action *protocol.ClientAction
	if err == nil {
		if h.streamed {
			action, err = optionalClientAction(&cc.fx, cmd.GetName(), h.method, h.output, reply)
		} else {
			action, err = cc.fx.clientAction(cmd.GetName(), h.method, h.output, reply)
		}
	}
	if err != nil {
		i.h.end(false)
		return []*protocol.CrdtStreamOut{crdtFailureReply(id, failureDescription(err))}
	}
	sa, changed := i.finish(cc.deleted, cc.wc)
	r := &protocol.CrdtReply{CommandId: id, ClientAction: action, SideEffects: cc.fx.sideEffects, StateAction: sa}
	out := []*protocol.CrdtStreamOut{{Message: &protocol.CrdtStreamOut_Reply{Reply: r}}}
	if i.deleted {
		return out
	}
	if changed {
		out = append(out, i.notify(ctx)...)
	}
	// Registered after notify: the reply already shows this change.
	if st != nil && cmd.GetStreamed() && !st.ended && (st.onChange != nil || st.onCancel != nil) {
		r.Streamed = true
		i.streams[id] = st
	}
	return out
}

// finish ends a successful handler that may change the CRDT and returns
// the state action for the proxy (nil if nothing changed) and whether the
// value changed.
func (i *crdtInstance) finish(deleted bool, wc WriteConsistency) (*protocol.CrdtStateAction, bool) {
	if deleted {
		i.h.end(false)
		i.h.remove()
		i.deleted = true
		i.streams = make(map[int64]*crdtStream)
		return &protocol.CrdtStateAction{
			Action:           &protocol.CrdtStateAction_Delete{Delete: &protocol.CrdtDelete{}},
			WriteConsistency: protocol.CrdtWriteConsistency(wc),
		}, false
	}
	d := i.h.end(true)
	if d == nil {
		return nil, false
	}
	return &protocol.CrdtStateAction{
		Action:           &protocol.CrdtStateAction_Update{Update: d},
		WriteConsistency: protocol.CrdtWriteConsistency(wc),
	}, true
}

// notify runs the OnChange callbacks of the open streams, in the order the
// streams were opened, and returns their messages.
func (i *crdtInstance) notify(ctx context.Context) []*protocol.CrdtStreamOut {
	ids := make([]int64, 0, len(i.streams))
	for id, st := range i.streams {
		if st.onChange != nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []*protocol.CrdtStreamOut
	for _, id := range ids {
		msg, crashed := i.change(ctx, i.streams[id])
		if msg != nil {
			out = append(out, &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{StreamedMessage: msg}})
		}
		if crashed != nil {
			return append(out, crashed)
		}
	}
	return out
}

// change runs one stream's OnChange callback and returns the message for
// its client (nil if there is nothing to send), or a top-level failure.
func (i *crdtInstance) change(ctx context.Context, st *crdtStream) (*protocol.CrdtStreamedMessage, *protocol.CrdtStreamOut) {
	id := st.cmd.GetId()
	cc := &CRDTChangeContext{crdtAccess: crdtAccess{i.h}, ctx: ctx, inst: i, cmd: st.cmd}
	reply, err := i.run(&cc.fx, false, "OnChange", st.cmd, func() (proto.Message, error) { return st.onChange(cc) })
	if pe := (*crdtPanic)(nil); errors.As(err, &pe) {
		delete(i.streams, id)
		return nil, crdtTopLevelFailure(id, pe.description)
	}
	i.h.end(false) // read only: forget what accessors created
	if err == nil && cc.fx.err != nil {
		err = cc.fx.err
	}
	var action *protocol.ClientAction
	if err == nil {
		action, err = optionalClientAction(&cc.fx, st.cmd.GetName(), st.handler.method, st.handler.output, reply)
	}
	if err != nil {
		delete(i.streams, id)
		return &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: failureAction(id, failureDescription(err)), EndStream: true}, nil
	}
	if cc.ended {
		delete(i.streams, id)
	}
	if action == nil && len(cc.fx.sideEffects) == 0 && !cc.ended {
		return nil, nil
	}
	return &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: action, SideEffects: cc.fx.sideEffects, EndStream: cc.ended}, nil
}

// HandleDelta applies a delta from the proxy and runs the OnChange
// callbacks. An invalid delta is a top-level failure.
func (i *crdtInstance) HandleDelta(ctx context.Context, d *protocol.CrdtDelta) []*protocol.CrdtStreamOut {
	if err := i.h.applyDelta(d); err != nil {
		i.logger.Error("invalid delta from the proxy", "error", err)
		return []*protocol.CrdtStreamOut{crdtTopLevelFailure(0, fmt.Sprintf("entity %q: invalid delta: %v", i.entityID, err))}
	}
	return i.notify(ctx)
}

// HandleStreamCancelled runs the cancelled stream's OnCancel callback and
// returns the one cancellation response, then the messages of other
// streams that its change caused.
func (i *crdtInstance) HandleStreamCancelled(ctx context.Context, sc *protocol.StreamCancelled) []*protocol.CrdtStreamOut {
	id := sc.GetId()
	st := i.streams[id]
	delete(i.streams, id)
	resp := &protocol.CrdtStreamCancelledResponse{CommandId: id}
	out := []*protocol.CrdtStreamOut{{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: resp}}}
	if st == nil || st.onCancel == nil {
		return out
	}
	cc := &CRDTCancelContext{crdtAccess: crdtAccess{i.h}, ctx: ctx, inst: i, cmd: st.cmd}
	_, err := i.run(&cc.fx, true, "OnCancel", st.cmd, func() (proto.Message, error) { return nil, st.onCancel(cc) })
	if pe := (*crdtPanic)(nil); errors.As(err, &pe) {
		// The proxy still gets its one response before the failure.
		return append(out, crdtTopLevelFailure(id, pe.description))
	}
	if err == nil && cc.fx.err != nil {
		err = cc.fx.err
	}
	if err != nil {
		i.logger.Warn("OnCancel failed; its changes are undone", "command", st.cmd.GetName(), "command_id", id, "error", err)
		i.h.end(false)
		return out
	}
	sa, changed := i.finish(cc.deleted, cc.wc)
	resp.SideEffects, resp.StateAction = cc.fx.sideEffects, sa
	if changed {
		out = append(out, i.notify(ctx)...)
	}
	return out
}

// HandleDelete forgets the CRDT, which the proxy deleted.
func (i *crdtInstance) HandleDelete() {
	i.h.remove()
	i.streams = make(map[int64]*crdtStream)
}

// optionalClientAction is the client action of a streamed reply or message:
// a forward, the reply, or none when there is neither.
func optionalClientAction(fx *effects, command string, method protoreflect.MethodDescriptor, output protoreflect.MessageType, reply proto.Message) (*protocol.ClientAction, error) {
	if fx.forward == nil && !isSet(reply) {
		return nil, nil
	}
	return fx.clientAction(command, method, output, reply)
}

func failureAction(commandID int64, description string) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{
		CommandId: commandID, Description: description,
	}}}
}

// crdtFailureReply is a client-visible failure of one command: no state
// action, no side effects, not streamed.
func crdtFailureReply(commandID int64, description string) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: &protocol.CrdtReply{
		CommandId: commandID, ClientAction: failureAction(commandID, description),
	}}}
}

// crdtTopLevelFailure reports an unexpected error of the user function.
func crdtTopLevelFailure(commandID int64, description string) *protocol.CrdtStreamOut {
	return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Failure{Failure: &protocol.Failure{
		CommandId: commandID, Description: description,
	}}}
}
