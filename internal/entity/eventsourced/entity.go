package eventsourced

import (
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
// (BEHAVIOR.md ERR-1); clients and the TCK compare them exactly.
const (
	descUnexpectedFailure     = "Unexpected entity failure"
	descUnexpectedReply       = "Unexpected entity reply"
	descUnexpectedMessage     = "Unexpected entity message"
	descUnexpectedTermination = "Unexpected entity termination"
	descTerminated            = "Entity terminated"
	descRecoveryFailed        = "Error recovering event log"
)

type (
	stream  = entity.Stream[protocol.EventSourcedStreamIn, protocol.EventSourcedStreamOut]
	inbound = entity.Inbound[protocol.EventSourcedStreamOut]
)

// entityLoop is the state of one entity's loop goroutine, which is the
// only goroutine that touches its stream.
type entityLoop struct {
	m           *Manager
	mb          *entity.Mailbox
	pid         string
	passivation time.Duration
	log         *slog.Logger
}

// next says what an activation's serve loop ended with.
type next int

const (
	stopped   next = iota // the entity is gone (passivated or terminated)
	restarted             // activate again from the store
)

// activation is one stream to the user function for this entity.
type activation struct {
	e      *entityLoop
	s      *stream
	seq    int64 // highest journal sequence number applied
	lastID int64 // id of the last command sent on this stream
	next   next  // how the activation ended, when it ended on its own
}

// activate loads the snapshot and events and replays them to a new stream.
func (e *entityLoop) activate() (*activation, error) {
	ctx := e.mb.Kill()
	snap, hasSnap, err := e.m.cfg.Snapshots.LatestSnapshot(ctx, e.pid)
	if err != nil {
		e.log.Error("loading snapshot failed", "pid", e.pid, "err", err)
		return nil, status.Error(codes.Unknown, descRecoveryFailed)
	}
	s, err := entity.OpenStream(ctx, e.m.cfg.Client.Handle)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "user function unavailable: %v", status.Convert(err).Message())
	}
	a := &activation{e: e, s: s}

	initMsg := &protocol.EventSourcedInit{ServiceName: e.mb.Service.Name, EntityId: e.mb.Key.ID}
	if hasSnap {
		initMsg.Snapshot = &protocol.EventSourcedSnapshot{SnapshotSequence: snap.Seq, Snapshot: snap.Payload}
		a.seq = snap.Seq
	}
	if err := s.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Init{Init: initMsg}}); err != nil {
		return nil, a.abortActivation(err)
	}
	var sendErr error
	err = e.m.cfg.Journal.Replay(s.Context(), e.pid, a.seq, func(ev store.Event) error {
		if ev.Seq != a.seq+1 {
			return fmt.Errorf("journal of %s jumps from %d to %d", e.pid, a.seq, ev.Seq)
		}
		a.seq = ev.Seq
		sendErr = s.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Event{
			Event: &protocol.EventSourcedEvent{Sequence: ev.Seq, Payload: ev.Payload},
		}})
		return sendErr
	})
	if sendErr != nil {
		return nil, a.abortActivation(sendErr)
	}
	if err != nil {
		s.Abort()
		e.log.Error("replaying the journal failed", "pid", e.pid, "err", err)
		return nil, status.Error(codes.Unknown, descRecoveryFailed)
	}
	return a, nil
}

// abortActivation ends a stream that broke while recovering and returns the
// error for the waiting callers, naming the stream's own status if it has one.
func (a *activation) abortActivation(sendErr error) error {
	reason := a.s.ReasonAfterSendError(sendErr)
	a.s.Abort()
	return status.Errorf(codes.Unavailable, "user function stream ended during recovery: %v", status.Convert(reason).Message())
}

func (a *activation) closeGracefully() { a.s.CloseGracefully(a.e.m.cfg.CloseTimeout, a.e.log) }

// serve runs the activation until the entity passivates, restarts or
// fails.
func (a *activation) serve() next {
	if entity.Serve[protocol.EventSourcedStreamOut](a.e.mb, a.e.passivation, a) {
		return stopped
	}
	return a.next
}

// Received, Handle, Unexpected and Passivate make an activation an
// entity.Session.
func (a *activation) Received() <-chan inbound { return a.s.Received() }

func (a *activation) Handle(cmd *entity.Command) bool {
	n := a.handle(cmd)
	if n == nil {
		return false
	}
	a.next = *n
	return true
}

// Unexpected: nothing is in flight, so anything from the function now is a
// violation or the end of the stream.
func (a *activation) Unexpected(in inbound) {
	a.fail(nil, in)
	a.next = stopped
}

func (a *activation) Passivate() { a.closeGracefully() }

