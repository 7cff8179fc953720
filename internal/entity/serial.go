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

// Serial entities (event-sourced and value) handle one command at a time.
// They need no goroutine of their own: the caller's goroutine takes the
// entity's turn (a one-slot semaphore, whose waiters the Go runtime queues
// in arrival order), sends its command on the entity's stream, waits for
// the reply and persists it. An idle entity is only a small struct and its
// open stream, so 10,000 active carts cost little memory, and a call
// crosses no goroutine hand-off beyond gRPC's own.
//
// # Passivation
//
// Each entity has an idle timer. When it fires, the entity passivates only
// if nobody holds or waits for its turn: "waiting" is counted under the
// shard mutex before a caller queues for the turn, and passivation checks
// it under the same mutex, so no command is left with a removed entity (a
// caller that still finds one removed looks the entity up again).
//
// # Terminations
//
// When an activation fails (a protocol violation, a broken stream, a store
// error), the commands that were already waiting fail with the entity
// type's "terminated" description (BEHAVIOR.md ES-6, VE-5). Each caller
// records the entity's epoch when it starts waiting; a termination bumps
// the epoch, so those callers fail while later ones activate it afresh.

// Session is one activation of a serial entity: its stream to the user
// function. Its methods are called only by the holder of the entity's turn.
type Session interface {
	// Handle runs one command to its end and says how the activation goes on.
	Handle(ctx context.Context, call route.Call) (route.Outcome, error, End)
	// Close half-closes the stream and waits (bounded) for the function to
	// end its side: passivation.
	Close()
	// Abort cuts the stream.
	Abort()
}

// End says what follows a command.
type End int

const (
	// Continue serving on this activation.
	Continue End = iota
	// Restart: the activation is over (its stream closed); the next
	// command activates the entity again from the store (ES-5).
	Restart
	// Terminate: the activation failed; commands already waiting fail with
	// SerialConfig.Terminated, later ones activate the entity again.
	Terminate
	// Reload: the stored state moved under the activation (another writer,
	// or a store outage left a write's outcome unknown); the stream is cut
	// and the next command, including those already waiting, activates the
	// entity again from the store. Nothing waiting was sent, so nothing is
	// lost by serving it on the new activation.
	Reload
)

// Activate opens a session for an entity. ctx is cancelled when shutdown
// runs out of time; streams should derive from it.
type Activate func(ctx context.Context, svc *discovery.Service, entityID string) (Session, error)

// SerialConfig configures a SerialRegistry.
type SerialConfig struct {
	Activate Activate
	// Terminated is the error waiting commands get when an activation fails.
	Terminated error
	// PassivationTimeout is the default idle time; a service's own wins.
	PassivationTimeout time.Duration
	// RelayTimeout bounds how long a caller waits for the entity's turn.
	RelayTimeout time.Duration
	// MailboxSize bounds how many callers may wait for one entity.
	MailboxSize int
	// Generation, if set, changes whenever the connection to the user
	// function has been re-established; sessions opened under an older
	// generation are abandoned before use, since their stream died with
	// the old connection.
	Generation func() uint64
}

// SerialRegistry owns the active serial entities of one entity type. It
// implements route.Handler.
type SerialRegistry struct {
	cfg  SerialConfig
	seed maphash.Seed

	shards [shardCount]serialShard

	mu       sync.Mutex // guards stopping
	stopping bool
	kill     context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // passivations and shutdown closes in progress
}

type serialShard struct {
	mu     sync.Mutex
	actors map[Key]*actor
}

var _ route.Handler = (*SerialRegistry)(nil)

// NewSerialRegistry returns a registry; Shutdown ends it.
func NewSerialRegistry(cfg SerialConfig) *SerialRegistry {
	kill, cancel := context.WithCancel(context.Background())
	r := &SerialRegistry{cfg: cfg, seed: maphash.MakeSeed(), kill: kill, cancel: cancel}
	for i := range r.shards {
		r.shards[i].actors = make(map[Key]*actor)
	}
	return r
}

// actor is one active serial entity.
type actor struct {
	r     *SerialRegistry
	shard *serialShard
	key   Key
	svc   *discovery.Service
	turn  chan struct{} // capacity 1: holding it is this entity's turn

	// guarded by shard.mu
	waiting int
	removed bool
	epoch   uint64

	// guarded by turn
	session Session
	gen     uint64
	idle    *time.Timer
}

func (r *SerialRegistry) shardOf(k Key) *serialShard {
	var h maphash.Hash
	h.SetSeed(r.seed)
	h.WriteString(k.Service)
	h.WriteByte(0)
	h.WriteString(k.ID)
	return &r.shards[h.Sum64()%shardCount]
}

func (r *SerialRegistry) isStopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopping
}

// Active returns the number of active entities.
func (r *SerialRegistry) Active() int {
	n := 0
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		n += len(s.actors)
		s.mu.Unlock()
	}
	return n
}

// Waiting returns how many callers wait for the turn of entity k (0 if it
// is not active). For tests.
func (r *SerialRegistry) Waiting(k Key) int {
	s := r.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.actors[k]; a != nil {
		return a.waiting
	}
	return 0
}

func (r *SerialRegistry) passivation(svc *discovery.Service) time.Duration {
	if svc.Passivation > 0 {
		return svc.Passivation
	}
	return r.cfg.PassivationTimeout
}

