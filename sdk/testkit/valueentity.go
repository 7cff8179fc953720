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
	"google.golang.org/protobuf/types/known/anypb"
)

// ValueEntity is one value entity under test, with the value the proxy
// would have stored for it. It is not safe for concurrent use.
//
//	cart, err := testkit.NewValueEntity(cart.New(), "user-1")
//	res, err := testkit.CallValue[*emptypb.Empty](cart, "AddItem", &pb.AddLineItem{UserId: "user-1", ProductId: "p1", Quantity: 2})
//	// res.Updated holds the stored *pb.Cart, cart.State() the same value.
type ValueEntity[S proto.Message] struct {
	def      bridge.ValueEntityDefinition
	entityID string
	logger   *slog.Logger

	inst          bridge.ValueEntityInstance
	nextCommandID int64

	stored *anypb.Any // nil when nothing is stored
}

// NewValueEntity validates entity like sdk.Server.RegisterValueEntity does
// and activates it for entityID, from the value given with WithValue if
// any.
func NewValueEntity[S proto.Message](entity *sdk.ValueEntity[S], entityID string, opts ...Option) (*ValueEntity[S], error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.snapshot != nil || len(o.events) > 0 || o.crdtValue != nil {
		return nil, errors.New("WithSnapshot, WithEvents and WithCRDTValue are for other entity types; use WithValue")
	}
	def, err := bridge.CompileValueEntity(entity)
	if err != nil {
		return nil, err
	}
	e := &ValueEntity[S]{def: def, entityID: entityID, logger: o.logger}
	if o.value != nil {
		if e.stored, err = sdk.MarshalAny(o.value); err != nil {
			return nil, fmt.Errorf("value: %w", err)
		}
	}
	if err := e.Restart(); err != nil {
		return nil, err
	}
	return e, nil
}

// Restart ends the current activation and starts a new one from the stored
// value, as the proxy does after passivation.
func (e *ValueEntity[S]) Restart() error {
	init := &protocol.ValueEntityInit{
		ServiceName: e.def.ServiceName(),
		EntityId:    e.entityID,
		State:       &protocol.ValueEntityInitState{Value: e.stored},
	}
	inst, err := e.def.Start(init, e.logger)
	if err != nil {
		return fmt.Errorf("activate %q: %w", e.entityID, err)
	}
	e.inst = inst
	e.nextCommandID = 1
	return nil
}

// State returns the entity's current in-memory value. Changing it changes
// the entity, so treat it as read-only.
func (e *ValueEntity[S]) State() S { return e.inst.State().(S) }

// Stored returns a copy of the value the proxy would have stored, and
// false when there is none (never stored, or deleted).
func (e *ValueEntity[S]) Stored() (S, bool, error) {
	var zero S
	if e.stored == nil {
		return zero, false, nil
	}
	m, err := sdk.UnmarshalAny(e.stored)
	if err != nil {
		return zero, false, err
	}
	s, ok := m.(S)
	if !ok {
		return zero, false, fmt.Errorf("stored value is a %T, not a %T", m, zero)
	}
	return s, true, nil
}

// ValueResult is the outcome of one value entity command.
type ValueResult[Out proto.Message] struct {
	// Reply is the reply message; the zero Out when the command failed or
	// forwarded.
	Reply         Out
	ReplyMetadata sdk.Metadata
	// Failure is non-nil when the command failed.
	Failure *Failure
	// Forward is non-nil when the command was forwarded.
	Forward     *Effect
	SideEffects []Effect
	// Updated is the new value the command stored (decoded), or nil.
	Updated proto.Message
	// Deleted is set when the command deleted the stored value.
	Deleted bool
}

