// Package testkit unit-tests Cloudstate entities written with package sdk,
// without a proxy or a network. It drives the sdk's own command processing
// (the code the gRPC server runs) and plays the proxy's part: it keeps the
// entity's journal and latest snapshot, persists the events of successful
// commands, and rebuilds the entity from them when the proxy would (after a
// failure that asks for a restart, after a crash, or on Restart).
//
//	cart, err := testkit.NewEventSourced(NewCartEntity(), "user-1")
//	res, err := testkit.Call[*emptypb.Empty](cart, "AddItem", &pb.AddLineItem{UserId: "user-1", ProductId: "p1", Quantity: 2})
//	// res.Events holds the ItemAdded event, cart.State() the updated *Cart.
//
// Value entities work the same way with NewValueEntity and CallValue; the
// testkit keeps the stored value. CRDT entities are called with CallCRDT
// and StreamCRDT; the testkit also sends the deltas, deletes and stream
// cancellations a proxy would (see CRDT). Actions are called with CallAction, in
// any streaming shape, with a slice of inputs; the result lists every
// response (reply, forward or failure, with its side effects).
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

// EventSourced is one event-sourced entity under test, with its journal.
// It is not safe for concurrent use.
type EventSourced[T any] struct {
	def      bridge.EventSourcedDefinition
	entityID string
	logger   *slog.Logger

	inst          bridge.EventSourcedInstance
	nextCommandID int64

	// journal holds the events after journalStart: journal[i] has sequence
	// number journalStart+i+1.
	journal      []*anypb.Any
	journalStart int64
	snapshot     *protocol.EventSourcedSnapshot // latest saved, or nil
}

// Option configures a test entity.
type Option func(*options)

type options struct {
	snapshotSeq int64
	snapshot    proto.Message
	events      []proto.Message
	value       proto.Message
	crdtValue   *protocol.CrdtDelta
	logger      *slog.Logger
}

// WithValue starts a value entity from a stored value, as if the proxy sent
// it in init.
func WithValue(state proto.Message) Option {
	return func(o *options) { o.value = state }
}

// WithSnapshot starts the entity from a stored snapshot taken at sequence
// number seq, as if the proxy sent it in init.
func WithSnapshot(seq int64, snapshot proto.Message) Option {
	return func(o *options) { o.snapshotSeq, o.snapshot = seq, snapshot }
}

// WithEvents starts the entity from stored events (after the snapshot, if
// any), replayed in order as the proxy would.
func WithEvents(events ...proto.Message) Option {
	return func(o *options) { o.events = append(o.events, events...) }
}

// WithLogger sets the logger the entity runtime uses; by default its output
// is discarded.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// NewEventSourced validates entity like sdk.Server.RegisterEventSourced does
// and activates it for entityID from the given snapshot and events.
func NewEventSourced[T any](entity *sdk.EventSourcedEntity[T], entityID string, opts ...Option) (*EventSourced[T], error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.value != nil || o.crdtValue != nil {
		return nil, errors.New("WithValue and WithCRDTValue are for value and CRDT entities; use WithSnapshot or WithEvents")
	}
	def, err := bridge.CompileEventSourced(entity)
	if err != nil {
		return nil, err
	}
	e := &EventSourced[T]{def: def, entityID: entityID, logger: o.logger}
	if o.snapshot != nil {
		a, err := sdk.MarshalAny(o.snapshot)
		if err != nil {
			return nil, fmt.Errorf("snapshot: %w", err)
		}
		e.snapshot = &protocol.EventSourcedSnapshot{SnapshotSequence: o.snapshotSeq, Snapshot: a}
		e.journalStart = o.snapshotSeq
	}
	for _, ev := range o.events {
		a, err := sdk.MarshalAny(ev)
		if err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		e.journal = append(e.journal, a)
	}
	if err := e.Restart(); err != nil {
		return nil, err
	}
	return e, nil
}

// Restart ends the current activation and starts a new one from the latest
// snapshot and the events after it, as the proxy does after passivation.
func (e *EventSourced[T]) Restart() error {
	init := &protocol.EventSourcedInit{ServiceName: e.def.ServiceName(), EntityId: e.entityID, Snapshot: e.snapshot}
	inst, err := e.def.Start(init, e.logger)
	if err != nil {
		return fmt.Errorf("activate %q: %w", e.entityID, err)
	}
	from := e.journalStart
	if e.snapshot != nil {
		from = e.snapshot.GetSnapshotSequence()
	}
	for seq := from + 1; seq <= e.journalStart+int64(len(e.journal)); seq++ {
		ev := &protocol.EventSourcedEvent{Sequence: seq, Payload: e.journal[seq-e.journalStart-1]}
		if err := inst.ApplyEvent(ev); err != nil {
			return fmt.Errorf("activate %q: %w", e.entityID, err)
		}
	}
	e.inst = inst
	e.nextCommandID = 1
	return nil
}

// State returns the entity's current in-memory state.
func (e *EventSourced[T]) State() *T { return e.inst.State().(*T) }

// Sequence returns the sequence number of the last event in the journal.
func (e *EventSourced[T]) Sequence() int64 { return e.journalStart + int64(len(e.journal)) }

// Events returns every event in the journal (after the initial snapshot, if
// one was given), decoded.
func (e *EventSourced[T]) Events() ([]proto.Message, error) {
	return decodeAll(e.journal)
}

