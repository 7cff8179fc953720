package eventsourced

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/entity"
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

// Manager runs the event-sourced entities of one proxy. It implements
// route.Handler through its registry.
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

// run is the loop of one entity: activate, serve, and activate again after
// a restart.
func (m *Manager) run(mb *entity.Mailbox) {
	svc := mb.Service
	e := &entityLoop{
		m:           m,
		mb:          mb,
		pid:         fmt.Sprintf("%s|%s", svc.PersistenceID, mb.Key.ID),
		passivation: m.cfg.PassivationTimeout,
		log:         m.cfg.Log.With("service", svc.Name, "entity", mb.Key.ID),
	}
	if svc.Passivation > 0 {
		e.passivation = svc.Passivation
	}
	for {
		a, err := e.activate()
		if err != nil {
			e.log.Warn("entity activation failed", "err", err)
			mb.FailQueued(err)
			return
		}
		if a.serve() == stopped {
			return
		}
		e.log.Debug("entity restarting from the store")
	}
}

// report sends a protocol violation to the user function.
func (m *Manager) report(ctx context.Context, msg string) {
	if m.cfg.Reporter != nil {
		m.cfg.Reporter.ReportError(context.WithoutCancel(ctx), msg)
	}
}
