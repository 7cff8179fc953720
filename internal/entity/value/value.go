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
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	Log          *slog.Logger
}

// Manager runs the value entities of one proxy. It implements route.Handler
// through its registry.
type Manager struct {
	*entity.Registry
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
	m.Registry = entity.NewRegistry(entity.RegistryConfig{
		RelayTimeout: cfg.RelayTimeout,
		MailboxSize:  cfg.MailboxSize,
		Loop:         m.run,
	})
	return m
}

// Key returns the store key of a value entity.
func Key(persistenceID, entityID string) string { return persistenceID + "|" + entityID }

type (
	stream  = entity.Stream[protocol.ValueEntityStreamIn, protocol.ValueEntityStreamOut]
	inbound = entity.Inbound[protocol.ValueEntityStreamOut]
)

// session is one activation: the stream and the version of the stored
// value it last read or wrote.
type session struct {
	m       *Manager
	mb      *entity.Mailbox
	key     string
	log     *slog.Logger
	s       *stream
	version int64
	lastID  int64
}

func (m *Manager) run(mb *entity.Mailbox) {
	svc := mb.Service
	ss := &session{
		m:   m,
		mb:  mb,
		key: Key(svc.PersistenceID, mb.Key.ID),
		log: m.cfg.Log.With("service", svc.Name, "entity", mb.Key.ID),
	}
	passivation := m.cfg.PassivationTimeout
	if svc.Passivation > 0 {
		passivation = svc.Passivation
	}
	if err := ss.activate(); err != nil {
		ss.log.Warn("value entity activation failed", "err", err)
		mb.FailQueued(err)
		return
	}
	entity.Serve[protocol.ValueEntityStreamOut](mb, passivation, ss)
}

// activate reads the stored value, opens the stream and sends init.
func (ss *session) activate() error {
	ctx := ss.mb.Kill()
	v, err := ss.m.cfg.Store.GetValue(ctx, ss.key)
	if err != nil {
		ss.log.Error("reading the stored value failed", "key", ss.key, "err", err)
		return status.Error(codes.Unknown, descTerminated)
	}
	ss.version = v.Version
	s, err := entity.OpenStream(ctx, ss.m.cfg.Client.Handle)
	if err != nil {
		return status.Errorf(codes.Unavailable, "user function unavailable: %v", status.Convert(err).Message())
	}
	ss.s = s
	err = s.Send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
		ServiceName: ss.mb.Service.Name,
		EntityId:    ss.mb.Key.ID,
		State:       &protocol.ValueEntityInitState{Value: v.Payload},
	}}})
	if err != nil {
		reason := s.ReasonAfterSendError(err)
		s.Abort()
		return status.Errorf(codes.Unavailable, "user function stream ended at init: %v", status.Convert(reason).Message())
	}
	return nil
}

// Received, Handle, Unexpected and Passivate make a session an
// entity.Session.
func (ss *session) Received() <-chan inbound { return ss.s.Received() }

func (ss *session) Passivate() { ss.s.CloseGracefully(ss.m.cfg.CloseTimeout, ss.log) }

func (ss *session) Unexpected(in inbound) { ss.fail(nil, in) }

