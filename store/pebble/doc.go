// Package pebble is the proxy's embedded durable store: journals, snapshots
// and values of one node in a Pebble database (github.com/cockroachdb/pebble)
// in a local directory. No server, and every acknowledged write is on disk.
//
//	s, err := pebble.Open("/var/lib/cloudstate")
//	...
//	defer s.Close()
//
// # Key layout
//
// Every key starts with a byte naming its space; ids (persistence ids and
// value keys) follow as a uvarint length and the id's bytes, so that no id's
// keys fall inside another id's range even when one id is a prefix of the
// other ("a|1" and "a|10"):
//
//	0x00 "format"                          → "cloudstate-pebble/1"
//	'e' len(pid) pid seq(8 bytes, BE)      → payload            one key per event
//	's' len(pid) pid                       → seq(8, BE) payload  the latest snapshot
//	'v' len(key) key                       → version(8, BE) state(1) payload
//
// The events of one entity are contiguous and in sequence order, since
// big-endian numbers sort like the numbers: Replay is one bounded range scan
// and HighestSeq one reverse seek (Last) within the entity's range.
//
// A snapshot key holds only the latest snapshot; saving overwrites it, which
// prunes the one before. A value's state byte is 1 for a value and 0 for a
// tombstone: a delete writes a tombstone carrying the new version instead of
// removing the key, so the version keeps growing across delete and re-create
// and a writer that read before the delete stays fenced. Tombstones are never
// removed; they cost a few bytes per deleted key.
//
// A payload is stored as the protobuf encoding of the google.protobuf.Any
// itself (field 1 type_url, field 2 value, empty fields left out, as
// proto.Marshal writes them), so `protoc --decode google.protobuf.Any` reads
// it. The format marker lets a later layout recognise this one; Open refuses
// a directory with another marker, or a Pebble database without one.
//
// # Group commit
//
// Fencing needs read, check, write to be atomic per entity: an append must
// see the entity's last sequence number, a put its current version. Doing
// that under a lock per write, each with its own fsync, would cap the store at
// one synced write per disk flush. Instead, all writes go through one
// committer goroutine:
//
//  1. The caller encodes its write (keys and records; only a value's new
//     version is left blank) and queues it. Encoding runs in the callers'
//     goroutines, in parallel.
//  2. The committer takes the first write waiting and every other one queued
//     behind it (at most 1024, or until 8 MiB are gathered).
//  3. It checks each write against the database plus the writes accepted
//     before it in the same batch (an append must start right after the
//     entity's last event, a put or delete must name the current version, a
//     snapshot must not be older than the stored one), and adds the accepted
//     ones to one Pebble batch.
//  4. It commits the batch with pebble.Sync: one WAL write and one fsync for
//     the whole batch.
//  5. It answers every caller: accepted writes with success (and the new
//     version), refused ones with store.ErrConflict. Then it yields the
//     processor once, so that the callers it just answered can queue their
//     next writes before it gathers again (on a busy CPU they would
//     otherwise run only after the committer has taken a batch of one).
//
// While the committer waits for the fsync, new writes pile up in the queue
// and become the next batch, so the batch size follows the load by itself:
// a lone writer pays one fsync per write, a thousand concurrent entities
// share one. Appends to different entities never wait for each other's
// checks; they only share the fsync. Store.Stats reports the batch sizes
// reached.
//
// Correctness rests on the committer being the only writer: the state it
// reads between batches is exactly what earlier batches committed, and within
// a batch its own bookkeeping stands in for what is not yet committed. Events
// are therefore always contiguous from 1, which lets the append check use two
// point lookups (seq must be absent, seq-1 present) instead of an iterator.
//
// Readers (Replay, HighestSeq, LatestSnapshot, GetValue) do not go through
// the committer; they read Pebble directly and see whole batches only. Pebble
// makes a synced batch visible to readers as soon as it is applied, which can
// be a moment before its fsync returns; the writer is only answered after the
// fsync, so no caller is ever told that a write succeeded before it is
// durable.
//
// # Cancellation and Close
//
// A queued write is pending until the committer takes it. A caller whose
// context ends while its write is still pending withdraws it (a
// compare-and-swap on the request's state, which the committer also uses to
// take it) and gets the context's error: nothing was written. Once taken, the
// caller waits for the outcome, which is durable either way, so "returned an
// error" never means "might have been written" except for a failed commit.
//
// Close is the committer's owner: it closes the closing channel, the
// committer finishes the batch in hand, answers it and exits; writes still
// queued are withdrawn by their callers with ErrClosed. Close then waits for
// running reads (a replay stops at its next event with ErrClosed) and closes
// the database.
//
// # The directory
//
// Open takes an exclusive flock on <dir>/cloudstate.lock before opening
// Pebble, and writes its pid into it. A second Open of the same directory, in
// the same process or another, fails at once with an error wrapping
// ErrLocked that says the directory is in use by another cloudstate proxy and
// names that proxy's pid. A directory that cannot be created or written
// gives an error wrapping the operating system's (fs.ErrPermission for
// permissions).
package pebble