// Snapshot returns the latest stored snapshot and its sequence number, or
// nil and 0 if there is none.
func (e *EventSourced[T]) Snapshot() (proto.Message, int64, error) {
	if e.snapshot == nil {
		return nil, 0, nil
	}
	m, err := sdk.UnmarshalAny(e.snapshot.GetSnapshot())
	return m, e.snapshot.GetSnapshotSequence(), err
}

// Effect is a forward or side effect requested by a command.
type Effect struct {
	Service     string        // full name of the target service
	Method      string        // method name
	Message     proto.Message // decoded payload
	Synchronous bool          // side effects only
	Metadata    sdk.Metadata
}

// Failure is a command failure sent to the client.
type Failure struct {
	Description string
	// Restart is set when the entity had applied events before failing;
	// the testkit has then already rebuilt it from the journal.
	Restart bool
}

// Result is the outcome of one command.
type Result[Out proto.Message] struct {
	// Reply is the reply message; the zero Out when the command failed or
	// forwarded.
	Reply         Out
	ReplyMetadata sdk.Metadata
	// Failure is non-nil when the command failed.
	Failure *Failure
	// Forward is non-nil when the command was forwarded.
	Forward     *Effect
	SideEffects []Effect
	// Events are the events the command emitted and the journal now holds.
	Events []proto.Message
	// Snapshot is the snapshot stored with the events, if one was taken.
	Snapshot proto.Message
}

// ErrCrashed is returned (wrapped) by Call when the entity reported an
// unexpected failure, for example because a handler panicked. The proxy
// would then fail the command; the testkit has restarted the entity.
var ErrCrashed = errors.New("entity crashed")

// CallOption configures one command.
type CallOption func(*protocol.Command)

// WithCommandMetadata attaches metadata to the command.
func WithCommandMetadata(md sdk.Metadata) CallOption {
	return func(c *protocol.Command) {
		c.Metadata = &protocol.Metadata{}
		for _, en := range md {
			pe := &protocol.MetadataEntry{Key: en.Key}
			if en.Bytes != nil {
				pe.Value = &protocol.MetadataEntry_BytesValue{BytesValue: en.Bytes}
			} else {
				pe.Value = &protocol.MetadataEntry_StringValue{StringValue: en.Value}
			}
			c.Metadata.Entries = append(c.Metadata.Entries, pe)
		}
	}
}

// Call sends the command method with input in to the entity, as the proxy
// would, and persists the resulting events and snapshot in the journal. A
// client-visible failure is reported in Result.Failure; an error means the
// call could not be made or the entity crashed (ErrCrashed). Out is the
// method's reply type; write it explicitly:
//
//	res, err := testkit.Call[*pb.Cart](cart, "GetCart", &pb.GetShoppingCart{UserId: "u1"})
func Call[Out proto.Message, T any, In proto.Message](e *EventSourced[T], method string, in In, opts ...CallOption) (*Result[Out], error) {
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
	res := &Result[Out]{}
	if f := reply.GetClientAction().GetFailure(); f != nil {
		res.Failure = &Failure{Description: f.GetDescription(), Restart: f.GetRestart()}
		if f.GetRestart() {
			if err := e.Restart(); err != nil {
				return nil, fmt.Errorf("call %s: restart after failure: %w", method, err)
			}
		}
		return res, nil
	}
	// Persist like the proxy: events first, then the snapshot at the
	// sequence number of the last event (a snapshot without events is
	// ignored).
	e.journal = append(e.journal, reply.GetEvents()...)
	if res.Events, err = decodeAll(reply.GetEvents()); err != nil {
		return nil, fmt.Errorf("call %s: %w", method, err)
	}
	if s := reply.GetSnapshot(); s != nil && len(reply.GetEvents()) > 0 {
		e.snapshot = &protocol.EventSourcedSnapshot{SnapshotSequence: e.Sequence(), Snapshot: s}
		if res.Snapshot, err = sdk.UnmarshalAny(s); err != nil {
			return nil, fmt.Errorf("call %s: snapshot: %w", method, err)
		}
	}
	client, err := clientOutcome[Out](reply.GetClientAction(), reply.GetSideEffects())
	if err != nil {
		return nil, fmt.Errorf("call %s: %w", method, err)
	}
	res.Reply, res.ReplyMetadata, res.Forward, res.SideEffects = client.Reply, client.ReplyMetadata, client.Forward, client.SideEffects
	return res, nil
}

func effectOf(service, method string, payload *anypb.Any, md *protocol.Metadata) (*Effect, error) {
	m, err := sdk.UnmarshalAny(payload)
	if err != nil {
		return nil, err
	}
	return &Effect{Service: service, Method: method, Message: m, Metadata: metadataOf(md)}, nil
}

func metadataOf(pm *protocol.Metadata) sdk.Metadata {
	var md sdk.Metadata
	for _, e := range pm.GetEntries() {
		if b, ok := e.GetValue().(*protocol.MetadataEntry_BytesValue); ok {
			md.AddBytes(e.GetKey(), b.BytesValue)
		} else {
			md.Add(e.GetKey(), e.GetStringValue())
		}
	}
	return md
}

func decodeAll(as []*anypb.Any) ([]proto.Message, error) {
	out := make([]proto.Message, 0, len(as))
	for _, a := range as {
		m, err := sdk.UnmarshalAny(a)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
