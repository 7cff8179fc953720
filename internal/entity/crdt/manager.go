// Package crdt runs CRDT entities in the proxy (cloudstate.crdt.Crdt/handle).
// The proxy owns the CRDT: it keeps the full state in a Replicator, sends
// the function only deltas of the value, and applies the deltas the
// function sends back (PROTOCOL.md §3.4, §7.3; BEHAVIOR.md CRDT-1..CRDT-12).
//
// Unlike event-sourced and value entities, a CRDT entity has many commands
// in flight at once, and streamed commands stay open as long as their
// client listens. The entity's loop goroutine owns the stream to the
// function, the value the function is known to hold ("last"), and the
// table of commands and streams in flight. Deltas for changes made
// elsewhere are sent only while nothing is in flight (CRDT-4), so the
// function never sees a delta that races with its own update. State lives in
// the Replicator, so it survives passivation.
package crdt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/crdt"
	"github.com/cloudstate-go/cloudstate/internal/entity"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Client-visible descriptions (BEHAVIOR.md ERR-1).
const (
	descTerminating   = "Entity terminating"
	descDeleted       = "Entity deleted"
	descWriteFailed   = "Failed to update CRDT at requested write consistency"
	descUnexpected    = "Unexpected entity failure"
	descTooSlowClient = "the client did not keep up with the stream"
)

// Config is what a Manager needs. Every field is required unless noted.
type Config struct {
	Replicator Replicator
	// Client opens entity streams to the user function.
	Client protocol.CrdtClient
	// Reporter receives protocol violations; optional.
	Reporter route.Reporter
	// SideEffects performs the side effects of a stream-cancelled response,
	// which have no client call to run in (CRDT-8 deviation). Optional.
	SideEffects func(ctx context.Context, from route.Call, effects []*protocol.SideEffect)
	// PassivationTimeout is the idle time after which an entity with no
	// open streams stops, unless its service sets its own.
	PassivationTimeout time.Duration
	// RelayTimeout bounds how long a unary caller waits for its reply.
	RelayTimeout time.Duration
	// MailboxSize bounds the commands queued per entity.
	MailboxSize int
	// CloseTimeout bounds how long a passivating entity waits for the
	// function to end its side of the stream. Optional; default 5s.
	CloseTimeout time.Duration
	Log          *slog.Logger
}

// Manager runs the CRDT entities of this node. It implements route.Handler
// and route.StreamHandler.
type Manager struct {
	*entity.Registry
	cfg Config
}

var _ route.StreamHandler = (*Manager)(nil)

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

// Key returns the replicated-data key of a CRDT entity (PROTOCOL.md §6).
func Key(persistenceID, entityID string) string { return persistenceID + "-" + entityID }

// Stream serves a server-streaming method: a streamed command (CRDT-7).
func (m *Manager) Stream(ctx context.Context, call route.StreamCall, emit func(route.Outcome) error) error {
	payload, err := call.Recv()
	if err != nil {
		return err
	}
	return m.Registry.Stream(ctx, route.Call{Method: call.Method, EntityID: call.EntityID, Payload: payload, Metadata: call.Metadata}, emit)
}

type (
	stream  = entity.Stream[protocol.CrdtStreamIn, protocol.CrdtStreamOut]
	inbound = entity.Inbound[protocol.CrdtStreamOut]
)

// loop is one activation of one CRDT entity.
type loop struct {
	m       *Manager
	mb      *entity.Mailbox
	key     string
	replica crdt.Replica
	log     *slog.Logger
	s       *stream

	state crdt.CRDT // this node's copy, nil until the CRDT exists
	last  crdt.View // the value the function holds

	lastID      int64
	outstanding map[int64]*entity.Command // sent, waiting for the reply
	streams     map[int64]*entity.Command // replied with streamed=true, still open
	cancelling  map[int64]*entity.Command // stream_cancelled sent, waiting for the response
	ids         map[*entity.Command]int64
	changed     chan struct{} // the replicator saw a change
	pending     bool          // a change not yet sent to the function
}