// CallValue sends the command method with input in to the entity, as the
// proxy would, and stores the resulting value (or deletes it). A
// client-visible failure is reported in ValueResult.Failure; an error means
// the call could not be made or the entity crashed (ErrCrashed, after which
// the entity is restarted from the stored value). Out is the method's reply
// type; write it explicitly:
//
//	res, err := testkit.CallValue[*pb.Cart](cart, "GetCart", &pb.GetShoppingCart{UserId: "u1"})
func CallValue[Out proto.Message, S proto.Message, In proto.Message](e *ValueEntity[S], method string, in In, opts ...CallOption) (*ValueResult[Out], error) {
	payload, err := sdk.MarshalAny(in)
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", method, err)
	}
	cmd := &protocol.Command{EntityId: e.entityID, Id: e.nextCommandID, Name: method, Payload: payload}
	for _, opt := range opts {
		opt(cmd)
	}
	e.nextCommandID++
	out := e.inst.HandleCommand(context.Background(), cmd)

	if f := out.GetFailure(); f != nil {
		restartErr := e.Restart()
		return nil, errors.Join(fmt.Errorf("call %s: %w: %s", method, ErrCrashed, f.GetDescription()), restartErr)
	}
	reply := out.GetReply()
	if reply == nil {
		return nil, fmt.Errorf("call %s: the entity sent no reply", method)
	}
	if reply.GetCommandId() != cmd.GetId() {
		return nil, fmt.Errorf("call %s: reply for command %d, want %d", method, reply.GetCommandId(), cmd.GetId())
	}
	res := &ValueResult[Out]{}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		res.Failure = &Failure{Description: f.GetDescription(), Restart: f.GetRestart()}
		return res, nil
	}
	// Store like the proxy, before the reply and the effects.
	switch a := reply.GetStateAction().GetAction().(type) {
	case *protocol.ValueEntityAction_Update:
		if res.Updated, err = sdk.UnmarshalAny(a.Update.GetValue()); err != nil {
			return nil, fmt.Errorf("call %s: update: %w", method, err)
		}
		e.stored = a.Update.GetValue()
	case *protocol.ValueEntityAction_Delete:
		res.Deleted = true
		e.stored = nil
	}
	client, err := clientOutcome[Out](reply.GetClientAction(), reply.GetSideEffects())
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", method, err)
	}
	res.Reply, res.ReplyMetadata, res.Forward, res.SideEffects = client.Reply, client.ReplyMetadata, client.Forward, client.SideEffects
	return res, nil
}

// outcome is the client-facing part of an entity reply.
type outcome[Out proto.Message] struct {
	Reply         Out
	ReplyMetadata sdk.Metadata
	Forward       *Effect
	SideEffects   []Effect
}

// clientOutcome decodes the side effects and the reply or forward of a
// successful command.
func clientOutcome[Out proto.Message](action *protocol.ClientAction, sideEffects []*protocol.SideEffect) (*outcome[Out], error) {
	var o outcome[Out]
	var err error
	if o.SideEffects, err = sideEffectsOf(sideEffects); err != nil {
		return nil, err
	}
	switch a := action.GetAction().(type) {
	case *protocol.ClientAction_Forward:
		if o.Forward, err = forwardOf(a.Forward); err != nil {
			return nil, err
		}
	case *protocol.ClientAction_Reply:
		if o.Reply, err = replyOf[Out](a.Reply); err != nil {
			return nil, err
		}
		o.ReplyMetadata = metadataOf(a.Reply.GetMetadata())
	}
	return &o, nil
}

func sideEffectsOf(ses []*protocol.SideEffect) ([]Effect, error) {
	var out []Effect
	for _, se := range ses {
		ef, err := effectOf(se.GetServiceName(), se.GetCommandName(), se.GetPayload(), se.GetMetadata())
		if err != nil {
			return nil, fmt.Errorf("side effect: %w", err)
		}
		ef.Synchronous = se.GetSynchronous()
		out = append(out, *ef)
	}
	return out, nil
}

func forwardOf(fw *protocol.Forward) (*Effect, error) {
	ef, err := effectOf(fw.GetServiceName(), fw.GetCommandName(), fw.GetPayload(), fw.GetMetadata())
	if err != nil {
		return nil, fmt.Errorf("forward: %w", err)
	}
	return ef, nil
}

func replyOf[Out proto.Message](r *protocol.Reply) (Out, error) {
	var zero Out
	m, err := sdk.UnmarshalAny(r.GetPayload())
	if err != nil {
		return zero, fmt.Errorf("reply: %w", err)
	}
	typed, ok := m.(Out)
	if !ok {
		return zero, fmt.Errorf("reply is a %T, not the requested %T", m, zero)
	}
	return typed, nil
}
