// Package bridge lets sdk/testkit drive the sdk's entity runtime without
// widening the sdk's public API. Package sdk fills in the hooks from its init
// function; testkit imports sdk (so the hooks are set) and calls them. The
// testkit therefore runs exactly the code the gRPC server runs.
package bridge

import (
	"context"
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