func (m *Manager) run(mb *entity.Mailbox) {
	svc := mb.Service
	l := &loop{
		m:           m,
		mb:          mb,
		key:         Key(svc.PersistenceID, mb.Key.ID),
		replica:     m.cfg.Replicator.Replica(),
		log:         m.cfg.Log.With("service", svc.Name, "entity", mb.Key.ID),
		outstanding: make(map[int64]*entity.Command),
		streams:     make(map[int64]*entity.Command),
		cancelling:  make(map[int64]*entity.Command),
		ids:         make(map[*entity.Command]int64),
		changed:     make(chan struct{}, 1),
	}
	passivation := m.cfg.PassivationTimeout
	if svc.Passivation > 0 {
		passivation = svc.Passivation
	}
	stopWatch := m.cfg.Replicator.Watch(l.key, func() {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	})
	defer stopWatch()
	if err := l.activate(); err != nil {
		mb.FailQueued(err)
		return
	}
	l.serve(passivation)
}

// activate opens the stream and sends init with the current value.
func (l *loop) activate() error {
	c, deleted := l.m.cfg.Replicator.Get(l.key)
	if deleted {
		return status.Error(codes.Unknown, descDeleted)
	}
	s, err := entity.OpenStream(l.mb.Kill(), l.m.cfg.Client.Handle)
	if err != nil {
		return status.Errorf(codes.Unavailable, "user function unavailable: %v", status.Convert(err).Message())
	}
	l.s = s
	l.state = c
	init := &protocol.CrdtInit{ServiceName: l.mb.Service.Name, EntityId: l.mb.Key.ID}
	if c != nil {
		l.last = c.View(l.replica)
		init.Delta = crdt.InitialDelta(l.last)
	}
	if err := s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: init}}); err != nil {
		reason := s.ReasonAfterSendError(err)
		s.Abort()
		return status.Errorf(codes.Unavailable, "user function stream ended at init: %v", status.Convert(reason).Message())
	}
	return nil
}

func (l *loop) busy() bool { return len(l.outstanding) > 0 || len(l.cancelling) > 0 }

// serve runs until the entity passivates, is deleted or crashes.
func (l *loop) serve(passivation time.Duration) {
	idle := time.NewTimer(passivation)
	defer idle.Stop()
	stopping := l.mb.Stopping()
	draining := false // shutting down: passivate as soon as nothing is in flight
	for {
		if draining && !l.busy() && l.mb.Passivate() {
			for id, cmd := range l.streams {
				delete(l.streams, id)
				cmd.Finish(route.Outcome{}, nil)
			}
			l.s.CloseGracefully(l.m.cfg.CloseTimeout, l.log)
			return
		}
		select {
		case <-l.mb.Wake():
			for _, cmd := range l.mb.TakeCancelled() {
				l.cancelStream(cmd)
			}
			for cmd := l.mb.Pop(); cmd != nil; cmd = l.mb.Pop() {
				if err := cmd.Ctx.Err(); err != nil {
					cmd.Finish(route.Outcome{}, status.FromContextError(err).Err())
					continue
				}
				l.send(cmd)
			}
		case in := <-l.s.Received():
			if done := l.receive(in); done {
				return
			}
		case <-l.s.Context().Done():
			// Shutdown ran out of time (Kill): the stream is cut.
			l.crash("the entity stream was cut at shutdown")
			return
		case <-l.changed:
			l.pending = true
		case <-idle.C:
			if len(l.streams) == 0 && !l.busy() && l.mb.Passivate() {
				l.s.CloseGracefully(l.m.cfg.CloseTimeout, l.log)
				return
			}
		case <-stopping:
			// Shutdown: end open client streams, then passivate once
			// nothing is in flight (CRDT-12).
			stopping = nil
			draining = true
			for id, cmd := range l.streams {
				delete(l.streams, id)
				delete(l.ids, cmd)
				cmd.Finish(route.Outcome{}, nil)
			}
		}
		if l.pending && !l.busy() {
			l.pushChange()
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(passivation)
	}
}

// send sends a command to the function.
func (l *loop) send(cmd *entity.Command) {
	l.lastID++
	id := l.lastID
	l.outstanding[id] = cmd
	l.ids[cmd] = id
	err := l.s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
		EntityId: l.mb.Key.ID,
		Id:       id,
		Name:     cmd.Call.Method.Name,
		Payload:  cmd.Call.Payload,
		Streamed: cmd.Streamed(),
	}}})
	if err != nil {
		l.log.Debug("sending a command failed", "err", err)
	}
}

