package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cloudstate-go/cloudstate/store"
)

var (
	_ store.Journal         = (*Store)(nil)
	_ store.SnapshotStore   = (*Store)(nil)
	_ store.SnapshotJournal = (*Store)(nil)
	_ store.ValueStore      = (*Store)(nil)
)

// ErrUnavailable is wrapped by the errors of calls that could not reach the
// database: it is down, restarting, or the connection broke. For a write it
// means the outcome is unknown (the transaction may have committed just
// before the connection broke), so the caller must reload before writing
// again, exactly as after store.ErrConflict. The store itself keeps
// reconnecting: later calls succeed once the database is back.
var ErrUnavailable = fmt.Errorf("postgres: database unavailable: %w", store.ErrUnavailable)

// ErrClosed is returned by calls made after (or cut short by) Close.
var ErrClosed = errors.New("postgres: store closed")

// errInvalid is wrapped by the errors of writes the store refuses to send
// because PostgreSQL could not hold them (a type URL with a NUL byte) or the
// protocol never produces them (an event without a payload). They are bugs in
// the caller, not conflicts.
var errInvalid = errors.New("postgres: invalid write")

// Store is a PostgreSQL implementation of store.Journal, store.SnapshotStore
// and store.ValueStore. It is safe for concurrent use. Writes go through the
// group committer (see the package doc); reads go straight to the pool.
type Store struct {
	pool *pgxpool.Pool
	cfg  config

	queue   chan *op
	closing chan struct{} // closed by Close: committers finish and exit
	stopped chan struct{} // closed once every committer has exited
	wg      sync.WaitGroup
	once    sync.Once

	stats stats
}

// config is what the Options set.
type config struct {
	maxBatch     int
	committers   int
	retryTimeout time.Duration
	queryTimeout time.Duration
	replayPage   int
	poolConfig   func(*pgxpool.Config)
	logger       *slog.Logger
}

// defaultConnectTimeout bounds a dial when the DSN sets no connect_timeout.
const defaultConnectTimeout = 5 * time.Second

func defaultConfig() config {
	return config{
		maxBatch:     256,
		committers:   1,
		retryTimeout: 5 * time.Second,
		queryTimeout: 30 * time.Second,
		replayPage:   256,
		logger:       slog.Default(),
	}
}

// Option changes a setting of Open.
type Option func(*config)

// WithMaxBatch caps how many writes one commit carries (default 256). Larger
// batches amortize more round trips and fsyncs but hold their row locks
// longer.
func WithMaxBatch(n int) Option { return func(c *config) { c.maxBatch = n } }

// WithCommitters sets how many batches may be in flight at once, each on its
// own connection (default 1). One committer gives the largest batches; more
// overlap one batch's round trip and fsync with the next one's.
func WithCommitters(n int) Option { return func(c *config) { c.committers = n } }

// WithRetryTimeout sets how long a call keeps retrying, with backoff, while
// the database cannot be reached before it fails with ErrUnavailable
// (default 5s). Only attempts that are known not to have reached the
// database are retried, so a retried write is never applied twice.
func WithRetryTimeout(d time.Duration) Option { return func(c *config) { c.retryTimeout = d } }

// WithQueryTimeout bounds one attempt at the database (default 30s): a
// commit round trip, or one read query. A hung server or network then fails
// the attempt as unreachable instead of blocking callers forever.
func WithQueryTimeout(d time.Duration) Option { return func(c *config) { c.queryTimeout = d } }

// WithLogger sets where Close logs the group commit's counters (default
// slog.Default()).
func WithLogger(logger *slog.Logger) Option { return func(c *config) { c.logger = logger } }

// WithPoolConfig lets the caller adjust the pgxpool configuration parsed
// from the DSN (pool size, hooks, TLS) before the pool is created.
func WithPoolConfig(f func(*pgxpool.Config)) Option { return func(c *config) { c.poolConfig = f } }

// withReplayPage sets how many events Replay reads per query; tests make it
// small to cross page boundaries.
func withReplayPage(n int) Option { return func(c *config) { c.replayPage = n } }

// Open connects to the database at dsn (a postgres:// URL or a keyword/value
// string, as accepted by pgxpool.ParseConfig, including pool_max_conns and
// run-time parameters such as search_path or application_name), applies the
// missing schema migrations and starts the group committer. If the database
// cannot be reached, the error wraps ErrUnavailable.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxBatch < 1 || cfg.committers < 1 || cfg.replayPage < 1 || cfg.retryTimeout < 0 || cfg.queryTimeout <= 0 {
		return nil, fmt.Errorf("open postgres store: invalid options (max batch %d, committers %d, retry timeout %v, write timeout %v)",
			cfg.maxBatch, cfg.committers, cfg.retryTimeout, cfg.queryTimeout)
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		// Without connect_timeout in the DSN a dial to a black-holed
		// host would only end with the attempt's query timeout.
		pcfg.ConnConfig.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.poolConfig != nil {
		cfg.poolConfig(pcfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", classify(ctx, err))
	}
	if _, err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", classify(ctx, err))
	}
	s := &Store{
		pool:    pool,
		cfg:     cfg,
		queue:   make(chan *op, cfg.maxBatch*cfg.committers*4),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
	}
	for range cfg.committers {
		s.wg.Go(s.commitLoop)
	}
	return s, nil
}

