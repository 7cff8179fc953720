package proxy

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/memory"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// stores is the storage the proxy's entities use, opened from --store.
type stores struct {
	journal   store.Journal
	snapshots store.SnapshotStore
	values    store.ValueStore
	close     func()
}

// durableStore is what every store implementation provides.
type durableStore interface {
	store.Journal
	store.SnapshotStore
	store.ValueStore
}

// openStores opens the store named by spec (already validated by config).
func openStores(ctx context.Context, spec string, log *slog.Logger) (stores, error) {
	s, err := config.ParseStore(spec)
	if err != nil {
		return stores{}, fmt.Errorf("--store: %w", err)
	}
	var st durableStore
	closeFn := func() {}
	switch s.Kind {
	case config.StoreMemory:
		st = memory.New()
	case config.StorePebble:
		p, err := pebble.Open(s.Dir, pebble.WithLogger(log))
		if err != nil {
			return stores{}, fmt.Errorf("--store %s: %w", s.Redacted(), err)
		}
		st = p
		closeFn = func() {
			if err := p.Close(); err != nil {
				log.Error("closing the pebble store failed", "err", err)
			}
		}
	case config.StorePostgres:
		p, err := postgres.Open(ctx, s.DSN, postgres.WithLogger(log))
		if err != nil {
			return stores{}, fmt.Errorf("--store %s: %w", s.Redacted(), err)
		}
		st = p
		closeFn = p.Close
	}
	log.Info("store opened", "store", s.Redacted())
	return stores{journal: st, snapshots: st, values: st, close: closeFn}, nil
}
