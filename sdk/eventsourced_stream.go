package sdk

import (
	"fmt"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// eventSourcedService serves cloudstate.eventsourced.EventSourced: one
// stream per entity activation.
type eventSourcedService struct {
	protocol.UnimplementedEventSourcedServer
	entities map[string]*eventSourcedDef // by service full name
	logger   *slog.Logger
	streams  entityStreams
}

// Handle runs one entity activation: init, replayed events, then commands
// one at a time until the proxy half-closes the stream.
func (s *eventSourcedService) Handle(stream protocol.EventSourced_HandleServer) error {
	next, done := receive(s.streams, stream.Recv)
	defer done()
	first, err := next()
	if err != nil {
		return endOfStream(err)
	}
	init := first.GetInit()
	if init == nil {
		return s.fail(stream, 0, codes.InvalidArgument, fmt.Sprintf("expected init as the first message, got %s", messageKind(first)))
	}
	def := s.entities[init.GetServiceName()]
	if def == nil {
		return s.fail(stream, 0, codes.NotFound, fmt.Sprintf("unknown event-sourced entity service %q", init.GetServiceName()))
	}
	inst, err := def.start(init, s.logger)
	if err != nil {
		return s.fail(stream, 0, codes.Internal, fmt.Sprintf("initialise entity %q of %s: %v", init.GetEntityId(), def.serviceName, err))
	}
	commandSeen := false
	for {
		msg, err := next()
		if err != nil {
			return endOfStream(err)
		}
		switch m := msg.GetMessage().(type) {
		case *protocol.EventSourcedStreamIn_Event:
			if commandSeen {
				return s.fail(stream, 0, codes.InvalidArgument, fmt.Sprintf("entity %q: event %d received after a command", inst.entityID, m.Event.GetSequence()))
			}
			if err := inst.ApplyEvent(m.Event); err != nil {
				return s.fail(stream, 0, codes.Internal, fmt.Sprintf("entity %q of %s: %v", inst.entityID, def.serviceName, err))
			}
		case *protocol.EventSourcedStreamIn_Command:
			commandSeen = true
			out := inst.HandleCommand(stream.Context(), m.Command)
			if err := stream.Send(out); err != nil {
				return fmt.Errorf("send reply to command %d: %w", m.Command.GetId(), err)
			}
			if f := out.GetFailure(); f != nil {
				// Already logged by the instance; the proxy restarts the entity.
				return status.Error(codes.Internal, f.GetDescription())
			}
		case *protocol.EventSourcedStreamIn_Init:
			return s.fail(stream, 0, codes.InvalidArgument, fmt.Sprintf("entity %q: init received twice", inst.entityID))
		default:
			return s.fail(stream, 0, codes.InvalidArgument, fmt.Sprintf("entity %q: empty stream message", inst.entityID))
		}
	}
}

// fail sends a top-level failure and ends the stream with an error.
func (s *eventSourcedService) fail(stream protocol.EventSourced_HandleServer, commandID int64, code codes.Code, description string) error {
	s.logger.Error("event-sourced entity stream failed", "error", description)
	if err := stream.Send(topLevelFailure(commandID, description)); err != nil {
		s.logger.Debug("sending the failure failed", "error", err)
	}
	return status.Error(code, description)
}

func messageKind(m *protocol.EventSourcedStreamIn) string {
	switch m.GetMessage().(type) {
	case *protocol.EventSourcedStreamIn_Event:
		return "event"
	case *protocol.EventSourcedStreamIn_Command:
		return "command"
	case *protocol.EventSourcedStreamIn_Init:
		return "init"
	default:
		return "an empty message"
	}
}