// cancelStream tells the function that the client of a streamed command
// went away (CRDT-8).
func (l *loop) cancelStream(cmd *entity.Command) {
	id, ok := l.ids[cmd]
	if !ok {
		return
	}
	if _, open := l.streams[id]; !open {
		// Not replied yet (the reply will find the client gone) or already
		// finished: nothing to cancel now.
		return
	}
	delete(l.streams, id)
	l.cancelling[id] = cmd
	err := l.s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_StreamCancelled{StreamCancelled: &protocol.StreamCancelled{
		EntityId: l.mb.Key.ID, Id: id,
	}}})
	if err != nil {
		l.log.Debug("sending stream_cancelled failed", "err", err)
	}
}

// receive handles one message from the function; it returns true when the
// activation is over.
func (l *loop) receive(in inbound) bool {
	if in.Err != nil {
		reason := "Entity crashed"
		if errors.Is(in.Err, io.EOF) {
			reason = "Unexpected entity termination due to stream closure"
		}
		l.crash(fmt.Sprintf("%s: %v", reason, in.Err))
		return true
	}
	switch msg := in.Msg.GetMessage().(type) {
	case *protocol.CrdtStreamOut_Reply:
		return l.reply(msg.Reply)
	case *protocol.CrdtStreamOut_StreamedMessage:
		l.streamed(msg.StreamedMessage)
		return false
	case *protocol.CrdtStreamOut_StreamCancelledResponse:
		return l.cancelled(msg.StreamCancelledResponse)
	case *protocol.CrdtStreamOut_Failure:
		l.failure(msg.Failure)
		return false
	default:
		l.crash("the user function sent an empty message")
		return true
	}
}

func (l *loop) reply(r *protocol.CrdtReply) bool {
	id := r.GetCommandId()
	cmd := l.outstanding[id]
	if cmd == nil {
		l.crash(fmt.Sprintf("reply for command %d, which is not in flight", id))
		return true
	}
	delete(l.outstanding, id)
	if r.GetStreamed() && !cmd.Streamed() {
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descTerminating))
		l.crash(fmt.Sprintf("reply to command %d is streamed, but the command is not", id))
		return true
	}
	if sa := r.GetStateAction(); sa != nil && sa.GetAction() != nil {
		if _, del := sa.GetAction().(*protocol.CrdtStateAction_Delete); del {
			l.delete(cmd, route.Outcome{Action: r.GetClientAction(), SideEffects: r.GetSideEffects()}, sa.GetWriteConsistency())
			return true
		}
		if err := l.update(sa); err != nil {
			if _, deleted := l.m.cfg.Replicator.Get(l.key); deleted {
				cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descDeleted))
				l.deletedElsewhere()
				return true
			}
			if errors.Is(err, errReplication) {
				cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descWriteFailed))
			} else {
				l.outstanding[id] = cmd
			}
			l.crash(err.Error())
			return true
		}
	}
	out := route.Outcome{Action: r.GetClientAction(), SideEffects: r.GetSideEffects()}
	if !cmd.Streamed() {
		delete(l.ids, cmd)
		cmd.Finish(out, nil)
		return false
	}
	if !cmd.Send(out) {
		l.endStream(id, cmd, status.Error(codes.ResourceExhausted, descTooSlowClient))
		return false
	}
	if !r.GetStreamed() {
		delete(l.ids, cmd)
		cmd.Finish(route.Outcome{}, nil)
		return false
	}
	l.streams[id] = cmd
	if cmd.Ctx.Err() != nil {
		// The client left while the command was in flight.
		l.cancelStream(cmd)
	}
	return false
}

