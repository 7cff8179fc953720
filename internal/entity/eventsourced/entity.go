package eventsourced

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
// (BEHAVIOR.md ERR-1); clients and the TCK compare them exactly.
const (
	descUnexpectedFailure     = "Unexpected entity failure"
	descUnexpectedReply       = "Unexpected entity reply"
	descUnexpectedMessage     = "Unexpected entity message"
	descUnexpectedTermination = "Unexpected entity termination"
	descTerminated            = "Entity terminated"
	descRecoveryFailed        = "Error recovering event log"
)

// session is one activation of an entity: its stream to the function and
// its position in the journal. Only the holder of the entity's turn uses it.
type session struct {
	m      *Manager
	svc    *discovery.Service
	id     string
	pid    string
	ctx    context.Context
	cancel context.CancelFunc
	stream protocol.EventSourced_HandleClient
	seq    int64 // highest journal sequence number applied
	lastID int64 // id of the last command sent on this stream
}

// activate loads the snapshot and events of an entity and replays them to
// a new stream (ES-1).
func (m *Manager) activate(ctx context.Context, svc *discovery.Service, id string) (entity.Session, error) {
	s := &session{m: m, svc: svc, id: id, pid: svc.PersistenceID + "|" + id}
	snap, hasSnap, err := m.cfg.Snapshots.LatestSnapshot(ctx, s.pid)
	if err != nil {
		s.log().Error("loading snapshot failed", "pid", s.pid, "err", err)
		return nil, recoveryError(err)
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	s.stream, err = m.cfg.Client.Handle(s.ctx)
	if err != nil {
		s.cancel()
		return nil, status.Errorf(codes.Unavailable, "user function unavailable: %v", status.Convert(err).Message())
	}
	init := &protocol.EventSourcedInit{ServiceName: svc.Name, EntityId: id}
	if hasSnap {
		init.Snapshot = &protocol.EventSourcedSnapshot{SnapshotSequence: snap.Seq, Snapshot: snap.Payload}
		s.seq = snap.Seq
	}
	if err := s.stream.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Init{Init: init}}); err != nil {
		return nil, s.brokenDuringRecovery()
	}
	var sendErr error
	err = m.cfg.Journal.Replay(s.ctx, s.pid, s.seq, func(ev store.Event) error {
		if ev.Seq != s.seq+1 {
			return fmt.Errorf("journal of %s jumps from %d to %d", s.pid, s.seq, ev.Seq)
		}
		s.seq = ev.Seq
		sendErr = s.stream.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Event{
			Event: &protocol.EventSourcedEvent{Sequence: ev.Seq, Payload: ev.Payload},
		}})
		return sendErr
	})
	if sendErr != nil {
		return nil, s.brokenDuringRecovery()
	}
	if err != nil {
		s.cancel()
		s.log().Error("replaying the journal failed", "pid", s.pid, "err", err)
		return nil, recoveryError(err)
	}
	return s, nil
}

// recoveryError is the caller's error when the journal cannot be read:
// UNAVAILABLE while the store is down (retry later), else the reference's
// UNKNOWN "Error recovering event log" (ES-7).
func recoveryError(err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		return status.Error(codes.Unavailable, descRecoveryFailed)
	}
	return status.Error(codes.Unknown, descRecoveryFailed)
}

// brokenDuringRecovery ends a stream that broke while recovering and
// returns the error for the caller, naming the stream's own status.
func (s *session) brokenDuringRecovery() error {
	_, err := s.recv(time.Second)
	s.cancel()
	return status.Errorf(codes.Unavailable, "user function stream ended during recovery: %v", status.Convert(err).Message())
}

// recv waits for the next message for at most timeout; on timeout the
// stream is cancelled and errTimeout returned.
func (s *session) recv(timeout time.Duration) (*protocol.EventSourcedStreamOut, error) {
	var timedOut atomic.Bool
	t := time.AfterFunc(timeout, func() { timedOut.Store(true); s.cancel() })
	msg, err := s.stream.Recv()
	t.Stop()
	if err != nil && timedOut.Load() {
		return nil, errTimeout
	}
	return msg, err
}

var errTimeout = errors.New("timed out")

// Close half-closes the stream and gives the function a moment to end its
// side (passivation, ROUTE-6).
func (s *session) Close() {
	if err := s.stream.CloseSend(); err == nil {
		for {
			msg, err := s.recv(s.m.cfg.CloseTimeout)
			if errors.Is(err, errTimeout) {
				s.log().Warn("user function did not close the entity stream in time", "timeout", s.m.cfg.CloseTimeout)
			}
			if err != nil {
				break
			}
			s.log().Warn("message from the user function after the stream was closed; ignored", "message", msg.String())
		}
	}
	s.cancel()
}

// Abort cuts the stream.
func (s *session) Abort() { s.cancel() }

