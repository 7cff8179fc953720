// Package value runs value entities in the proxy
// (cloudstate.valueentity.ValueEntity/handle): one stream per active entity,
// init with the stored value, then one command at a time; a reply's update
// or delete is written to the ValueStore before its outcome is released
// (PROTOCOL.md §7.2, BEHAVIOR.md VE-1..VE-5).
//
// Writes carry the version read at activation (and advanced by each write),
// so if another proxy wrote the same entity meanwhile the write is fenced
// off, the command fails, and the next activation reloads the value.
package value

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/entity"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/store"
)

// Client-visible descriptions, as the reference proxy words them
// (BEHAVIOR.md ERR-1).
const (
	descUnexpectedFailure     = "Unexpected Value entity failure"
	descUnexpectedReply       = "Unexpected Value entity reply"
	descUnexpectedTermination = "Unexpected Value entity termination"
	descTerminated            = "Value entity terminated"
)

// Config is what a Manager needs. Every field is required unless noted.
type Config struct {
	Store store.ValueStore
	// Client opens entity streams to the user function.
	Client protocol.ValueEntityClient
	// Reporter receives protocol violations of the function; optional.
	Reporter route.Reporter
	// PassivationTimeout is the idle time after which an entity stops, unless
	// its service sets its own.
	PassivationTimeout time.Duration
	// RelayTimeout bounds how long a caller waits, and how long an entity
	// waits for the function to answer one command.
	RelayTimeout time.Duration
	// MailboxSize bounds the commands queued per entity.
	MailboxSize int
	// CloseTimeout bounds how long a passivating entity waits for the
	// function to end its side of the stream. Optional; default 5s.
	CloseTimeout time.Duration
	// Generation changes when the connection to the function was
	// re-established (entity.SerialConfig.Generation). Optional.
	Generation func() uint64
	Log        *slog.Logger
}

// Manager runs the value entities of one proxy. It implements route.Handler
// through its registry.
type Manager struct {
	*entity.SerialRegistry
	cfg Config
}

// New returns a manager; Shutdown ends it.
func New(cfg Config) *Manager {
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := &Manager{cfg: cfg}
	m.SerialRegistry = entity.NewSerialRegistry(entity.SerialConfig{
		Activate:           m.activate,
		Terminated:         status.Error(codes.Unknown, descTerminated),
		PassivationTimeout: cfg.PassivationTimeout,
		RelayTimeout:       cfg.RelayTimeout,
		MailboxSize:        cfg.MailboxSize,
		Generation:         cfg.Generation,
	})
	return m
}

// Key returns the store key of a value entity.
func Key(persistenceID, entityID string) string { return persistenceID + "|" + entityID }

// session is one activation: the stream and the version of the stored
// value it last read or wrote. Only the holder of the entity's turn uses it.
type session struct {
	m       *Manager
	svc     *discovery.Service
	id      string
	key     string
	ctx     context.Context
	cancel  context.CancelFunc
	stream  protocol.ValueEntity_HandleClient
	version int64
	lastID  int64
}

// activate reads the stored value, opens the stream and sends init (VE-1).
func (m *Manager) activate(ctx context.Context, svc *discovery.Service, id string) (entity.Session, error) {
	s := &session{m: m, svc: svc, id: id, key: Key(svc.PersistenceID, id)}
	v, err := m.cfg.Store.GetValue(ctx, s.key)
	if err != nil {
		s.log().Error("reading the stored value failed", "key", s.key, "err", err)
		if errors.Is(err, store.ErrUnavailable) {
			return nil, status.Error(codes.Unavailable, descTerminated)
		}
		return nil, status.Error(codes.Unknown, descTerminated)
	}
	s.version = v.Version
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.stream, err = m.cfg.Client.Handle(s.ctx)
	if err != nil {
		s.cancel()
		return nil, status.Errorf(codes.Unavailable, "user function unavailable: %v", status.Convert(err).Message())
	}
	err = s.stream.Send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
		ServiceName: svc.Name,
		EntityId:    id,
		State:       &protocol.ValueEntityInitState{Value: v.Payload},
	}}})
	if err != nil {
		_, err := s.recv(time.Second)
		s.cancel()
		return nil, status.Errorf(codes.Unavailable, "user function stream ended at init: %v", status.Convert(err).Message())
	}
	return s, nil
}

var errTimeout = errors.New("timed out")

// recv waits for the next message for at most timeout; on timeout the
// stream is cancelled and errTimeout returned.
func (s *session) recv(timeout time.Duration) (*protocol.ValueEntityStreamOut, error) {
	var timedOut atomic.Bool
	t := time.AfterFunc(timeout, func() { timedOut.Store(true); s.cancel() })
	msg, err := s.stream.Recv()
	t.Stop()
	if err != nil && timedOut.Load() {
		return nil, errTimeout
	}
	return msg, err
}

// Close half-closes the stream and gives the function a moment to end its
// side (passivation).
func (s *session) Close() {
	if err := s.stream.CloseSend(); err == nil {
		for {
			_, err := s.recv(s.m.cfg.CloseTimeout)
			if errors.Is(err, errTimeout) {
				s.log().Warn("user function did not close the entity stream in time", "timeout", s.m.cfg.CloseTimeout)
			}
			if err != nil {
				break
			}
			s.log().Warn("message from the user function after the stream was closed; ignored")
		}
	}
	s.cancel()
}

// Abort cuts the stream.
func (s *session) Abort() { s.cancel() }

