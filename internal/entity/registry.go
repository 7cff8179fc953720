// Package entity holds what the stateful entity types share. Serial
// entities (event-sourced and value: one command at a time) run on their
// callers' goroutines through a SerialRegistry (serial.go). CRDT entities,
// which have many commands and streams in flight, each run a loop
// goroutine fed by a Registry of mailboxes (this file).
//
// # The passivation race
//
// A mailbox's queue and its "closed" flag are guarded by the registry
// shard's mutex. An entity only stops while holding that mutex with an empty
// queue (Passivate) or by taking what is queued with it (Detach); a command
// that finds its entity closed starts a new activation. So no command is ever
// left in the queue of a stopped entity.
package entity

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
)

// Loop serves one entity until it stops: it takes commands from mb, and
// must return only after Passivate returned true or Detach was called.
type Loop func(mb *Mailbox)

// RegistryConfig configures a Registry.
type RegistryConfig struct {
	// RelayTimeout bounds how long a caller waits for its outcome.
	RelayTimeout time.Duration
	// MailboxSize bounds the commands queued per entity.
	MailboxSize int
	// Loop is started on its own goroutine for every activated entity.
	Loop Loop
}

const shardCount = 64

// Registry owns the active entities of one entity type. It implements
// route.Handler.
type Registry struct {
	cfg  RegistryConfig
	seed maphash.Seed

	shards [shardCount]shard

	stop     chan struct{}
	stopOnce sync.Once
	// stopMu orders starting an entity (check stop, then wg.Add) against
	// Shutdown closing stop, so no entity starts after Shutdown began
	// waiting for them.
	stopMu sync.RWMutex
	kill   context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type shard struct {
	mu        sync.Mutex
	mailboxes map[Key]*Mailbox
}

// Key identifies an entity: its service and its id.
type Key struct {
	Service string
	ID      string
}

var _ route.Handler = (*Registry)(nil)

// NewRegistry returns a registry; Shutdown ends it.
func NewRegistry(cfg RegistryConfig) *Registry {
	kill, cancel := context.WithCancel(context.Background())
	r := &Registry{cfg: cfg, seed: maphash.MakeSeed(), stop: make(chan struct{}), kill: kill, cancel: cancel}
	for i := range r.shards {
		r.shards[i].mailboxes = make(map[Key]*Mailbox)
	}
	return r
}

// Shutdown refuses new commands and tells every entity to passivate once
// its queue is empty. When ctx ends first, Kill is cancelled so that entity
// loops cut their streams. It returns when every loop has returned.
func (r *Registry) Shutdown(ctx context.Context) {
	r.stopMu.Lock()
	r.stopOnce.Do(func() { close(r.stop) })
	r.stopMu.Unlock()
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.cancel()
		<-done
	}
	r.cancel()
}

// Active returns the number of active entities.
func (r *Registry) Active() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.mailboxes)
		s.mu.Unlock()
	}
	return n
}

// Lookup returns the active mailbox of k, or nil. For tests and metrics.
func (r *Registry) Lookup(k Key) *Mailbox {
	s := r.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mailboxes[k]
}

func (r *Registry) shardOf(k Key) *shard {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(k.Service)
	h.WriteByte(0)
	h.WriteString(k.ID)
	return &r.shards[h.Sum64()%shardCount]
}

// Unary queues the call on its entity (activating it if needed) and waits
// for the outcome, the caller's context, or the relay timeout.
func (r *Registry) Unary(ctx context.Context, call route.Call) (route.Outcome, error) {
	cmd := &Command{Ctx: ctx, Call: call, done: make(chan result, 1)}
	if err := r.enqueue(cmd); err != nil {
		return route.Outcome{}, err
	}
	timer := time.NewTimer(r.cfg.RelayTimeout)
	defer timer.Stop()
	select {
	case res := <-cmd.done:
		return res.out, res.err
	case <-ctx.Done():
		return route.Outcome{}, status.FromContextError(ctx.Err()).Err()
	case <-timer.C:
		return route.Outcome{}, status.Errorf(codes.Internal, "no reply from entity %s of %s within the relay timeout (%s)",
			call.EntityID, call.Method.Service.Name, r.cfg.RelayTimeout)
	}
}

// Stream queues a streamed command and relays its outcomes to emit, in
// order, until the entity finishes the command or the client goes away
// (then the entity is told, so it can tell the function). An error from
// emit ends the call as if the client had gone away. There is no relay
// timeout: streams live as long as the client wants.
func (r *Registry) Stream(ctx context.Context, call route.Call, emit func(route.Outcome) error) error {
	cmd := &Command{Ctx: ctx, Call: call, done: make(chan result, 1), outcomes: make(chan route.Outcome, streamBuffer)}
	if err := r.enqueue(cmd); err != nil {
		return err
	}
	for {
		select {
		case out := <-cmd.outcomes:
			if err := emit(out); err != nil {
				cmd.mb.cancel(cmd)
				return err
			}
		case res := <-cmd.done:
			// Outcomes sent before the end are relayed first.
			for {
				select {
				case out := <-cmd.outcomes:
					if err := emit(out); err != nil {
						return err
					}
				default:
					return res.err
				}
			}
		case <-ctx.Done():
			cmd.mb.cancel(cmd)
			return status.FromContextError(ctx.Err()).Err()
		}
	}
}

