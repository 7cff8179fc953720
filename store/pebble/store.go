package pebble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

var (
	_ store.Journal         = (*Store)(nil)
	_ store.SnapshotStore   = (*Store)(nil)
	_ store.SnapshotJournal = (*Store)(nil)
	_ store.ValueStore      = (*Store)(nil)
)

var (
	// ErrClosed is returned by calls made after Close began (nothing of
	// theirs was written), and by replays that Close cut short.
	ErrClosed = errors.New("pebble store: closed")

	// ErrLocked is returned by Open when another Store, in this process or
	// another, has the directory open.
	ErrLocked = errors.New("pebble store: directory in use")

	// errNoPayload is returned for an event, snapshot or value without a
	// payload. The protocol never produces one, so it is a bug in the
	// caller, not a conflict.
	errNoPayload = errors.New("pebble store: missing payload")
)

// Default tuning; see the options that change them.
const (
	defaultCacheSize = 64 << 20
	// defaultFences is how many keys' fencing state is kept in memory: a
	// few megabytes, and more than the entities a proxy usually has
	// active. A key whose state was dropped costs one read at its next
	// write.
	defaultFences = 1 << 15
)

// Option configures Open.
type Option func(*config)

type config struct {
	logger    *slog.Logger
	cacheSize int64
	fences    int
}

// WithLogger sends Pebble's log messages to logger (default slog.Default()).
func WithLogger(logger *slog.Logger) Option {
	return func(c *config) { c.logger = logger }
}

// WithCacheSize sets the size in bytes of Pebble's block cache (default
// 64 MiB).
func WithCacheSize(bytes int64) Option {
	return func(c *config) { c.cacheSize = bytes }
}

// Store is a durable store of journals, snapshots and values in a Pebble
// database in one directory. It implements store.Journal,
// store.SnapshotStore, store.SnapshotJournal and store.ValueStore, and all
// its methods are safe for concurrent use. Each write is checked against its
// key's fence and committed by its caller as one synced Pebble batch;
// concurrent writes share fsyncs (doc.go). Close releases it.
type Store struct {
	dir  string
	db   *pebbledb.DB
	lock *dirLock
	log  *slog.Logger

	fences fences
	// closing is closed by Close to stop long replays.
	closing chan struct{}

	// mu guards closed and the Add side of ops, so that Close, after
	// setting closed, can wait for the reads and writes already running.
	mu     sync.RWMutex
	closed bool
	ops    sync.WaitGroup

	closeOnce sync.Once
	closeErr  error

	stats struct {
		writes, conflicts atomic.Int64
		// syncs is shared with the filesystem wrapper that counts them.
		syncs *walSyncs
	}
}

// Open opens the store in dir, creating the directory and an empty store if
// needed. Only one Store may have a directory open at a time: if another
// one (in this or another process) has it, Open fails with an error wrapping
// ErrLocked. A directory this process may not read and write gives an error
// wrapping fs.ErrPermission.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := config{logger: slog.Default(), cacheSize: defaultCacheSize, fences: defaultFences}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.fences < 1 {
		return nil, fmt.Errorf("pebble store: open %s: fence cache of %d keys, want at least 1", dir, cfg.fences)
	}

	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("pebble store: open %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, fmt.Errorf("pebble store: open: %w", err)
	}

	cache := pebbledb.NewCache(cfg.cacheSize)
	// Open takes its own reference to the cache; ours goes when we return.
	defer cache.Unref()
	syncs := new(walSyncs)
	db, err := pebbledb.Open(dir, &pebbledb.Options{
		Cache:              cache,
		FormatMajorVersion: pebbledb.FormatNewest,
		FS:                 walSyncCounter{FS: vfs.Default, syncs: syncs},
		Logger:             pebbleLogger{cfg.logger.With("component", "pebble", "dir", dir)},
	})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("pebble store: open %s: %w", dir, err), lock.release())
	}
	if err := checkFormat(db); err != nil {
		return nil, errors.Join(fmt.Errorf("pebble store: open %s: %w", dir, err), db.Close(), lock.release())
	}

	s := &Store{
		dir:     dir,
		db:      db,
		lock:    lock,
		log:     cfg.logger,
		fences:  fences{m: make(map[string]*fence), max: cfg.fences},
		closing: make(chan struct{}),
	}
	s.stats.syncs = syncs
	return s, nil
}

// checkFormat writes the format marker into a new store, or checks the one
// found.
func checkFormat(db *pebbledb.DB) error {
	v, closer, err := db.Get(formatKey)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		it, err := db.NewIter(nil)
		if err != nil {
			return err
		}
		empty := !it.First()
		if err := errors.Join(it.Error(), it.Close()); err != nil {
			return err
		}
		if !empty {
			return fmt.Errorf("directory holds a Pebble database without a cloudstate format marker")
		}
		return db.Set(formatKey, []byte(formatVersion), pebbledb.Sync)
	case err != nil:
		return err
	}
	defer closer.Close()
	if string(v) != formatVersion {
		return fmt.Errorf("store format %q, this version reads only %q", v, formatVersion)
	}
	return nil
}

