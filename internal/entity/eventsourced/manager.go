package eventsourced

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	// RelayTimeout bounds how long a caller waits for its turn, and how
	// long the function may take to answer one command.
	RelayTimeout time.Duration
	// MailboxSize bounds the commands waiting per entity.
	MailboxSize int
	// CloseTimeout bounds how long a passivating entity waits for the
	// function to end its side of the stream. Optional; default 5s.
	CloseTimeout time.Duration
	// Generation changes when the connection to the function was
	// re-established (entity.SerialConfig.Generation). Optional.
	Generation func() uint64
	Log        *slog.Logger
}

// Manager runs the event-sourced entities of one proxy. It implements
// route.Handler through its registry.
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

// report sends a protocol violation to the user function.
func (m *Manager) report(ctx context.Context, msg string) {
	if m.cfg.Reporter != nil {
		m.cfg.Reporter.ReportError(context.WithoutCancel(ctx), msg)
	}
}
