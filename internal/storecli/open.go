package storecli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"

	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// reader is what the subcommands read from.
type reader interface {
	store.Journal
	store.SnapshotStore
	store.ValueStore
}

// openedStore is an open store and how to release it.
type openedStore struct {
	reader
	close func()
}

// openStore opens the durable store named by spec for reading. Its errors
// say what to do: a missing Pebble directory is not created (that would
// only ever show an empty store), and a directory a running proxy holds is
// explained rather than reported as a lock error.
func openStore(ctx context.Context, spec config.StoreSpec) (openedStore, error) {
	switch spec.Kind {
	case config.StorePebble:
		info, err := os.Stat(spec.Dir)
		if errors.Is(err, fs.ErrNotExist) {
			return openedStore{}, fmt.Errorf("--store %s: the directory does not exist (cloudstate dev keeps its data in %s, the proxy where --store pebble:<dir> says)",
				spec.Redacted(), DefaultStore)
		}
		if err != nil {
			return openedStore{}, fmt.Errorf("--store %s: %w", spec.Redacted(), err)
		}
		if !info.IsDir() {
			return openedStore{}, fmt.Errorf("--store %s: not a directory", spec.Redacted())
		}
		// Pebble's own log lines (WAL recovery and such) are noise here.
		quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
		p, err := pebble.Open(spec.Dir, pebble.WithLogger(quiet), pebble.WithCacheSize(8<<20))
		if errors.Is(err, pebble.ErrLocked) {
			return openedStore{}, fmt.Errorf("%w\n"+
				"A Pebble directory can be open in one process only. Stop the proxy using it, then run this again,\n"+
				"or read a copy while it runs:\n"+
				"  cp -r %s /tmp/cloudstate-copy && cloudstate store ... --store pebble:/tmp/cloudstate-copy",
				err, spec.Dir)
		}
		if err != nil {
			return openedStore{}, fmt.Errorf("--store %s: %w", spec.Redacted(), err)
		}
		return openedStore{reader: p, close: func() { _ = p.Close() }}, nil
	case config.StorePostgres:
		// The store's close log (its commit counters) is noise here too.
		quiet := slog.New(slog.DiscardHandler)
		p, err := postgres.Open(ctx, spec.DSN, postgres.WithLogger(quiet))
		if errors.Is(err, postgres.ErrUnavailable) {
			return openedStore{}, fmt.Errorf("--store %s: the database cannot be reached: %w", spec.Redacted(), err)
		}
		if err != nil {
			return openedStore{}, fmt.Errorf("--store %s: %w", spec.Redacted(), err)
		}
		return openedStore{reader: p, close: p.Close}, nil
	}
	return openedStore{}, fmt.Errorf("--store %s: cannot be read by cloudstate store", spec.Redacted())
}