// join finds or creates the entity of call and counts the caller as
// waiting for its turn; it returns the epoch the caller waits in.
func (r *SerialRegistry) join(call route.Call) (*actor, uint64, error) {
	if r.isStopping() {
		return nil, 0, status.Error(codes.Unavailable, "the proxy is shutting down")
	}
	svc := call.Method.Service
	k := Key{Service: svc.Name, ID: call.EntityID}
	s := r.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.actors[k]
	if a == nil {
		a = &actor{r: r, shard: s, key: k, svc: svc, turn: make(chan struct{}, 1)}
		a.idle = time.AfterFunc(r.passivation(svc), a.passivate)
		s.actors[k] = a
	}
	if a.waiting >= r.cfg.MailboxSize {
		return nil, 0, status.Errorf(codes.ResourceExhausted, "entity %s of %s has %d commands queued; try again later",
			k.ID, k.Service, a.waiting)
	}
	a.waiting++
	return a, a.epoch, nil
}

// Unary waits for the entity's turn (at most the relay timeout), then runs
// the call on the caller's goroutine.
func (r *SerialRegistry) Unary(ctx context.Context, call route.Call) (route.Outcome, error) {
	timer := time.NewTimer(r.cfg.RelayTimeout)
	defer timer.Stop()
	for {
		a, epoch, err := r.join(call)
		if err != nil {
			return route.Outcome{}, err
		}
		select {
		case a.turn <- struct{}{}:
		case <-ctx.Done():
			a.leave()
			return route.Outcome{}, status.FromContextError(ctx.Err()).Err()
		case <-timer.C:
			a.leave()
			return route.Outcome{}, status.Errorf(codes.Internal, "no reply from entity %s of %s within the relay timeout (%s)",
				call.EntityID, call.Method.Service.Name, r.cfg.RelayTimeout)
		}
		a.shard.mu.Lock()
		a.waiting--
		removed, terminated := a.removed, a.epoch != epoch
		a.shard.mu.Unlock()
		if removed {
			// Passivated between lookup and turn: use its successor.
			<-a.turn
			continue
		}
		out, err := a.run(ctx, call, terminated)
		<-a.turn
		return out, err
	}
}

// leave undoes join for a caller that gave up waiting.
func (a *actor) leave() {
	a.shard.mu.Lock()
	a.waiting--
	a.shard.mu.Unlock()
}

// run serves one command; the caller holds the turn.
func (a *actor) run(ctx context.Context, call route.Call, terminated bool) (route.Outcome, error) {
	r := a.r
	if terminated {
		return route.Outcome{}, r.cfg.Terminated
	}
	if err := ctx.Err(); err != nil {
		// The caller left while waiting: skip the command rather than
		// change state nobody will hear about.
		return route.Outcome{}, status.FromContextError(err).Err()
	}
	gen := uint64(0)
	if r.cfg.Generation != nil {
		gen = r.cfg.Generation()
	}
	if a.session != nil && a.gen != gen {
		a.session.Abort()
		a.session = nil
	}
	if a.session == nil {
		sess, err := r.cfg.Activate(r.kill, a.svc, a.key.ID)
		if err != nil {
			a.stopIfUnused()
			return route.Outcome{}, err
		}
		a.session, a.gen = sess, gen
	}
	out, err, end := a.session.Handle(ctx, call)
	switch end {
	case Restart:
		a.session = nil
	case Reload:
		a.session.Abort()
		a.session = nil
	case Terminate:
		a.session.Abort()
		a.session = nil
		a.shard.mu.Lock()
		a.epoch++
		a.shard.mu.Unlock()
		a.stopIfUnused()
	}
	a.idle.Reset(r.passivation(a.svc))
	return out, err
}

// stopIfUnused removes an entity without a session from the registry when
// nobody waits for it, so a failed entity does not linger until its idle
// timer fires. The caller holds the turn.
func (a *actor) stopIfUnused() {
	a.shard.mu.Lock()
	defer a.shard.mu.Unlock()
	if a.waiting > 0 || a.removed {
		return
	}
	a.removed = true
	a.idle.Stop()
	if a.shard.actors[a.key] == a {
		delete(a.shard.actors, a.key)
	}
}

// passivate runs on the idle timer's goroutine: it stops the entity if
// nobody holds or waits for its turn (otherwise the next command re-arms
// the timer).
func (a *actor) passivate() {
	select {
	case a.turn <- struct{}{}:
	default:
		return
	}
	defer func() { <-a.turn }()
	a.shard.mu.Lock()
	if a.waiting > 0 || a.removed {
		a.shard.mu.Unlock()
		return
	}
	a.removed = true
	if a.shard.actors[a.key] == a {
		delete(a.shard.actors, a.key)
	}
	a.shard.mu.Unlock()
	if a.session != nil {
		a.session.Close()
		a.session = nil
	}
}

// Shutdown refuses new commands, lets every entity finish the commands
// already waiting, and passivates them all. When ctx ends first, streams
// are cut. It returns when every entity has stopped.
func (r *SerialRegistry) Shutdown(ctx context.Context) {
	r.mu.Lock()
	r.stopping = true
	r.mu.Unlock()
	var actors []*actor
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for _, a := range s.actors {
			actors = append(actors, a)
		}
		s.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, a := range actors {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a.idle.Stop()
				a.turn <- struct{}{} // after the commands queued before it
				a.shard.mu.Lock()
				a.removed = true
				if a.shard.actors[a.key] == a {
					delete(a.shard.actors, a.key)
				}
				a.shard.mu.Unlock()
				if a.session != nil {
					a.session.Close()
					a.session = nil
				}
				<-a.turn
			}()
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		r.cancel()
		<-done
	}
	r.cancel()
}
