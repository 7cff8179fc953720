package sdk

import (
	"fmt"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// valueEntityService serves cloudstate.valueentity.ValueEntity: one stream
// per entity activation.
type valueEntityService struct {
	protocol.UnimplementedValueEntityServer
	entities map[string]*valueEntityDef // by service full name
	logger   *slog.Logger
	streams  entityStreams
}

// Handle runs one entity activation: init, then commands one at a time
// until the proxy half-closes the stream.
func (s *valueEntityService) Handle(stream protocol.ValueEntity_HandleServer) error {
	next, done := receive(s.streams, stream.Recv)
	defer done()
	first, err := next()
	if err != nil {
		return endOfStream(err)
	}
	init := first.GetInit()
	if init == nil {
		return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("expected init as the first message, got %s", valueMessageKind(first)))
	}
	def := s.entities[init.GetServiceName()]
	if def == nil {
		return s.fail(stream, codes.NotFound, fmt.Sprintf("unknown value entity service %q", init.GetServiceName()))
	}
	inst, err := def.start(init, s.logger)
	if err != nil {
		return s.fail(stream, codes.Internal, fmt.Sprintf("initialise entity %q of %s: %v", init.GetEntityId(), def.serviceName, err))
	}
	for {
		msg, err := next()
		if err != nil {
			return endOfStream(err)
		}
		switch m := msg.GetMessage().(type) {
		case *protocol.ValueEntityStreamIn_Command:
			out := inst.HandleCommand(stream.Context(), m.Command)
			if err := stream.Send(out); err != nil {
				return fmt.Errorf("send reply to command %d: %w", m.Command.GetId(), err)
			}
			if f := out.GetFailure(); f != nil {
				// Already logged by the instance; the proxy reactivates the entity.
				return status.Error(codes.Internal, f.GetDescription())
			}
		case *protocol.ValueEntityStreamIn_Init:
			return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("entity %q: init received twice", inst.entityID))
		default:
			return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("entity %q: empty stream message", inst.entityID))
		}
	}
}

// fail sends a top-level failure and ends the stream with an error.
func (s *valueEntityService) fail(stream protocol.ValueEntity_HandleServer, code codes.Code, description string) error {
	s.logger.Error("value entity stream failed", "error", description)
	if err := stream.Send(valueTopLevelFailure(0, description)); err != nil {
		s.logger.Debug("sending the failure failed", "error", err)
	}
	return status.Error(code, description)
}

func valueMessageKind(m *protocol.ValueEntityStreamIn) string {
	switch m.GetMessage().(type) {
	case *protocol.ValueEntityStreamIn_Command:
		return "command"
	case *protocol.ValueEntityStreamIn_Init:
		return "init"
	default:
		return "an empty message"
	}
}