// Close stops the committers, after the batches in flight have committed,
// fails writes still queued with ErrClosed, closes the connections and logs
// the group commit's counters (Stats) at info level. Calls made after Close
// fail with ErrClosed. Close is idempotent.
func (s *Store) Close() {
	s.once.Do(func() {
		close(s.closing)
		s.wg.Wait()
		close(s.stopped)
		s.pool.Close()
		st := s.Stats()
		s.cfg.logger.Info("postgres store closed", "commits", st.Commits, "writes", st.Writes,
			"writes_per_commit", fmt.Sprintf("%.1f", st.AvgBatch), "max_batch", st.MaxBatch,
			"avg_commit", st.AvgCommit.Round(time.Microsecond),
			"fallbacks", st.Fallbacks, "failed_commits", st.Failed)
	})
}

// Stats describes the work of the group committer since Open.
type Stats struct {
	// Commits is the number of transactions the committer committed.
	Commits int64
	// Writes is the number of writes (appends, snapshot saves, value puts
	// and deletes) those transactions carried, including writes refused by
	// a conflict.
	Writes int64
	// AvgBatch is Writes/Commits, the average number of writes per commit.
	AvgBatch float64
	// MaxBatch is the largest number of writes in one commit.
	MaxBatch int64
	// AvgCommit is the average time of one successful commit, from taking
	// a connection to the durable answer: the database's share of a
	// write's latency. While one batch is at the database the next one
	// gathers, so a write waits for up to two of these.
	AvgCommit time.Duration
	// Fallbacks counts batches that failed as a whole on one bad write and
	// were re-run one write per transaction.
	Fallbacks int64
	// Failed counts commits that failed because the database could not be
	// reached.
	Failed int64
}

// Stats returns the committer's counters.
func (s *Store) Stats() Stats {
	st := Stats{
		Commits:   s.stats.commits.Load(),
		Writes:    s.stats.writes.Load(),
		MaxBatch:  s.stats.maxBatch.Load(),
		Fallbacks: s.stats.fallbacks.Load(),
		Failed:    s.stats.failed.Load(),
	}
	if st.Commits > 0 {
		st.AvgBatch = float64(st.Writes) / float64(st.Commits)
		st.AvgCommit = time.Duration(s.stats.commitNanos.Load() / st.Commits)
	}
	return st
}

// unavailable wraps cause so that it matches both ErrUnavailable and cause.
func unavailable(cause error) error {
	return fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// classify wraps err with ErrUnavailable when it says the database could not
// be reached, leaves context errors of ctx and SQL errors alone.
func classify(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err
	}
	if isConnError(err) {
		return unavailable(err)
	}
	return err
}

// isConnError reports whether err is about the connection rather than the
// statement: the server is shutting down or not accepting connections, the
// network failed, or a connection could not be made. Such errors say nothing
// about the data, and a later attempt on a new connection may succeed.
func isConnError(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection_exception class
			return true
		case pgErr.Code == "57P01", // admin_shutdown (also pg_terminate_backend)
			pgErr.Code == "57P02", // crash_shutdown
			pgErr.Code == "57P03", // cannot_connect_now (starting up)
			pgErr.Code == "53300": // too_many_connections
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr), errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	// pgx reports a connection it has already closed after a failure as
	// "conn closed" without a typed error.
	return strings.Contains(err.Error(), "conn closed")
}

// retryable reports whether an attempt that failed with err may be repeated:
// it is about the connection, and, for writes, nothing was sent. Reads are
// idempotent, so any connection error is retryable for them.
func retryable(err error, write bool) bool {
	if write {
		var notSent *notSentError
		return errors.As(err, &notSent)
	}
	return isConnError(err)
}

// notSentError marks a write attempt that failed before anything reached the
// server, so repeating it cannot apply it twice.
type notSentError struct{ err error }

func (e *notSentError) Error() string { return e.err.Error() }
func (e *notSentError) Unwrap() error { return e.err }

// retry runs attempt until it succeeds, fails with an error that is not
// retryable, ctx ends, or the retry timeout passes; then the last connection
// error is returned wrapped with ErrUnavailable. Backoff doubles from 10ms
// to 1s between attempts.
func (s *Store) retry(ctx context.Context, write bool, attempt func() error) error {
	deadline := time.Now().Add(s.cfg.retryTimeout)
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-s.closing:
			return ErrClosed
		default:
		}
		err := attempt()
		if err == nil {
			return nil
		}
		if !retryable(err, write) {
			return classify(ctx, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		}
		wait := min(backoff, time.Until(deadline))
		if wait <= 0 {
			return unavailable(err)
		}
		backoff = min(2*backoff, time.Second)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-s.closing:
			t.Stop()
			return ErrClosed
		}
	}
}

// read runs a read query with retries (see retry), each attempt bounded by
// the query timeout.
func (s *Store) read(ctx context.Context, query func(ctx context.Context) error) error {
	return s.retry(ctx, false, func() error {
		actx, cancel := context.WithTimeout(ctx, s.cfg.queryTimeout)
		defer cancel()
		return query(actx)
	})
}

// checkTypeURL rejects type URLs PostgreSQL text cannot hold.
func checkTypeURL(typeURL string) error {
	if !utf8.ValidString(typeURL) || strings.IndexByte(typeURL, 0) >= 0 {
		return fmt.Errorf("type URL %q is not UTF-8 text without NUL: %w", typeURL, errInvalid)
	}
	return nil
}

// nonNil returns b, or an empty slice for nil: pgx sends a nil slice as
// NULL, but an empty payload is a value, not the absence of one.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
