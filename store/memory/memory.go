// Package memory is an in-memory implementation of the store interfaces: the
// proxy's store for development, tests and benchmarks of the hot path. Data
// lives only as long as the Store value.
//
// The Store is split into shards by a hash of the persistence id, each with its
// own lock, so that entities on different shards never contend. Payloads are
// copied when written and again when read: a caller can neither change stored
// data through a slice it passed in nor through one it got back, just as with
// a durable store.
//
// A journal is an append-only slice whose stored elements are never modified.
// Replay therefore takes a view of the slice under the shard's read lock and
// runs the callback without holding any lock, so a callback may call back
// into the store (and a slow callback holds up nobody).
package memory

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

var (
	_ store.Journal       = (*Store)(nil)
	_ store.SnapshotStore = (*Store)(nil)
)

// shardCount is the number of independently locked shards; a power of two
// comfortably above the core counts the proxy runs on.
const shardCount = 128

// errNoPayload is returned for an event or snapshot without a payload. The
// protocol never produces one, so it is a bug in the caller, not a conflict.
var errNoPayload = errors.New("memory: missing payload")

// Store keeps journals and snapshots in memory. It implements store.Journal
// and store.SnapshotStore and is safe for concurrent use. The zero value is
// not usable; call New.
type Store struct {
	seed   maphash.Seed
	shards [shardCount]shard
	values valueShards // the ValueStore, in values.go
}

// shard holds the entities whose persistence ids hash to it.
type shard struct {
	mu        sync.RWMutex
	journals  map[string][]record // index i holds seq i+1
	snapshots map[string]snapshotRecord
	// Padding keeps neighbouring shards' locks on different cache lines.
	_ [64]byte
}

// record is a stored payload. Its value is never modified after it is stored,
// which is what lets readers share it without a lock.
type record struct {
	typeURL string
	value   []byte
}

type snapshotRecord struct {
	seq int64
	record
}

// New returns an empty Store.
func New() *Store {
	s := &Store{seed: maphash.MakeSeed()}
	for i := range s.shards {
		s.shards[i].journals = make(map[string][]record)
		s.shards[i].snapshots = make(map[string]snapshotRecord)
	}
	return s
}

func (s *Store) shard(pid string) *shard {
	return &s.shards[maphash.String(s.seed, pid)%shardCount]
}

// copyPayloads copies the payloads of events into records sharing one new
// buffer, so a batch costs one allocation for its bytes however many events
// it holds.
func copyPayloads(events []store.Event) ([]record, error) {
	size := 0
	for i, e := range events {
		if e.Payload == nil {
			return nil, fmt.Errorf("event %d (seq %d): %w", i, e.Seq, errNoPayload)
		}
		size += len(e.Payload.Value)
	}
	buf := make([]byte, size)
	recs := make([]record, len(events))
	for i, e := range events {
		n := copy(buf, e.Payload.Value)
		// The full slice expression caps each value so that no append by a
		// reader can reach into its neighbour.
		recs[i] = record{typeURL: e.Payload.TypeUrl, value: buf[:n:n]}
		buf = buf[n:]
	}
	return recs, nil
}

// toAny returns a new Any holding a copy of r.
func (r record) toAny() *anypb.Any {
	var value []byte
	if len(r.value) > 0 {
		value = make([]byte, len(r.value))
		copy(value, r.value)
	}
	return &anypb.Any{TypeUrl: r.typeURL, Value: value}
}

// Append implements store.Journal.
func (s *Store) Append(ctx context.Context, pid string, events []store.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	if len(events) == 0 {
		return nil
	}
	// Copy before taking the lock so the critical section is only the check
	// and the slice append.
	recs, err := copyPayloads(events)
	if err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}

	sh := s.shard(pid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	journal := sh.journals[pid]
	highest := int64(len(journal))
	for i, e := range events {
		if want := highest + 1 + int64(i); e.Seq != want {
			return fmt.Errorf("append %s: event %d has seq %d, want %d (highest stored is %d): %w",
				pid, i, e.Seq, want, highest, store.ErrConflict)
		}
	}
	sh.journals[pid] = append(journal, recs...)
	return nil
}

// Replay implements store.Journal. It delivers the events stored when it
// started; events appended during the replay are not delivered.
func (s *Store) Replay(ctx context.Context, pid string, afterSeq int64, fn func(store.Event) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("replay %s: %w", pid, err)
	}
	sh := s.shard(pid)
	sh.mu.RLock()
	journal := sh.journals[pid]
	sh.mu.RUnlock()

	start := max(afterSeq, 0)
	for seq := start + 1; seq <= int64(len(journal)); seq++ {
		// Checked per event so a cancel from inside fn stops the replay
		// before the next event.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replay %s at seq %d: %w", pid, seq, err)
		}
		if err := fn(store.Event{Seq: seq, Payload: journal[seq-1].toAny()}); err != nil {
			return err
		}
	}
	return nil
}

// HighestSeq implements store.Journal.
func (s *Store) HighestSeq(ctx context.Context, pid string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	sh := s.shard(pid)
	sh.mu.RLock()
	n := len(sh.journals[pid])
	sh.mu.RUnlock()
	return int64(n), nil
}

// SaveSnapshot implements store.SnapshotStore.
func (s *Store) SaveSnapshot(ctx context.Context, pid string, snap store.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save snapshot %s: %w", pid, err)
	}
	if snap.Payload == nil {
		return fmt.Errorf("save snapshot %s (seq %d): %w", pid, snap.Seq, errNoPayload)
	}
	value := make([]byte, len(snap.Payload.Value))
	copy(value, snap.Payload.Value)
	rec := snapshotRecord{seq: snap.Seq, record: record{typeURL: snap.Payload.TypeUrl, value: value}}

	sh := s.shard(pid)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.snapshots[pid]; ok && old.seq > snap.Seq {
		return nil
	}
	sh.snapshots[pid] = rec
	return nil
}

// LatestSnapshot implements store.SnapshotStore.
func (s *Store) LatestSnapshot(ctx context.Context, pid string) (store.Snapshot, bool, error) {
	if err := ctx.Err(); err != nil {
		return store.Snapshot{}, false, fmt.Errorf("load snapshot %s: %w", pid, err)
	}
	sh := s.shard(pid)
	sh.mu.RLock()
	rec, ok := sh.snapshots[pid]
	sh.mu.RUnlock()
	if !ok {
		return store.Snapshot{}, false, nil
	}
	return store.Snapshot{Seq: rec.seq, Payload: rec.toAny()}, true, nil
}