func (ss *session) Handle(cmd *entity.Command) bool {
	ss.lastID++
	err := ss.s.Send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Command{Command: &protocol.Command{
		EntityId: ss.mb.Key.ID,
		Id:       ss.lastID,
		Name:     cmd.Call.Method.Name,
		Payload:  cmd.Call.Payload,
	}}})
	if err != nil {
		ss.log.Debug("sending a command failed", "err", err)
	}
	relay := time.NewTimer(ss.m.cfg.RelayTimeout)
	defer relay.Stop()
	var in inbound
	select {
	case in = <-ss.s.Received():
	case <-relay.C:
		ss.log.Warn("user function did not answer a command within the relay timeout", "command", cmd.Call.Method.Name, "timeout", ss.m.cfg.RelayTimeout)
		cmd.Finish(route.Outcome{}, status.Errorf(codes.Internal, "entity %s did not answer within the relay timeout (%s)", ss.mb.Key.ID, ss.m.cfg.RelayTimeout))
		ss.stop()
		return true
	case <-ss.s.Context().Done():
		cmd.Finish(route.Outcome{}, status.Error(codes.Unavailable, "the proxy is shutting down"))
		ss.stop()
		return true
	}

	reply := in.Msg.GetReply()
	if in.Err != nil || reply == nil || reply.GetCommandId() != ss.lastID {
		ss.fail(cmd, in)
		return true
	}
	if reply.GetClientAction().GetFailure() != nil {
		if reply.GetStateAction() != nil || len(reply.GetSideEffects()) > 0 {
			ss.report(fmt.Sprintf("%s: the reply to command %d fails the command but also carries a state action or side effects; they were ignored",
				ss.mb.Service.Name, ss.lastID))
		}
		// The stored value stays as it was (VE-5 deviation).
		cmd.Finish(route.Outcome{Action: reply.GetClientAction()}, nil)
		return false
	}
	if err := ss.write(reply.GetStateAction()); err != nil {
		if errors.Is(err, errProtocol) {
			ss.log.Warn(err.Error())
			ss.report(err.Error())
		} else {
			ss.log.Error("writing the value failed; stopping the entity", "key", ss.key, "err", err)
		}
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descUnexpectedFailure))
		ss.stop()
		return true
	}
	cmd.Finish(route.Outcome{Action: reply.GetClientAction(), SideEffects: reply.GetSideEffects()}, nil)
	return false
}

var errProtocol = errors.New("protocol violation")

// write performs a reply's state action, fenced by the version this
// activation knows.
func (ss *session) write(action *protocol.ValueEntityAction) error {
	if action == nil {
		return nil
	}
	ctx := ss.s.Context()
	switch a := action.GetAction().(type) {
	case *protocol.ValueEntityAction_Update:
		if a.Update.GetValue() == nil {
			return fmt.Errorf("%w: %s: entity %s sent an update without a value", errProtocol, ss.mb.Service.Name, ss.mb.Key.ID)
		}
		v, err := ss.m.cfg.Store.PutValue(ctx, ss.key, ss.version, a.Update.GetValue())
		if err != nil {
			return fmt.Errorf("put %s at version %d: %w", ss.key, ss.version, err)
		}
		ss.version = v
	case *protocol.ValueEntityAction_Delete:
		v, err := ss.m.cfg.Store.DeleteValue(ctx, ss.key, ss.version)
		if err != nil {
			return fmt.Errorf("delete %s at version %d: %w", ss.key, ss.version, err)
		}
		ss.version = v
	default:
		return fmt.Errorf("%w: %s: entity %s sent an empty state action", errProtocol, ss.mb.Service.Name, ss.mb.Key.ID)
	}
	return nil
}

// fail handles a violation or the end of the stream (VE-5).
func (ss *session) fail(cmd *entity.Command, in inbound) {
	var desc string
	switch {
	case in.Err != nil:
		desc = descUnexpectedTermination
		if errors.Is(in.Err, io.EOF) {
			ss.log.Warn("user function closed the entity stream")
		} else {
			ss.log.Warn("entity stream failed", "err", in.Err)
		}
	case in.Msg.GetFailure() != nil:
		desc = descUnexpectedFailure
		ss.log.Warn("user function reported an entity failure", "description", in.Msg.GetFailure().GetDescription())
	case in.Msg.GetReply() != nil:
		desc = descUnexpectedReply
		msg := fmt.Sprintf("%s: entity %s sent a reply for command %d, which is not in flight",
			ss.mb.Service.Name, ss.mb.Key.ID, in.Msg.GetReply().GetCommandId())
		ss.log.Warn(msg)
		ss.report(msg)
	default:
		desc = descUnexpectedFailure
		msg := fmt.Sprintf("%s: entity %s sent an empty message", ss.mb.Service.Name, ss.mb.Key.ID)
		ss.log.Warn(msg)
		ss.report(msg)
	}
	if cmd != nil {
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, desc))
	}
	ss.stop()
}

// stop ends the activation after a failure; queued commands fail.
func (ss *session) stop() { ss.s.Terminate(ss.mb, status.Error(codes.Unknown, descTerminated)) }

func (ss *session) report(msg string) {
	if r := ss.m.cfg.Reporter; r != nil {
		r.ReportError(context.WithoutCancel(ss.s.Context()), msg)
	}
}
