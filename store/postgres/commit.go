package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cloudstate-go/cloudstate/store"
)

// opKind orders the writes of a batch by table; with the key it fixes the
// order in which every transaction takes its row locks (see doc.go).
type opKind uint8

const (
	kindAppend opKind = iota
	kindSnapshot
	kindValue
)

// States of an op: a caller whose context ends while its op is still queued
// abandons it, and the committer skips it; once taken, it will be sent.
const (
	opQueued int32 = iota
	opTaken
	opAbandoned
)

// op is one write waiting for the committer: an append (app), which the
// committer puts into one statement with the other appends of its batch, or
// a single SQL statement (sql, args). Either way its row count tells the
// caller whether it applied (an append: 1 if written, 0 if fenced off). The
// statement must never fail for a reason that belongs to this write alone (a
// conflict shows as zero rows), so that it cannot abort the other writes of
// its batch.
type op struct {
	kind  opKind
	key   []byte
	size  int // payload bytes, for the batch byte budget
	app   *appendWrite
	sql   string
	args  []any
	state atomic.Int32
	done  chan opResult // buffered: the committer never blocks on a caller
	rows  int64         // set by send
}

type opResult struct {
	rows int64
	err  error
}

// stats are the committer's counters, read by Store.Stats.
type stats struct {
	commits, writes, maxBatch, fallbacks, failed atomic.Int64
	commitNanos                                  atomic.Int64 // time of the successful commits
	taken                                        atomic.Int64 // ops claimed by a committer, for tests
}

func (st *stats) committed(n int, took time.Duration) {
	st.commits.Add(1)
	st.writes.Add(int64(n))
	st.commitNanos.Add(int64(took))
	for {
		m := st.maxBatch.Load()
		if int64(n) <= m || st.maxBatch.CompareAndSwap(m, int64(n)) {
			return
		}
	}
}

// statement runs one SQL statement through the group committer and returns
// its row count; see write.
func (s *Store) statement(ctx context.Context, kind opKind, key []byte, size int, sql string, args ...any) (int64, error) {
	return s.write(ctx, &op{kind: kind, key: key, size: size, sql: sql, args: args})
}

// write runs the write described by w (kind, key, size, and app or sql and
// args) through the group committer and returns its row count. Attempts that
// did not reach the database are repeated with backoff (see retry), each
// with an op of its own; any other failure is returned.
func (s *Store) write(ctx context.Context, w *op) (int64, error) {
	var rows int64
	err := s.retry(ctx, true, func() error {
		var err error
		o := &op{kind: w.kind, key: w.key, size: w.size, app: w.app, sql: w.sql, args: w.args, done: make(chan opResult, 1)}
		rows, err = s.submit(ctx, o)
		return err
	})
	return rows, err
}

// submit queues o and waits for its outcome.
func (s *Store) submit(ctx context.Context, o *op) (int64, error) {
	select {
	case <-s.closing:
		return 0, ErrClosed
	default:
	}
	select {
	case s.queue <- o:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.closing:
		return 0, ErrClosed
	}
	select {
	case r := <-o.done:
		return r.rows, r.err
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			return 0, ctx.Err()
		}
		// The committer has taken o and is sending it: wait for the
		// outcome (at most one query timeout) rather than leave it
		// unknown, and so that nothing reads the caller's payload after
		// the call returned.
		r := <-o.done
		return r.rows, r.err
	case <-s.stopped:
		// A committer that took o answered before exiting.
		select {
		case r := <-o.done:
			return r.rows, r.err
		default:
			return 0, ErrClosed
		}
	}
}

// maxBatchBytes stops gathering a batch once its payloads reach this size,
// so a burst of large values does not become one huge transaction. The
// first write of a batch is always taken, whatever its size.
const maxBatchBytes = 4 << 20

