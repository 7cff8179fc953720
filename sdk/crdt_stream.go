package sdk

import (
	"fmt"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// crdtService serves cloudstate.crdt.Crdt: one stream per entity
// activation.
type crdtService struct {
	protocol.UnimplementedCrdtServer
	entities map[string]*crdtDef // by service full name
	logger   *slog.Logger
	streams  entityStreams
}

// Handle runs one entity activation: init, then commands, deltas and stream
// cancellations in order until the proxy half-closes the stream or the CRDT
// is deleted.
func (s *crdtService) Handle(stream protocol.Crdt_HandleServer) error {
	next, done := receive(s.streams, stream.Recv)
	defer done()
	first, err := next()
	if err != nil {
		return endOfStream(err)
	}
	var init *protocol.CrdtInit
	switch m := first.GetMessage().(type) {
	case *protocol.CrdtStreamIn_Init:
		init = m.Init
	case *protocol.CrdtStreamIn_Delete:
		// The CRDT was deleted before this activation; the proxy sends
		// delete instead of init and closes the stream (PROTOCOL §7.3).
		return nil
	default:
		return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("expected init as the first message, got %s", crdtMessageKind(first)))
	}
	def := s.entities[init.GetServiceName()]
	if def == nil {
		return s.fail(stream, codes.NotFound, fmt.Sprintf("unknown CRDT entity service %q", init.GetServiceName()))
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
		var out []*protocol.CrdtStreamOut
		switch m := msg.GetMessage().(type) {
		case *protocol.CrdtStreamIn_Command:
			out = inst.HandleCommand(stream.Context(), m.Command)
		case *protocol.CrdtStreamIn_Delta:
			out = inst.HandleDelta(stream.Context(), m.Delta)
		case *protocol.CrdtStreamIn_StreamCancelled:
			out = inst.HandleStreamCancelled(stream.Context(), m.StreamCancelled)
		case *protocol.CrdtStreamIn_Delete:
			inst.HandleDelete()
			return nil
		case *protocol.CrdtStreamIn_Init:
			return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("entity %q: init received twice", inst.entityID))
		default:
			return s.fail(stream, codes.InvalidArgument, fmt.Sprintf("entity %q: empty stream message", inst.entityID))
		}
		for _, o := range out {
			if err := stream.Send(o); err != nil {
				return fmt.Errorf("send to the proxy: %w", err)
			}
			if f := o.GetFailure(); f != nil {
				// Already logged by the instance; the proxy restarts the entity.
				return status.Error(codes.Internal, f.GetDescription())
			}
		}
		if inst.Deleted() {
			// The proxy closes the stream once it has the delete.
			return nil
		}
	}
}

// fail sends a top-level failure and ends the stream with an error.
func (s *crdtService) fail(stream protocol.Crdt_HandleServer, code codes.Code, description string) error {
	s.logger.Error("CRDT entity stream failed", "error", description)
	if err := stream.Send(crdtTopLevelFailure(0, description)); err != nil {
		s.logger.Debug("sending the failure failed", "error", err)
	}
	return status.Error(code, description)
}

func crdtMessageKind(m *protocol.CrdtStreamIn) string {
	switch m.GetMessage().(type) {
	case *protocol.CrdtStreamIn_Init:
		return "init"
	case *protocol.CrdtStreamIn_Delta:
		return "delta"
	case *protocol.CrdtStreamIn_Delete:
		return "delete"
	case *protocol.CrdtStreamIn_Command:
		return "command"
	case *protocol.CrdtStreamIn_StreamCancelled:
		return "stream_cancelled"
	default:
		return "an empty message"
	}
}