func (r *Registry) enqueue(cmd *Command) error {
	r.stopMu.RLock()
	defer r.stopMu.RUnlock()
	select {
	case <-r.stop:
		return status.Error(codes.Unavailable, "the proxy is shutting down")
	default:
	}
	svc := cmd.Call.Method.Service
	k := Key{Service: svc.Name, ID: cmd.Call.EntityID}
	s := r.shardOf(k)
	s.mu.Lock()
	mb := s.mailboxes[k]
	if mb == nil {
		mb = &Mailbox{r: r, shard: s, Key: k, Service: svc, wake: make(chan struct{}, 1)}
		s.mailboxes[k] = mb
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.cfg.Loop(mb)
		}()
	}
	if len(mb.queue) >= r.cfg.MailboxSize {
		n := len(mb.queue)
		s.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "entity %s of %s has %d commands queued; try again later", k.ID, k.Service, n)
	}
	mb.queue = append(mb.queue, cmd)
	cmd.mb = mb
	s.mu.Unlock()
	select {
	case mb.wake <- struct{}{}:
	default:
	}
	return nil
}

// Mailbox is one active entity's queue, owned by its loop goroutine.
type Mailbox struct {
	r       *Registry
	shard   *shard
	Key     Key
	Service *discovery.Service
	wake    chan struct{}

	queue     []*Command // guarded by shard.mu
	cancelled []*Command // streamed commands whose client left; guarded by shard.mu
}

// Wake receives a value when a command may have been queued.
func (mb *Mailbox) Wake() <-chan struct{} { return mb.wake }

// Stopping is closed when the registry shuts down: the loop should
// passivate as soon as its queue is empty.
func (mb *Mailbox) Stopping() <-chan struct{} { return mb.r.stop }

// Kill is cancelled when shutdown runs out of time; streams to the user
// function derive from it so they are cut then.
func (mb *Mailbox) Kill() context.Context { return mb.r.kill }

// Pop takes the oldest queued command, or returns nil.
func (mb *Mailbox) Pop() *Command {
	mb.shard.mu.Lock()
	defer mb.shard.mu.Unlock()
	if len(mb.queue) == 0 {
		return nil
	}
	cmd := mb.queue[0]
	mb.queue[0] = nil
	mb.queue = mb.queue[1:]
	return cmd
}

// Queued returns the number of queued commands.
func (mb *Mailbox) Queued() int {
	mb.shard.mu.Lock()
	defer mb.shard.mu.Unlock()
	return len(mb.queue)
}

// TakeCancelled returns the streamed commands whose client has gone away
// since the last call (check it whenever Wake fires).
func (mb *Mailbox) TakeCancelled() []*Command {
	mb.shard.mu.Lock()
	defer mb.shard.mu.Unlock()
	c := mb.cancelled
	mb.cancelled = nil
	return c
}

// cancel records that the client of cmd has gone away and wakes the loop.
func (mb *Mailbox) cancel(cmd *Command) {
	mb.shard.mu.Lock()
	mb.cancelled = append(mb.cancelled, cmd)
	mb.shard.mu.Unlock()
	select {
	case mb.wake <- struct{}{}:
	default:
	}
}

// Passivate removes the entity from the registry if nothing is queued and
// reports whether it did; the loop must then return.
func (mb *Mailbox) Passivate() bool {
	mb.shard.mu.Lock()
	defer mb.shard.mu.Unlock()
	if len(mb.queue) > 0 {
		return false
	}
	mb.remove()
	return true
}

// Detach removes the entity from the registry at once, so the next command
// activates a new one, and returns the commands still queued; the caller
// must finish them.
func (mb *Mailbox) Detach() []*Command {
	mb.shard.mu.Lock()
	defer mb.shard.mu.Unlock()
	mb.remove()
	q := mb.queue
	mb.queue = nil
	return q
}

// FailQueued detaches the entity and fails every queued command with err.
func (mb *Mailbox) FailQueued(err error) {
	for _, cmd := range mb.Detach() {
		cmd.Finish(route.Outcome{}, err)
	}
}

func (mb *Mailbox) remove() {
	if mb.shard.mailboxes[mb.Key] == mb {
		delete(mb.shard.mailboxes, mb.Key)
	}
}

// Command is one queued call and the channel its outcome goes to.
type Command struct {
	// Ctx is the caller's context: a command whose caller has left before
	// it was sent is skipped.
	Ctx  context.Context
	Call route.Call
	done chan result // buffered: an entity never blocks on a caller

	// For streamed commands (Registry.Stream): the outcomes to relay to the
	// client, buffered so that a slow client never blocks its entity, and
	// the mailbox to tell when the client goes away.
	outcomes chan route.Outcome
	mb       *Mailbox
}

// streamBuffer is how many outcomes a streamed command may have waiting for
// a slow client before the entity gives up on that client.
const streamBuffer = 256

// Streamed reports whether the client expects a stream of outcomes.
func (c *Command) Streamed() bool { return c.outcomes != nil }

// Send queues one outcome of a streamed command for the client without
// blocking. It returns false when the client has fallen too far behind;
// the entity should then end the stream.
func (c *Command) Send(out route.Outcome) bool {
	select {
	case c.outcomes <- out:
		return true
	default:
		return false
	}
}

type result struct {
	out route.Outcome
	err error
}

// Finish delivers the command's outcome; for a streamed command it ends
// the stream (err nil: normally). Only the first call counts, so an entity
// may finish a command on every path that ends it without bookkeeping.
func (c *Command) Finish(out route.Outcome, err error) {
	select {
	case c.done <- result{out: out, err: err}:
	default:
	}
}