// Handle sends one command and handles its reply (VE-2..VE-5).
func (s *session) Handle(_ context.Context, call route.Call) (route.Outcome, error, entity.End) {
	s.lastID++
	if err := s.stream.Send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Command{Command: &protocol.Command{
		EntityId: s.id,
		Id:       s.lastID,
		Name:     call.Method.Name,
		Payload:  call.Payload,
	}}}); err != nil {
		s.log().Debug("sending a command failed", "err", err)
	}
	msg, err := s.recv(s.m.cfg.RelayTimeout)
	if errors.Is(err, errTimeout) {
		s.log().Warn("user function did not answer a command within the relay timeout", "command", call.Method.Name, "timeout", s.m.cfg.RelayTimeout)
		return route.Outcome{}, status.Errorf(codes.Internal, "entity %s did not answer within the relay timeout (%s)", s.id, s.m.cfg.RelayTimeout), entity.Terminate
	}
	reply := msg.GetReply()
	if err != nil || reply == nil || reply.GetCommandId() != s.lastID {
		return route.Outcome{}, s.violation(msg, err), entity.Terminate
	}
	if reply.GetClientAction().GetFailure() != nil {
		if reply.GetStateAction() != nil || len(reply.GetSideEffects()) > 0 {
			s.report(fmt.Sprintf("%s: the reply to command %d fails the command but also carries a state action or side effects; they were ignored",
				s.svc.Name, s.lastID))
		}
		// The stored value stays as it was (VE-5 deviation).
		return route.Outcome{Action: reply.GetClientAction()}, nil, entity.Continue
	}
	if err := s.write(reply.GetStateAction()); err != nil {
		switch {
		case errors.Is(err, errProtocol):
			s.log().Warn(err.Error())
			s.report(err.Error())
			return route.Outcome{}, status.Error(codes.Unknown, descUnexpectedFailure), entity.Terminate
		case errors.Is(err, store.ErrConflict):
			// Another writer changed the value: reload it; what waits was
			// never sent and is served by the new activation.
			s.log().Warn("the stored value changed under the entity; reloading", "key", s.key, "err", err)
			return route.Outcome{}, status.Error(codes.Aborted, descUnexpectedFailure), entity.Reload
		case errors.Is(err, store.ErrUnavailable):
			s.log().Error("writing the value failed; reloading the entity", "key", s.key, "err", err)
			return route.Outcome{}, status.Error(codes.Unavailable, descUnexpectedFailure), entity.Reload
		}
		s.log().Error("writing the value failed; stopping the entity", "key", s.key, "err", err)
		return route.Outcome{}, status.Error(codes.Unknown, descUnexpectedFailure), entity.Terminate
	}
	return route.Outcome{Action: reply.GetClientAction(), SideEffects: reply.GetSideEffects()}, nil, entity.Continue
}

var errProtocol = errors.New("protocol violation")

// write performs a reply's state action, fenced by the version this
// activation knows.
func (s *session) write(action *protocol.ValueEntityAction) error {
	if action == nil {
		return nil
	}
	switch a := action.GetAction().(type) {
	case *protocol.ValueEntityAction_Update:
		if a.Update.GetValue() == nil {
			return fmt.Errorf("%w: %s: entity %s sent an update without a value", errProtocol, s.svc.Name, s.id)
		}
		v, err := s.m.cfg.Store.PutValue(s.ctx, s.key, s.version, a.Update.GetValue())
		if err != nil {
			return fmt.Errorf("put %s at version %d: %w", s.key, s.version, err)
		}
		s.version = v
	case *protocol.ValueEntityAction_Delete:
		v, err := s.m.cfg.Store.DeleteValue(s.ctx, s.key, s.version)
		if err != nil {
			return fmt.Errorf("delete %s at version %d: %w", s.key, s.version, err)
		}
		s.version = v
	default:
		return fmt.Errorf("%w: %s: entity %s sent an empty state action", errProtocol, s.svc.Name, s.id)
	}
	return nil
}

// violation classifies what went wrong with a reply and returns the
// reference's description for the current command (VE-5).
func (s *session) violation(msg *protocol.ValueEntityStreamOut, err error) error {
	var desc string
	switch {
	case err != nil:
		desc = descUnexpectedTermination
		if errors.Is(err, io.EOF) {
			s.log().Warn("user function closed the entity stream")
		} else {
			s.log().Warn("entity stream failed", "err", err)
		}
	case msg.GetFailure() != nil:
		desc = descUnexpectedFailure
		s.log().Warn("user function reported an entity failure", "description", msg.GetFailure().GetDescription())
	case msg.GetReply() != nil:
		desc = descUnexpectedReply
		m := fmt.Sprintf("%s: entity %s sent a reply for command %d, but the command in flight is %d",
			s.svc.Name, s.id, msg.GetReply().GetCommandId(), s.lastID)
		s.log().Warn(m)
		s.report(m)
	default:
		desc = descUnexpectedFailure
		m := fmt.Sprintf("%s: entity %s sent an empty message", s.svc.Name, s.id)
		s.log().Warn(m)
		s.report(m)
	}
	return status.Error(codes.Unknown, desc)
}

func (s *session) report(msg string) {
	if r := s.m.cfg.Reporter; r != nil {
		r.ReportError(context.WithoutCancel(s.ctx), msg)
	}
}

// log returns the entity's logger. It is built on demand because most
// entities never log, and 10,000 active entities should not each carry one.
func (s *session) log() *slog.Logger {
	return s.m.cfg.Log.With("service", s.svc.Name, "entity", s.id)
}