// commitLoop is one committer: it takes the first queued write, gathers
// whatever else is queued at that moment (without waiting for more, up to
// WithMaxBatch writes and maxBatchBytes), and commits them together. While
// it waits for the database, new writes queue up and form the next batch,
// so batches grow with the load and a lone write pays no added latency.
func (s *Store) commitLoop() {
	batch := make([]*op, 0, s.cfg.maxBatch)
	for {
		select {
		case <-s.closing:
			s.failQueued()
			return
		case o := <-s.queue:
			batch = batch[:0]
			size := 0
			if o.state.CompareAndSwap(opQueued, opTaken) {
				batch = append(batch, o)
				size += o.size
				s.stats.taken.Add(1)
			}
		gather:
			for len(batch) < s.cfg.maxBatch && size < maxBatchBytes {
				select {
				case o := <-s.queue:
					if o.state.CompareAndSwap(opQueued, opTaken) {
						batch = append(batch, o)
						size += o.size
						s.stats.taken.Add(1)
					}
				default:
					break gather
				}
			}
			if len(batch) > 0 {
				s.commit(batch)
			}
		}
	}
}

// failQueued answers every write still queued at Close with ErrClosed.
func (s *Store) failQueued() {
	for {
		select {
		case o := <-s.queue:
			if o.state.CompareAndSwap(opQueued, opTaken) {
				o.done <- opResult{err: ErrClosed}
			}
		default:
			return
		}
	}
}

// commit writes batch in one transaction and answers every op in it.
func (s *Store) commit(batch []*op) {
	// One lock order for every transaction of every proxy: concurrent
	// batches that touch the same rows wait for each other but never
	// deadlock.
	sort.SliceStable(batch, func(i, j int) bool {
		if batch[i].kind != batch[j].kind {
			return batch[i].kind < batch[j].kind
		}
		return bytes.Compare(batch[i].key, batch[j].key) < 0
	})
	start := time.Now()
	err := s.send(batch)
	var notSent *notSentError
	switch {
	case err == nil:
		s.stats.committed(len(batch), time.Since(start))
		for _, o := range batch {
			o.done <- opResult{rows: o.rows}
		}
	case errors.As(err, &notSent):
		s.stats.failed.Add(1)
		for _, o := range batch {
			o.done <- opResult{err: err}
		}
	case isConnError(err):
		// Sent, but the answer was lost: the transaction may or may not
		// have committed. Nothing is half-written either way.
		s.stats.failed.Add(1)
		err = unavailable(fmt.Errorf("commit of %d writes, outcome unknown: %w", len(batch), err))
		for _, o := range batch {
			o.done <- opResult{err: err}
		}
	case len(batch) == 1:
		batch[0].done <- opResult{err: statementError(err)}
	default:
		// The server rejected a statement, which rolled back the whole
		// batch. Our statements are written not to fail on conflicts, so
		// this is one bad write (or a deadlock with a writer outside this
		// store); isolate it by committing each write on its own.
		s.stats.fallbacks.Add(1)
		for _, o := range batch {
			s.commit([]*op{o})
		}
	}
}

// statementOf is one statement of a batch and the ops it answers: the
// appends of an appendsSQL statement, or the one op with its own statement.
type statementOf struct {
	ops     []*op
	appends bool
}

// plan turns a sorted batch into statements. The appends go into appendsSQL
// statements holding at most one append per persistence id, because a
// statement does not see its own inserts: the first append of each id goes
// into the first statement, a second append of the same id (two writers of
// one entity in one batch) into the second, which sees the first's rows, and
// so on. Every other op is a statement of its own, in batch order.
func plan(batch []*op) []statementOf {
	var rounds [][]*op
	seen := make(map[string]int, len(batch))
	for _, o := range batch {
		if o.app == nil {
			continue
		}
		r := seen[string(o.key)]
		seen[string(o.key)] = r + 1
		if r == len(rounds) {
			rounds = append(rounds, nil)
		}
		rounds[r] = append(rounds[r], o)
	}
	stmts := make([]statementOf, 0, len(rounds)+len(batch))
	for _, ops := range rounds {
		stmts = append(stmts, statementOf{ops: ops, appends: true})
	}
	for _, o := range batch {
		if o.app == nil {
			stmts = append(stmts, statementOf{ops: []*op{o}})
		}
	}
	return stmts
}