func (l *loop) streamed(sm *protocol.CrdtStreamedMessage) {
	id := sm.GetCommandId()
	cmd := l.streams[id]
	if cmd == nil {
		if _, cancelling := l.cancelling[id]; !cancelling {
			l.report(fmt.Sprintf("%s: entity %s sent a streamed message for command %d, which has no open stream; dropped",
				l.mb.Service.Name, l.mb.Key.ID, id))
		}
		return
	}
	if !cmd.Send(route.Outcome{Action: sm.GetClientAction(), SideEffects: sm.GetSideEffects()}) {
		if sm.GetEndStream() {
			delete(l.streams, id)
			delete(l.ids, cmd)
			cmd.Finish(route.Outcome{}, status.Error(codes.ResourceExhausted, descTooSlowClient))
			return
		}
		l.endStream(id, cmd, status.Error(codes.ResourceExhausted, descTooSlowClient))
		return
	}
	if sm.GetEndStream() {
		delete(l.streams, id)
		delete(l.ids, cmd)
		cmd.Finish(route.Outcome{}, nil)
	}
}

// endStream ends a client stream with err and tells the function.
func (l *loop) endStream(id int64, cmd *entity.Command, err error) {
	l.streams[id] = cmd
	l.cancelStream(cmd)
	cmd.Finish(route.Outcome{}, err)
}

func (l *loop) cancelled(r *protocol.CrdtStreamCancelledResponse) bool {
	id := r.GetCommandId()
	cmd := l.cancelling[id]
	if cmd == nil {
		l.report(fmt.Sprintf("%s: entity %s answered a stream cancellation for command %d that was not sent; ignored",
			l.mb.Service.Name, l.mb.Key.ID, id))
		return false
	}
	delete(l.cancelling, id)
	delete(l.ids, cmd)
	if sa := r.GetStateAction(); sa != nil && sa.GetAction() != nil {
		if _, del := sa.GetAction().(*protocol.CrdtStateAction_Delete); del {
			l.delete(nil, route.Outcome{}, sa.GetWriteConsistency())
			return true
		}
		if err := l.update(sa); err != nil {
			l.crash(err.Error())
			return true
		}
	}
	if len(r.GetSideEffects()) > 0 && l.m.cfg.SideEffects != nil {
		l.m.cfg.SideEffects(context.WithoutCancel(l.s.Context()), cmd.Call, r.GetSideEffects())
	}
	// The command's caller is still waiting in Registry.Stream only if it
	// did not already return; finishing is harmless either way.
	cmd.Finish(route.Outcome{}, nil)
	return false
}

// failure handles a top-level failure: it fails the command it names (the
// entity goes on) or, without a command, is only reported (CRDT-10).
func (l *loop) failure(f *protocol.Failure) {
	id := f.GetCommandId()
	l.log.Warn("user function reported an entity failure", "description", f.GetDescription(), "command_id", id)
	if cmd := l.outstanding[id]; cmd != nil {
		delete(l.outstanding, id)
		delete(l.ids, cmd)
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descUnexpected))
		return
	}
	if cmd := l.streams[id]; cmd != nil {
		delete(l.streams, id)
		delete(l.ids, cmd)
		cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descUnexpected))
		return
	}
	if cmd := l.cancelling[id]; cmd != nil {
		delete(l.cancelling, id)
		delete(l.ids, cmd)
		cmd.Finish(route.Outcome{}, nil)
		return
	}
	l.report(fmt.Sprintf("%s: entity %s reported a failure not tied to a command in flight: %s",
		l.mb.Service.Name, l.mb.Key.ID, f.GetDescription()))
}

var errReplication = errors.New("replicating the update failed")

