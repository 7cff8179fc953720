// Package bridge lets sdk/testkit drive the sdk's entity runtime without
// widening the sdk's public API. Package sdk fills in the hooks from its init
// function; testkit imports sdk (so the hooks are set) and calls them. The
// testkit therefore runs exactly the code the gRPC server runs.
package bridge

import (
	"context"
	"errors"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// EventSourcedDefinition is a validated, immutable event-sourced entity
// definition (one per registered service).
type EventSourcedDefinition interface {
	// ServiceName is the fully-qualified gRPC service name of the entity.
	ServiceName() string
	// Start creates the state of one entity activation and applies the
	// snapshot in init, if any. Errors are fatal for the activation.
	Start(init *protocol.EventSourcedInit, logger *slog.Logger) (EventSourcedInstance, error)
}

// EventSourcedInstance is one activation of an event-sourced entity. It is
// not safe for concurrent use: its owner feeds it one message at a time.
type EventSourcedInstance interface {
	// ApplyEvent applies one replayed journal event. Errors are fatal for the
	// activation.
	ApplyEvent(ev *protocol.EventSourcedEvent) error
	// HandleCommand runs one command and returns the message to send back:
	// a reply (which may carry a client failure), or a top-level failure
	// after which the activation must end.
	HandleCommand(ctx context.Context, cmd *protocol.Command) *protocol.EventSourcedStreamOut
	// State returns the entity's current state value (a *T).
	State() any
	// Sequence returns the sequence number of the last applied event.
	Sequence() int64
}

// CompileEventSourced validates an *sdk.EventSourcedEntity[T] and returns
// its definition. Set by package sdk.
var CompileEventSourced func(entity any) (EventSourcedDefinition, error)

// ValueEntityDefinition is a validated, immutable value entity definition
// (one per registered service).
type ValueEntityDefinition interface {
	// ServiceName is the fully-qualified gRPC service name of the entity.
	ServiceName() string
	// Start creates the state of one entity activation from the stored
	// value in init, if any. Errors are fatal for the activation.
	Start(init *protocol.ValueEntityInit, logger *slog.Logger) (ValueEntityInstance, error)
}

// ValueEntityInstance is one activation of a value entity. It is not safe
// for concurrent use: its owner feeds it one command at a time.
type ValueEntityInstance interface {
	// HandleCommand runs one command and returns the message to send back:
	// a reply (which may carry a client failure), or a top-level failure
	// after which the activation must end.
	HandleCommand(ctx context.Context, cmd *protocol.Command) *protocol.ValueEntityStreamOut
	// State returns the entity's current value (an S).
	State() any
}

// CompileValueEntity validates an *sdk.ValueEntity[S] and returns its
// definition. Set by package sdk.
var CompileValueEntity func(entity any) (ValueEntityDefinition, error)

// CRDTDefinition is a validated, immutable CRDT entity definition.
type CRDTDefinition interface {
	// ServiceName is the fully-qualified gRPC service name of the entity.
	ServiceName() string
	// Streamed reports whether method is server-streaming, and whether the
	// entity has the method.
	Streamed(method string) (streamed, ok bool)
	// Start creates one entity activation with the value in init, if any.
	// Errors are fatal for the activation.
	Start(init *protocol.CrdtInit, logger *slog.Logger) (CRDTInstance, error)
}

// CRDTInstance is one activation of a CRDT entity. It is not safe for
// concurrent use: its owner feeds it one message at a time. The Handle
// methods return the messages to send back in order; a top-level failure
// among them ends the activation, and so does a delete (Deleted).
type CRDTInstance interface {
	HandleCommand(ctx context.Context, cmd *protocol.Command) []*protocol.CrdtStreamOut
	HandleDelta(ctx context.Context, d *protocol.CrdtDelta) []*protocol.CrdtStreamOut
	HandleStreamCancelled(ctx context.Context, sc *protocol.StreamCancelled) []*protocol.CrdtStreamOut
	// HandleDelete forgets the CRDT, which the proxy deleted.
	HandleDelete()
	// Deleted reports whether the entity deleted its CRDT.
	Deleted() bool
	// State returns the CRDT (an sdk.CRDT), or nil if there is none.
	State() any
	// FullDelta returns the value as init would carry it, nil if none.
	FullDelta() *protocol.CrdtDelta
}

// CompileCRDT validates an *sdk.CRDTEntity and returns its definition. Set
// by package sdk.
var CompileCRDT func(entity any) (CRDTDefinition, error)

// Shape is the streaming shape of an action method.
type Shape int

// The four gRPC shapes, with the values package sdk uses.
const (
	Unary Shape = iota
	ServerStream
	ClientStream
	BidiStream
)

// ActionDefinition is a validated, immutable action definition.
type ActionDefinition interface {
	// ServiceName is the fully-qualified gRPC service name of the action.
	ServiceName() string
	// Handle runs one call of the given shape. header is the first
	// ActionCommand; recv yields the following ones (streamed-in shapes);
	// send delivers each response. It returns nil when the call ends
	// normally, or an error with the gRPC status to end it with (wrapping
	// ErrPanicked when the handler panicked).
	Handle(ctx context.Context, shape Shape, header *protocol.ActionCommand,
		recv func() (*protocol.ActionCommand, error), send func(*protocol.ActionResponse) error, logger *slog.Logger) error
	// Shape returns the shape of method, and false if the action has none.
	Shape(method string) (Shape, bool)
}

// ErrPanicked is wrapped by the error of a call whose handler panicked.
var ErrPanicked = errors.New("action handler panicked")

// CompileAction validates an *sdk.Action and returns its definition. Set by
// package sdk.
var CompileAction func(action any) (ActionDefinition, error)