// Close waits for the writes running (each ends durable or failed, as it
// would have without Close) and the reads running (a replay stops at its
// next event with ErrClosed), and closes the database. Calls made after it
// fail with ErrClosed. It logs the write statistics at info level. It is safe
// to call more than once; later calls return the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.closing)
		s.ops.Wait()
		st := s.Stats()
		s.log.Info("pebble store closed", "dir", s.dir, "writes", st.Writes, "wal_syncs", st.Syncs,
			"writes_per_sync", fmt.Sprintf("%.1f", st.AvgBatch()), "avg_wal_sync", st.AvgSync().Round(time.Microsecond),
			"conflicts", st.Conflicts)
		s.closeErr = errors.Join(s.db.Close(), s.lock.release())
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("pebble store: close %s: %w", s.dir, s.closeErr)
		}
	})
	return s.closeErr
}

// Stats counts the store's writes since Open.
type Stats struct {
	// Writes is how many synced batches the store committed: appends
	// (with their snapshot, if any), snapshot saves, puts and deletes.
	// Refused and ignored writes are not counted.
	Writes int64
	// Syncs is how many times Pebble synced its write-ahead log. Each
	// committed write waits for one; concurrent writes share them.
	Syncs int64
	// SyncTime is the time those syncs took, from the call to its return:
	// the disk's latency as the store's writers saw it, including the wait
	// for a CPU after the disk answered when the machine is busy.
	SyncTime time.Duration
	// Conflicts is how many writes were refused with store.ErrConflict.
	Conflicts int64
}

// AvgSync is the average time of one WAL sync.
func (st Stats) AvgSync() time.Duration {
	if st.Syncs == 0 {
		return 0
	}
	return st.SyncTime / time.Duration(st.Syncs)
}

// AvgBatch is the average number of writes per WAL sync: how much group
// commit gathered.
func (st Stats) AvgBatch() float64 {
	if st.Syncs == 0 {
		return 0
	}
	return float64(st.Writes) / float64(st.Syncs)
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Writes:    s.stats.writes.Load(),
		Syncs:     s.stats.syncs.n.Load(),
		SyncTime:  time.Duration(s.stats.syncs.nanos.Load()),
		Conflicts: s.stats.conflicts.Load(),
	}
}

// begin registers a read or write so that Close waits for it; end must
// follow.
func (s *Store) begin() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

func (s *Store) end() { s.ops.Done() }

// Append implements store.Journal.
func (s *Store) Append(ctx context.Context, pid string, events []store.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	if len(events) == 0 {
		return nil
	}
	if err := validateEvents(events); err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	if err := s.append(ctx, pid, events, nil); err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	return nil
}

// AppendWithSnapshot implements store.SnapshotJournal: the events and the
// snapshot go into one synced batch.
func (s *Store) AppendWithSnapshot(ctx context.Context, pid string, events []store.Event, snap store.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s with snapshot: %w", pid, err)
	}
	if len(events) == 0 {
		return s.SaveSnapshot(ctx, pid, snap)
	}
	if err := validateEvents(events); err != nil {
		return fmt.Errorf("append %s with snapshot: %w", pid, err)
	}
	if snap.Payload == nil {
		if err := s.append(ctx, pid, events, nil); err != nil {
			return fmt.Errorf("append %s: %w", pid, err)
		}
		return fmt.Errorf("append %s: snapshot at seq %d: %w: %w", pid, snap.Seq, store.ErrSnapshotNotSaved, errNoPayload)
	}
	if err := s.append(ctx, pid, events, &snap); err != nil {
		return fmt.Errorf("append %s with snapshot at seq %d: %w", pid, snap.Seq, err)
	}
	return nil
}

// Replay implements store.Journal. It reads from one consistent view of the
// database taken when it starts: events appended during the replay are not
// delivered. The callback may call the Store.
func (s *Store) Replay(ctx context.Context, pid string, afterSeq int64, fn func(store.Event) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replay %s: %w", pid, err)
	}
	if err := s.begin(); err != nil {
		return fmt.Errorf("replay %s: %w", pid, err)
	}
	defer s.end()

	lower, upper := eventBounds(idKey(spaceEvent, pid, 8), afterSeq)
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("replay %s: %w", pid, err)
	}
	err = s.replay(ctx, it, fn)
	if cerr := it.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("replay %s: %w", pid, cerr)
	}
	return err
}

