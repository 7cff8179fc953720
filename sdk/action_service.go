package sdk

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/protocol"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// actionService serves cloudstate.action.ActionProtocol: every client call
// of an action arrives as one call of the same shape.
type actionService struct {
	protocol.UnimplementedActionProtocolServer
	actions map[string]*actionDef // by service full name
	logger  *slog.Logger
}

// HandleUnary serves a unary method: one full command, one response.
func (s *actionService) HandleUnary(ctx context.Context, cmd *protocol.ActionCommand) (*protocol.ActionResponse, error) {
	d, err := s.action(cmd)
	if err != nil {
		return nil, err
	}
	var resp *protocol.ActionResponse
	err = d.handle(ctx, shapeUnary, cmd, nil, func(r *protocol.ActionResponse) error {
		resp = r
		return nil
	}, s.logger)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// HandleStreamedIn serves a client-streaming method: a header command, one
// command per client message, one response.
func (s *actionService) HandleStreamedIn(stream protocol.ActionProtocol_HandleStreamedInServer) error {
	header, d, err := s.header(stream.Recv)
	if err != nil {
		return err
	}
	return d.handle(stream.Context(), shapeClientStream, header, stream.Recv, stream.SendAndClose, s.logger)
}

// HandleStreamedOut serves a server-streaming method: one full command,
// any number of responses.
func (s *actionService) HandleStreamedOut(cmd *protocol.ActionCommand, stream protocol.ActionProtocol_HandleStreamedOutServer) error {
	d, err := s.action(cmd)
	if err != nil {
		return err
	}
	return d.handle(stream.Context(), shapeServerStream, cmd, nil, stream.Send, s.logger)
}

// HandleStreamed serves a bidi-streaming method: a header command, one
// command per client message, any number of responses.
func (s *actionService) HandleStreamed(stream protocol.ActionProtocol_HandleStreamedServer) error {
	header, d, err := s.header(stream.Recv)
	if err != nil {
		return err
	}
	return d.handle(stream.Context(), shapeBidiStream, header, stream.Recv, stream.Send, s.logger)
}

// header reads the first command of a streamed-in call.
func (s *actionService) header(recv func() (*protocol.ActionCommand, error)) (*protocol.ActionCommand, *actionDef, error) {
	header, err := recv()
	if errors.Is(err, io.EOF) {
		return nil, nil, status.Error(codes.InvalidArgument, "the call ended before its first command")
	}
	if err != nil {
		return nil, nil, err
	}
	d, err := s.action(header)
	if err != nil {
		return nil, nil, err
	}
	return header, d, nil
}

func (s *actionService) action(cmd *protocol.ActionCommand) (*actionDef, error) {
	d := s.actions[cmd.GetServiceName()]
	if d == nil {
		s.logger.Error("the proxy called an unknown action service", "service", cmd.GetServiceName(), "method", cmd.GetName())
		return nil, status.Errorf(codes.NotFound, "unknown action service %q", cmd.GetServiceName())
	}
	return d, nil
}
