package eventsourced

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/store"
)

// Config is what a Manager needs. Every field is required unless noted.
type Config struct {
	Journal   store.Journal
	Snapshots store.SnapshotStore
	// Client opens entity streams to the user function.
	Client protocol.EventSourcedClient
	// Reporter receives protocol violations of the function; optional.
	Reporter route.Reporter
	// PassivationTimeout is the idle time after which an entity stops, unless
	// its service sets its own.
	PassivationTimeout time.Duration
	// RelayTimeout bounds how long a caller waits for its reply, and how long
	// an entity waits for the function to answer one command.
	RelayTimeout time.Duration
	// MailboxSize bounds the commands queued per entity.
	MailboxSize int
	// CloseTimeout bounds how long a passivating entity waits for the
	// function to end its side of the stream. Optional; default 5s.
	CloseTimeout time.Duration
	Log          *slog.Logger
}

const shardCount = 64

// Manager owns the active event-sourced entities of one proxy. It
// implements route.Handler.
type Manager struct {
	cfg  Config
	seed maphash.Seed

	shards [shardCount]shard

	// stop is closed when the manager begins to shut down: idle entities
	// passivate and new commands are refused.
	stop     chan struct{}
	stopOnce sync.Once
	// kill cancels every entity stream; used when shutdown runs out of time.
	kill       context.Context
	cancelKill context.CancelFunc
	wg         sync.WaitGroup
}

type shard struct {
	mu       sync.Mutex
	entities map[entityKey]*entity
}

type entityKey struct {
	service string
	id      string
}

var _ route.Handler = (*Manager)(nil)

// New returns a manager. Call Run to own its lifetime.
func New(cfg Config) *Manager {
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	kill, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, seed: maphash.MakeSeed(), stop: make(chan struct{}), kill: kill, cancelKill: cancel}
	for i := range m.shards {
		m.shards[i].entities = make(map[entityKey]*entity)
	}
	return m
}

// Shutdown stops the manager: new commands are refused, idle entities
// passivate, and busy ones finish their queue first. When ctx ends before
// all have stopped, their streams are cancelled. It returns when every
// entity goroutine has ended.
func (m *Manager) Shutdown(ctx context.Context) {
	m.stopOnce.Do(func() { close(m.stop) })
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.cancelKill()
		<-done
	}
	m.cancelKill()
}

// Active returns the number of active entities.
func (m *Manager) Active() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.entities)
		s.mu.Unlock()
	}
	return n
}

func (m *Manager) shardOf(k entityKey) *shard {
	var h maphash.Hash
	h.SetSeed(m.seed)
	h.WriteString(k.service)
	h.WriteString(k.id)
	return &m.shards[h.Sum64()%shardCount]
}

// Unary queues the call on its entity (activating it if needed) and waits
// for the outcome, the caller's context, or the relay timeout.
func (m *Manager) Unary(ctx context.Context, call route.Call) (route.Outcome, error) {
	cmd := &command{ctx: ctx, call: call, done: make(chan result, 1)}
	if err := m.enqueue(cmd); err != nil {
		return route.Outcome{}, err
	}
	timer := time.NewTimer(m.cfg.RelayTimeout)
	defer timer.Stop()
	select {
	case r := <-cmd.done:
		return r.out, r.err
	case <-ctx.Done():
		return route.Outcome{}, status.FromContextError(ctx.Err()).Err()
	case <-timer.C:
		return route.Outcome{}, status.Errorf(codes.Internal, "no reply from entity %s of %s within the relay timeout (%s)",
			call.EntityID, call.Method.Service.Name, m.cfg.RelayTimeout)
	}
}

func (m *Manager) enqueue(cmd *command) error {
	select {
	case <-m.stop:
		return status.Error(codes.Unavailable, "the proxy is shutting down")
	default:
	}
	svc := cmd.call.Method.Service
	k := entityKey{service: svc.Name, id: cmd.call.EntityID}
	s := m.shardOf(k)
	s.mu.Lock()
	e := s.entities[k]
	if e == nil {
		e = m.newEntity(s, k, svc)
		s.entities[k] = e
		m.wg.Add(1)
		go e.run()
	}
	if len(e.queue) >= m.cfg.MailboxSize {
		s.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "entity %s of %s has %d commands queued; try again later",
			k.id, k.service, len(e.queue))
	}
	e.queue = append(e.queue, cmd)
	s.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
	return nil
}

func (m *Manager) newEntity(s *shard, k entityKey, svc *discovery.Service) *entity {
	passivation := m.cfg.PassivationTimeout
	if svc.Passivation > 0 {
		passivation = svc.Passivation
	}
	return &entity{
		m:           m,
		shard:       s,
		key:         k,
		svc:         svc,
		pid:         fmt.Sprintf("%s|%s", svc.PersistenceID, k.id),
		passivation: passivation,
		wake:        make(chan struct{}, 1),
		log:         m.cfg.Log.With("service", svc.Name, "entity", k.id),
	}
}

// command is one queued call and the channel its outcome goes to.
type command struct {
	ctx  context.Context
	call route.Call
	done chan result // buffered: the entity never blocks on a caller
}

type result struct {
	out route.Outcome
	err error
}

func (c *command) finish(out route.Outcome, err error) {
	c.done <- result{out: out, err: err}
}