// update applies the function's delta to the state and replicates it.
func (l *loop) update(sa *protocol.CrdtStateAction) error {
	d := sa.GetUpdate()
	var err error
	if l.state == nil {
		l.state, err = crdt.FromDelta(l.replica, d)
	} else {
		err = l.state.Apply(l.replica, d)
	}
	if err != nil {
		return fmt.Errorf("invalid update from the user function: %w", err)
	}
	if l.last, err = crdt.ApplyView(l.last, d); err != nil {
		return fmt.Errorf("invalid update from the user function: %w", err)
	}
	merged, err := l.m.cfg.Replicator.Update(l.s.Context(), l.key, l.state, sa.GetWriteConsistency())
	if err != nil {
		return fmt.Errorf("%w: %w", errReplication, err)
	}
	l.state = merged
	return nil
}

// pushChange sends the function one delta for everything that changed
// since the value it holds (CRDT-4).
func (l *loop) pushChange() {
	l.pending = false
	c, deleted := l.m.cfg.Replicator.Get(l.key)
	if deleted {
		l.deletedElsewhere()
		return
	}
	if c == nil {
		return
	}
	l.state = c
	now := c.View(l.replica)
	d, err := crdt.Diff(l.last, now)
	if err != nil {
		l.log.Error("cannot express a change as a delta", "err", err)
		return
	}
	l.last = now
	if d == nil {
		return
	}
	if err := l.s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delta{Delta: d}}); err != nil {
		l.log.Debug("sending a delta failed", "err", err)
	}
}

// delete deletes the CRDT everywhere for the function (CRDT-9): the stream
// closes at once, cmd is answered when the delete is confirmed, and every
// other command and stream fails with "Entity deleted".
func (l *loop) delete(cmd *entity.Command, out route.Outcome, wc protocol.CrdtWriteConsistency) {
	queued := l.mb.Detach()
	l.s.Abort()
	err := l.m.cfg.Replicator.Delete(context.WithoutCancel(l.s.Context()), l.key, wc)
	if cmd != nil {
		delete(l.ids, cmd)
		if err != nil {
			cmd.Finish(route.Outcome{}, status.Error(codes.Unknown, descWriteFailed))
		} else if cmd.Streamed() {
			cmd.Send(out)
			cmd.Finish(route.Outcome{}, nil)
		} else {
			cmd.Finish(out, nil)
		}
	}
	l.failAll(queued, status.Error(codes.Unknown, descDeleted))
}

// deletedElsewhere handles a delete made by another node: the function is
// told, the stream closed, and everything in flight fails.
func (l *loop) deletedElsewhere() {
	_ = l.s.Send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delete{Delete: &protocol.CrdtDelete{}}})
	queued := l.mb.Detach()
	l.s.CloseGracefully(l.m.cfg.CloseTimeout, l.log)
	l.failAll(queued, status.Error(codes.Unknown, descDeleted))
}

// crash ends the entity after a violation or a broken stream (CRDT-11).
func (l *loop) crash(reason string) {
	l.log.Warn("CRDT entity crashed", "reason", reason)
	l.report(fmt.Sprintf("%s: entity %s crashed: %s", l.mb.Service.Name, l.mb.Key.ID, reason))
	queued := l.mb.Detach()
	l.s.Abort()
	l.failAll(queued, status.Error(codes.Unknown, descTerminating))
}

// failAll fails every command in flight, every open stream and queued.
func (l *loop) failAll(queued []*entity.Command, err error) {
	for _, set := range []map[int64]*entity.Command{l.outstanding, l.streams} {
		for id, cmd := range set {
			delete(set, id)
			cmd.Finish(route.Outcome{}, err)
		}
	}
	for id, cmd := range l.cancelling {
		delete(l.cancelling, id)
		cmd.Finish(route.Outcome{}, nil)
	}
	for _, cmd := range queued {
		cmd.Finish(route.Outcome{}, err)
	}
}

func (l *loop) report(msg string) {
	if r := l.m.cfg.Reporter; r != nil {
		r.ReportError(context.WithoutCancel(l.s.Context()), msg)
	}
}
