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
// # Writes and fencing
//
// Fencing needs read, check, write to be atomic per key: an append must see
// the entity's last sequence number, a put its current version, a snapshot
// save the stored snapshot's seq. Each key (an entity's event prefix, a
// snapshot key, a value key) has a fence: a mutex and the key's committed
// state (highest seq, snapshot seq or version), kept in a map. A write
//
//  1. encodes its records straight into a Pebble batch, in the caller's
//     goroutine;
//  2. locks the fence of its key (an append with a snapshot locks the
//     journal's fence, then the snapshot's; nothing locks them the other way
//     round), loading the state from the database if the fence has none;
//  3. checks the write against that state (a conflict writes nothing);
//  4. commits the batch with pebble.Sync, from the caller's goroutine;
//  5. records the new state and unlocks.
//
// The cache is exact because this Store is the only writer of the
// directory (the directory lock below keeps other processes out) and a key
// is only written under its fence, which also covers the commit: the state
// kept is what the last commit left on disk. A commit that fails leaves its
// outcome unknown, so the fence forgets its state and loads it again. The
// map keeps the state of at most 32768 keys nobody is writing; beyond that,
// a random idle one is dropped and reloaded at its next write (one point
// read, or one reverse seek for a journal). Events are therefore always
// contiguous from 1.
//
// # Group commit
//
// Writes to different keys never wait for each other's fences; they meet in
// Pebble's commit pipeline, which writes each batch into the write-ahead log
// buffer in order and has one WAL writer goroutine flush and fsync it: every
// batch written while one fsync runs is covered by the next. So the batch
// size follows the load by itself: a lone writer pays one fsync per write, a
// thousand concurrent entities share one, and no write waits for a hand-off
// to a goroutine of ours. No call returns before its commit is durable.
// Store.Stats counts writes and WAL syncs (the filesystem handed to Pebble
// counts and times the syncs of WAL files), so their ratio is the batch size
// reached, and the average sync time is the disk's share of a write's
// latency; Close logs both.
//
// On Linux the WAL files are extended over the blocks Pebble preallocates
// for them (walprealloc_linux.go), so a synced append does not grow the
// file and fdatasync skips the filesystem journal commit of a new size:
// one synced write took ~200 µs instead of ~300 µs on the development VM.
//
// An append may carry the entity's snapshot (store.SnapshotJournal): both go
// into one batch and share its fsync, so a snapshot costs no commit of its
// own. A snapshot older than the stored one is left out of the batch.
//
// Readers (Replay, HighestSeq, LatestSnapshot, GetValue) read Pebble
// directly and see whole batches only. Pebble makes a synced batch visible
// to readers as soon as it is applied, which can be a moment before its
// fsync returns; the writer is only answered after the fsync, so no caller
// is ever told that a write succeeded before it is durable.
//
// # Cancellation and Close
//
// A write checks its context just before it commits: a write whose context
// ended before then returns the context's error and has written nothing.
// Once committed, the caller waits for the outcome, which is durable either
// way, so "returned an error" never means "might have been written" except
// for a failed commit.
//
// Close lets the reads and writes already running finish (a replay stops at
// its next event with ErrClosed) and then closes the database; calls made
// after Close began fail with ErrClosed. It logs the write statistics.
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