// handle runs one command. It returns nil to go on serving, or how the
// activation ends.
func (a *activation) handle(cmd *entity.Command) *next {
	e := a.e
	a.lastID++
	err := a.s.Send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Command{Command: &protocol.Command{
		EntityId: e.mb.Key.ID,
		Id:       a.lastID,
		Name:     cmd.Call.Method.Name,
		Payload:  cmd.Call.Payload,
	}}})
	if err != nil {
		// The stream is broken; Received will tell why.
		e.log.Debug("sending a command failed", "err", err)
	}
	relay := time.NewTimer(e.m.cfg.RelayTimeout)
	defer relay.Stop()
	var in inbound
	select {
	case in = <-a.s.Received():
	case <-relay.C:
		e.log.Warn("user function did not answer a command within the relay timeout", "command", cmd.Call.Method.Name, "timeout", e.m.cfg.RelayTimeout)
		cmd.Finish(route.Outcome{}, status.Errorf(codes.Internal, "entity %s did not answer within the relay timeout (%s)", e.mb.Key.ID, e.m.cfg.RelayTimeout))
		a.stop(descTerminated)
		return ptr(stopped)
	case <-a.s.Context().Done():
		cmd.Finish(route.Outcome{}, status.Error(codes.Unavailable, "the proxy is shutting down"))
		a.stop(descTerminated)
		return ptr(stopped)
	}

	reply := in.Msg.GetReply()
	if in.Err != nil || reply == nil || reply.GetCommandId() != a.lastID {
		a.fail(cmd, in)
		return ptr(stopped)
	}

	if f := reply.GetClientAction().GetFailure(); f != nil {
		if len(reply.GetEvents()) > 0 || len(reply.GetSideEffects()) > 0 || reply.GetSnapshot() != nil {
			a.report(fmt.Sprintf("%s: the reply to command %d fails the command but also carries events, a snapshot or side effects; they were ignored",
				e.mb.Service.Name, a.lastID))
		}
		cmd.Finish(route.Outcome{Action: reply.GetClientAction()}, nil)
		if f.GetRestart() {
			a.closeGracefully()
			return ptr(restarted)
		}
		return nil
	}

	if err := a.persist(reply); err != nil {
		e.log.Error("persisting events failed; stopping the entity", "pid", e.pid, "err", err)
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descUnexpectedFailure))
		a.stop(descTerminated)
		return ptr(stopped)
	}
	cmd.Finish(route.Outcome{Action: reply.GetClientAction(), SideEffects: reply.GetSideEffects()}, nil)
	return nil
}

// persist appends the reply's events and then saves its snapshot (ES-3). A
// snapshot without events is ignored; a snapshot failure is only logged,
// because the journal alone is the truth.
func (a *activation) persist(reply *protocol.EventSourcedReply) error {
	events := reply.GetEvents()
	if len(events) == 0 {
		if reply.GetSnapshot() != nil {
			a.e.log.Debug("snapshot without events ignored")
		}
		return nil
	}
	batch := make([]store.Event, len(events))
	for i, ev := range events {
		batch[i] = store.Event{Seq: a.seq + int64(i) + 1, Payload: ev}
	}
	ctx := a.s.Context()
	if err := a.e.m.cfg.Journal.Append(ctx, a.e.pid, batch); err != nil {
		return fmt.Errorf("append %d events to %s at %d: %w", len(batch), a.e.pid, a.seq+1, err)
	}
	a.seq += int64(len(batch))
	if snap := reply.GetSnapshot(); snap != nil {
		if err := a.e.m.cfg.Snapshots.SaveSnapshot(ctx, a.e.pid, store.Snapshot{Seq: a.seq, Payload: snap}); err != nil {
			a.e.log.Warn("saving a snapshot failed", "pid", a.e.pid, "seq", a.seq, "err", err)
		}
	}
	return nil
}

// fail handles a violation or the end of the stream: cmd (if any) gets the
// reference's description for what happened, queued commands get "Entity
// terminated", and the entity stops (ES-6).
func (a *activation) fail(cmd *entity.Command, in inbound) {
	e := a.e
	var desc string
	switch {
	case in.Err != nil:
		desc = descUnexpectedTermination
		if errors.Is(in.Err, io.EOF) {
			e.log.Warn("user function closed the entity stream")
		} else {
			e.log.Warn("entity stream failed", "err", in.Err)
		}
	case in.Msg.GetFailure() != nil:
		desc = descUnexpectedFailure
		e.log.Warn("user function reported an entity failure", "description", in.Msg.GetFailure().GetDescription(),
			"command_id", in.Msg.GetFailure().GetCommandId())
	case in.Msg.GetReply() != nil:
		desc = descUnexpectedReply
		inFlight := int64(0)
		if cmd != nil {
			inFlight = a.lastID
		}
		msg := fmt.Sprintf("%s: entity %s sent a reply for command %d, but the command in flight is %d",
			e.mb.Service.Name, e.mb.Key.ID, in.Msg.GetReply().GetCommandId(), inFlight)
		e.log.Warn(msg)
		a.report(msg)
	default:
		desc = descUnexpectedMessage
		msg := fmt.Sprintf("%s: entity %s sent an empty message", e.mb.Service.Name, e.mb.Key.ID)
		e.log.Warn(msg)
		a.report(msg)
	}
	if cmd != nil {
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, desc))
	}
	a.stop(descTerminated)
}

// stop ends the activation after a failure; queued commands fail with desc.
func (a *activation) stop(desc string) { a.s.Terminate(a.e.mb, status.Error(codes.Unknown, desc)) }

func (a *activation) report(msg string) { a.e.m.report(a.s.Context(), msg) }

func ptr(n next) *next { return &n }