// Handle sends one command and handles its reply (ES-2..ES-6).
func (s *session) Handle(_ context.Context, call route.Call) (route.Outcome, error, entity.End) {
	s.lastID++
	if err := s.stream.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Command{Command: &protocol.Command{
		EntityId: s.id,
		Id:       s.lastID,
		Name:     call.Method.Name,
		Payload:  call.Payload,
	}}}); err != nil {
		// The stream is broken; Recv tells why.
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

	if f := reply.GetClientAction().GetFailure(); f != nil {
		if len(reply.GetEvents()) > 0 || len(reply.GetSideEffects()) > 0 || reply.GetSnapshot() != nil {
			s.report(fmt.Sprintf("%s: the reply to command %d fails the command but also carries events, a snapshot or side effects; they were ignored",
				s.svc.Name, s.lastID))
		}
		out := route.Outcome{Action: reply.GetClientAction()}
		if f.GetRestart() {
			// ES-5: the failure goes to the caller, the entity reloads.
			s.Close()
			return out, nil, entity.Restart
		}
		return out, nil, entity.Continue
	}

	if err := s.persist(reply); err != nil {
		s.log().Error("persisting events failed; reloading the entity", "pid", s.pid, "err", err)
		return route.Outcome{}, writeError(err), writeEnd(err)
	}
	return route.Outcome{Action: reply.GetClientAction(), SideEffects: reply.GetSideEffects()}, nil, entity.Continue
}

// persist appends the reply's events and saves its snapshot (ES-3), in one
// write if the store can. A snapshot without events is ignored; a snapshot
// failure is only logged, because the journal alone is the truth.
func (s *session) persist(reply *protocol.EventSourcedReply) error {
	events := reply.GetEvents()
	if len(events) == 0 {
		if reply.GetSnapshot() != nil {
			s.log().Debug("snapshot without events ignored")
		}
		return nil
	}
	batch := make([]store.Event, len(events))
	for i, ev := range events {
		batch[i] = store.Event{Seq: s.seq + int64(i) + 1, Payload: ev}
	}
	var err error
	if snap := reply.GetSnapshot(); snap != nil {
		// One write for both when the store can (store.SnapshotJournal).
		err = store.AppendWithSnapshot(s.ctx, s.m.cfg.Journal, s.m.cfg.Snapshots, s.pid, batch,
			store.Snapshot{Seq: s.seq + int64(len(batch)), Payload: snap})
	} else {
		err = s.m.cfg.Journal.Append(s.ctx, s.pid, batch)
	}
	if errors.Is(err, store.ErrSnapshotNotSaved) {
		s.log().Warn("saving a snapshot failed", "pid", s.pid, "seq", s.seq+int64(len(batch)), "err", err)
		err = nil
	}
	if err != nil {
		return fmt.Errorf("append %d events to %s at %d: %w", len(batch), s.pid, s.seq+1, err)
	}
	s.seq += int64(len(batch))
	return nil
}

// violation classifies what went wrong with a reply and returns the
// reference's description for the current command (ES-6).
func (s *session) violation(msg *protocol.EventSourcedStreamOut, err error) error {
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
		s.log().Warn("user function reported an entity failure", "description", msg.GetFailure().GetDescription(),
			"command_id", msg.GetFailure().GetCommandId())
	case msg.GetReply() != nil:
		desc = descUnexpectedReply
		m := fmt.Sprintf("%s: entity %s sent a reply for command %d, but the command in flight is %d",
			s.svc.Name, s.id, msg.GetReply().GetCommandId(), s.lastID)
		s.log().Warn(m)
		s.report(m)
	default:
		desc = descUnexpectedMessage
		m := fmt.Sprintf("%s: entity %s sent an empty message", s.svc.Name, s.id)
		s.log().Warn(m)
		s.report(m)
	}
	return status.Error(codes.Unknown, desc)
}

func (s *session) report(msg string) { s.m.report(s.ctx, msg) }

// log returns the entity's logger. It is built on demand because most
// entities never log, and 10,000 active entities should not each carry one.
func (s *session) log() *slog.Logger {
	return s.m.cfg.Log.With("service", s.svc.Name, "entity", s.id)
}

// writeError is the caller's error when a write failed. A fenced write
// (another writer got there first) is ABORTED and an unreachable store
// UNAVAILABLE, both worth retrying; anything else is the reference's
// UNKNOWN "Unexpected entity failure" (ES-7).
func writeError(err error) error {
	return status.Error(writeCode(err), descUnexpectedFailure)
}

func writeCode(err error) codes.Code {
	switch {
	case errors.Is(err, store.ErrConflict):
		return codes.Aborted
	case errors.Is(err, store.ErrUnavailable):
		return codes.Unavailable
	}
	return codes.Unknown
}

// writeEnd says how the entity goes on after a failed write: for a
// conflict or an outage the commands already waiting (never sent) are
// served by a fresh activation; other failures terminate them (ES-7).
func writeEnd(err error) entity.End {
	if writeCode(err) == codes.Unknown {
		return entity.Terminate
	}
	return entity.Reload
}