// appendsArgs returns the arguments of appendsSQL for ops.
func appendsArgs(ops []*op) []any {
	n := len(ops)
	pids, tags, seqs, urls, values := make([][]byte, n), make([][]byte, n), make([]int64, n), make([]string, n), make([][]byte, n)
	var restPids, restTags, restValues [][]byte
	var restSeqs []int64
	var restURLs []string
	var snapPids, snapValues [][]byte
	var snapSeqs []int64
	var snapURLs []string
	for i, o := range ops {
		a := o.app
		pids[i], tags[i], seqs[i], urls[i], values[i] = a.pid, a.tag, a.first, a.typeURLs[0], a.values[0]
		for j := 1; j < len(a.values); j++ {
			restPids = append(restPids, a.pid)
			restTags = append(restTags, a.tag)
			restSeqs = append(restSeqs, a.first+int64(j))
			restURLs = append(restURLs, a.typeURLs[j])
			restValues = append(restValues, a.values[j])
		}
		if a.snap != nil {
			snapPids = append(snapPids, a.pid)
			snapSeqs = append(snapSeqs, a.snap.seq)
			snapURLs = append(snapURLs, a.snap.typeURL)
			snapValues = append(snapValues, a.snap.value)
		}
	}
	// pgx sends a nil slice as NULL, which unnest reads as no rows; the
	// arguments are all arrays all the same, for clarity.
	return []any{pids, tags, seqs, urls, values,
		nonNilArray(restPids), nonNilArray(restTags), nonNilArray(restSeqs), nonNilArray(restURLs), nonNilArray(restValues),
		nonNilArray(snapPids), nonNilArray(snapSeqs), nonNilArray(snapURLs), nonNilArray(snapValues)}
}

// nonNilArray returns s, or an empty slice for nil, so that pgx sends an
// empty array rather than NULL.
func nonNilArray[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// send runs batch as one pipelined round trip and sets each op's row count.
// pgx ends the pipeline with a single Sync, so the statements form one
// implicit transaction that commits at the Sync, and Close only returns nil
// once that commit is durable.
func (s *Store) send(batch []*op) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.queryTimeout)
	defer cancel()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return &notSentError{fmt.Errorf("acquire connection: %w", err)}
	}
	defer conn.Release()

	stmts := plan(batch)
	b := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(stmts))}
	for _, st := range stmts {
		if st.appends {
			b.Queue(appendsSQL, appendsArgs(st.ops)...)
		} else {
			b.Queue(st.ops[0].sql, st.ops[0].args...)
		}
	}
	br := conn.SendBatch(ctx, b)
	for i, st := range stmts {
		var err error
		if st.appends {
			err = readAppends(br, st.ops)
		} else {
			var tag pgconn.CommandTag
			tag, err = br.Exec()
			st.ops[0].rows = tag.RowsAffected()
		}
		if err != nil {
			_ = br.Close() // the first error is the one to report
			if i == 0 && terminatedBeforeWork(err) {
				return &notSentError{err}
			}
			return sendError(err)
		}
	}
	if err := br.Close(); err != nil {
		return sendError(err)
	}
	return nil
}

// readAppends reads the result of an appendsSQL statement, the persistence
// ids whose append was written, into the row counts of ops.
func readAppends(br pgx.BatchResults, ops []*op) error {
	rows, err := br.Query()
	if err != nil {
		return err
	}
	written := make(map[string]bool, len(ops))
	var pid []byte
	for rows.Next() {
		if err := rows.Scan(&pid); err != nil {
			rows.Close()
			return err
		}
		written[string(pid)] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, o := range ops {
		o.rows = 0
		if written[string(o.key)] {
			o.rows = 1
		}
	}
	return nil
}

// terminatedBeforeWork reports whether err, read in place of the first
// statement's result, is the server's notice that it terminated the session
// (admin_shutdown: pg_terminate_backend, or a fast shutdown). The server
// sends results in order and commits only at the Sync after the last
// statement, so a session that ended before completing the first statement
// committed nothing. This is the usual way a pooled connection dies when the
// database restarts or fails over, and it makes the write safe to retry
// instead of leaving its outcome unknown. Were the reasoning ever wrong, the
// retried write would be fenced off as a conflict; it could not be applied
// twice.
func terminatedBeforeWork(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "57P01"
}

// sendError marks errors that happened before anything was sent.
func sendError(err error) error {
	if pgconn.SafeToRetry(err) {
		return &notSentError{err}
	}
	return err
}

// statementError maps the error of a write committed alone. A unique
// violation means the primary key fenced the write off: another writer
// stored that sequence number or key first.
func statementError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}
