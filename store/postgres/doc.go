// Package postgres is the PostgreSQL implementation of the store interfaces
// (store.Journal, store.SnapshotStore, store.ValueStore), shared by every
// proxy of a cluster. It uses pgx with a pgxpool connection pool.
//
// # Schema
//
// Three tables, created by the embedded migrations (migrations/*.sql):
//
//   - journal: one row per event, primary key (persistence_id,
//     sequence_number), with the payload's type_url (text) and bytes
//     (bytea), the write time, a global ordering (bigserial, unique index)
//     for future event-log consumers, and the tag (the persistence id up to
//     the first '|', the entity type's persistence id; shared/spec
//     BEHAVIOR.md STORE-1 and PROTOCOL.md §6).
//   - snapshots: the latest snapshot per persistence id, upserted.
//   - entity_values: one row per value-entity key with its version; a delete
//     leaves a tombstone row (NULL type_url and bytes) that keeps the version.
//
// The ordering is taken when a row is inserted, not when it commits, so a
// consumer reading by ordering can see a higher number before a lower one
// commits; it must re-read a window behind its offset (as Akka's JDBC
// journal consumers do) rather than trust the highest number seen. A
// (tag, ordering) index will come with the first such consumer, in a new
// migration, so that appends do not pay for it before then.
//
// Persistence ids and keys are bytea: entity ids are arbitrary strings and
// may hold bytes that PostgreSQL text cannot (NUL). The data is not binary
// compatible with the reference implementation's Akka tables (STORE-6
// allows that); the identities are the same, so a migration can map them.
//
// # Migrations
//
// Open applies the migrations it is missing in one transaction that first
// takes a transaction-scoped advisory lock keyed by the schema name, and
// records each version in cloudstate_schema_migrations. Proxies starting at
// once queue on the lock; the first migrates, the others find nothing left
// to do. A failed migration rolls back completely, and the lock goes with
// the transaction, so a crash never leaves it held.
//
// # Fencing
//
// Writers are fenced by the database, not by the proxy, so two proxies that
// briefly host the same entity cannot corrupt it:
//
//   - An append of events first..last to a persistence id inserts the first
//     event only if the highest stored sequence number is first-1 (read in
//     the same statement) and the row does not exist (ON CONFLICT DO NOTHING
//     on the primary key), and inserts the others only if the first went in.
//     This makes the append all-or-nothing although the read of the highest
//     sequence number sees only a snapshot: every writer appends contiguously
//     after the highest number it saw, so if another writer committed rows
//     >= first after our snapshot, its range starts at or below first and
//     therefore contains first itself, and we lose on the first row (ON
//     CONFLICT waits for an uncommitted competitor and then sees its row).
//     Once we hold the first row, rows first+1..last cannot exist: a writer
//     that wrote them saw first stored, which it was not. The primary key
//     remains the last line of defence: a duplicate that slipped through
//     anyway fails with a unique violation, reported as store.ErrConflict.
//   - A value write with expected version 0 inserts version 1 with ON
//     CONFLICT DO NOTHING; any other is an UPDATE ... WHERE version =
//     expected, which under READ COMMITTED re-checks its condition against a
//     competitor's committed row. Zero rows affected means store.ErrConflict.
//   - A snapshot save is an upsert that only replaces a row with a lower or
//     equal sequence number. A snapshot saved with an append
//     (store.SnapshotJournal) is upserted by the same statement, and only if
//     that append's first event went in.
//
// None of these statements fails on a conflict (a conflict is a row count
// of zero), which is what lets one transaction carry the writes of many
// unrelated entities: a conflict in one cannot abort the others.
//
// # Group commit
//
// Writes do not run on the caller's goroutine. Each becomes an op, and is
// queued for a committer goroutine (one by default, see WithCommitters). The
// committer takes the first queued op, then whatever else is queued at that
// moment, up to WithMaxBatch, without waiting for more: while a batch is at
// the database, new writes queue and form the next one, so batches grow with
// the load and a lone write pays no extra latency. A batch also stops growing
// at 4 MiB of payload.
//
// The committer sorts the batch by table and key and turns it into as few
// statements as it can: all the appends of the batch (with the snapshots
// saved with them) go into one statement that takes its rows from arrays
// (unnest) and applies the fences above row by row, so the server parses,
// plans and executes one statement for the whole batch instead of one per
// entity; it returns the persistence ids whose append went in. A statement
// does not see its own inserts, so a persistence id appears at most once per
// statement: a second append of the same entity in one batch goes into a
// second statement, after the first, which sees its rows. Value writes and
// snapshot saves are a statement each.
//
// The statements are sent with pgx.Batch: one pipelined round trip ending in
// a single Sync, which PostgreSQL runs as one implicit transaction, committed
// (and, with synchronous_commit on, flushed) once. The callers are answered
// only after the Sync's reply, so no write is acknowledged before it is
// durable. Statements are prepared once per connection (pgx's statement
// cache), so each round trip carries only their arguments. Store.Stats
// counts commits and writes and times the commits; Close logs them, so the
// batch size reached and the database's share of a write's latency show in
// the proxy's log.
//
// Every transaction takes its row locks in one order, by table and then by
// key: journal rows, then snapshot rows, then value rows, so that concurrent
// batches of several proxies wait for each other but do not deadlock. Two
// cases bend that order, and both need two writers of the same entity in
// flight at once, which fencing refuses anyway: a second append of an entity
// in one batch, and a snapshot saved with an append in one batch while
// another batch saves a snapshot of the same entity on its own. If they ever
// deadlock, PostgreSQL aborts one transaction and the committer re-runs its
// writes one by one (below).
//
// If the server rejects a statement anyway (a bug, a duplicate that slipped
// past the fences, a deadlock with a foreign writer), the whole batch rolls
// back; the committer then re-runs each op in its own transaction, so only
// the bad one fails (Stats.Fallbacks counts these).
//
// # Failures
//
// When the database cannot be reached (down, restarting, a connection
// terminated), a call fails with an error wrapping ErrUnavailable; the store
// does not need reopening, as the pool dials new connections and the
// committers keep running. An attempt known not to have reached the server
// (no connection could be acquired) is retried with backoff for up to
// WithRetryTimeout first. A write whose batch was sent but whose answer was
// lost is not retried: it may have committed, and only the caller can find
// out (by reloading), so ErrUnavailable on a write means "outcome unknown".
// Either way a batch is one transaction, so nothing is ever half-written.
// Reads are idempotent and are retried after any connection error.
//
// A caller whose context ends while its write is still queued takes it back
// (it is then never sent); once the committer has taken it, the call waits
// for the outcome (at most WithQueryTimeout), so the caller learns whether
// it committed.
package postgres