// replay runs fn over the events under it. Errors from fn are returned as
// they are; the caller wraps its own.
func (s *Store) replay(ctx context.Context, it *pebbledb.Iterator, fn func(store.Event) error) error {
	for valid := it.First(); valid; valid = it.Next() {
		seq, err := seqOfEventKey(it.Key())
		if err != nil {
			return err
		}
		// Checked per event so that a cancel, or Close, from inside fn
		// stops the replay before the next event.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("at seq %d: %w", seq, err)
		}
		select {
		case <-s.closing:
			return fmt.Errorf("at seq %d: %w", seq, ErrClosed)
		default:
		}
		raw, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("read seq %d: %w", seq, err)
		}
		p, err := decodeAny(raw)
		if err != nil {
			return fmt.Errorf("decode seq %d: %w", seq, err)
		}
		if err := fn(store.Event{Seq: seq, Payload: p}); err != nil {
			return err
		}
	}
	return it.Error()
}

// HighestSeq implements store.Journal: one reverse seek to the last key of
// the entity's range.
func (s *Store) HighestSeq(ctx context.Context, pid string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	if err := s.begin(); err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	defer s.end()
	h, err := highestSeq(s.db, idKey(spaceEvent, pid, 8))
	if err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	return h, nil
}

// highestSeq returns the highest sequence number stored under the event
// prefix, 0 if none.
func highestSeq(db *pebbledb.DB, prefix []byte) (int64, error) {
	lower, upper := eventBounds(prefix, 0)
	it, err := db.NewIter(&pebbledb.IterOptions{LowerBound: lower, UpperBound: upper})
	if err != nil {
		return 0, err
	}
	var h int64
	if it.Last() {
		h, err = seqOfEventKey(it.Key())
	}
	return h, errors.Join(err, it.Error(), it.Close())
}

// SaveSnapshot implements store.SnapshotStore. Only the latest snapshot of an
// entity is kept: a save replaces it, and one with a lower Seq is ignored.
func (s *Store) SaveSnapshot(ctx context.Context, pid string, snap store.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save snapshot %s: %w", pid, err)
	}
	if snap.Payload == nil {
		return fmt.Errorf("save snapshot %s (seq %d): %w", pid, snap.Seq, errNoPayload)
	}
	if err := s.saveSnapshot(ctx, pid, snap); err != nil {
		return fmt.Errorf("save snapshot %s (seq %d): %w", pid, snap.Seq, err)
	}
	return nil
}

// LatestSnapshot implements store.SnapshotStore.
func (s *Store) LatestSnapshot(ctx context.Context, pid string) (store.Snapshot, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Snapshot{}, false, fmt.Errorf("load snapshot %s: %w", pid, err)
	}
	var snap store.Snapshot
	found, err := s.get(idKey(spaceSnapshot, pid, 0), func(rec []byte) (err error) {
		snap.Seq, snap.Payload, err = decodeSnapshot(rec)
		return err
	})
	if err != nil {
		return store.Snapshot{}, false, fmt.Errorf("load snapshot %s: %w", pid, err)
	}
	return snap, found, nil
}

// GetValue implements store.ValueStore.
func (s *Store) GetValue(ctx context.Context, key string) (store.Value, error) {
	if err := ctx.Err(); err != nil {
		return store.Value{}, fmt.Errorf("get value %s: %w", key, err)
	}
	var v store.Value
	_, err := s.get(idKey(spaceValue, key, 0), func(rec []byte) (err error) {
		v.Version, v.Payload, err = decodeValue(rec)
		return err
	})
	if err != nil {
		return store.Value{}, fmt.Errorf("get value %s: %w", key, err)
	}
	return v, nil
}

// get reads the record under k and hands it to decode, which must not keep
// it. found is false if there is none.
func (s *Store) get(k []byte, decode func([]byte) error) (found bool, err error) {
	if err := s.begin(); err != nil {
		return false, err
	}
	defer s.end()
	rec, closer, err := s.db.Get(k)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	return true, decode(rec)
}

// PutValue implements store.ValueStore.
func (s *Store) PutValue(ctx context.Context, key string, expectedVersion int64, payload *anypb.Any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put value %s: %w", key, err)
	}
	if payload == nil {
		return 0, fmt.Errorf("put value %s: %w", key, errNoPayload)
	}
	v, err := s.putValue(ctx, key, expectedVersion, payload)
	if err != nil {
		return 0, fmt.Errorf("put value %s: %w", key, err)
	}
	return v, nil
}

// DeleteValue implements store.ValueStore. It writes a tombstone holding the
// new version.
func (s *Store) DeleteValue(ctx context.Context, key string, expectedVersion int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("delete value %s: %w", key, err)
	}
	v, err := s.putValue(ctx, key, expectedVersion, nil)
	if err != nil {
		return 0, fmt.Errorf("delete value %s: %w", key, err)
	}
	return v, nil
}

// pebbleLogger passes Pebble's log messages to slog. Pebble's informational
// messages (WALs found and replayed at every open) are routine for a proxy's
// operator, so they go out at debug level.
type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		l.log.Debug(fmt.Sprintf(format, args...))
	}
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

// Fatalf is called by Pebble when it cannot go on (for example a failed WAL
// sync, after which nothing written can be trusted). Pebble expects it not
// to return.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg, "fatal", true)
	panic("pebble store: " + msg)
}
