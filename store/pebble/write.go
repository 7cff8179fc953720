package pebble

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// fence is the write lock and the cached fencing state of one key: the event
// prefix of a journal, a snapshot key or a value key. Whoever holds mu may
// check the key's state, commit a write to it and update the state; see
// "Writes and fencing" in doc.go for why the cache is exact.
type fence struct {
	mu sync.Mutex
	// refs counts the goroutines holding or waiting for mu. Guarded by
	// fences.mu, not by mu: an entry with no refs may be dropped.
	refs int
	// known says n holds the key's committed state. It is false until
	// loaded from the database, and again after a commit whose outcome is
	// unknown.
	known bool
	// n is the highest event seq of a journal (0 for none), the seq of the
	// stored snapshot (math.MinInt64 for none) or the version of a value
	// (0 for none).
	n int64
}

// fences maps keys to their fence, keeping at most max entries that nobody
// holds.
type fences struct {
	mu  sync.Mutex
	m   map[string]*fence
	max int
}

// lock returns the fence of key, locked.
func (fs *fences) lock(key []byte) *fence {
	fs.mu.Lock()
	f := fs.m[string(key)]
	if f == nil {
		if len(fs.m) >= fs.max {
			fs.evictOne()
		}
		f = &fence{}
		fs.m[string(key)] = f
	}
	f.refs++
	fs.mu.Unlock()
	f.mu.Lock()
	return f
}

// unlock releases a fence returned by lock.
func (fs *fences) unlock(f *fence) {
	f.mu.Unlock()
	fs.mu.Lock()
	f.refs--
	fs.mu.Unlock()
}

// evictOne drops one entry that nobody holds or waits for; its state is
// loaded again from the database when next needed. Map iteration starts at a
// random entry, which makes this a random eviction.
func (fs *fences) evictOne() {
	for k, f := range fs.m {
		if f.refs == 0 {
			delete(fs.m, k)
			return
		}
	}
}

// validateEvents checks what can be checked without the stored history:
// payloads present, sequence numbers positive and without gaps.
func validateEvents(events []store.Event) error {
	first := events[0].Seq
	for i, e := range events {
		if e.Payload == nil {
			return fmt.Errorf("event %d (seq %d): %w", i, e.Seq, errNoPayload)
		}
		if want := first + int64(i); e.Seq != want || e.Seq < 1 {
			return fmt.Errorf("event %d has seq %d, want %d following seq %d and above 0: %w",
				i, e.Seq, want, first, store.ErrConflict)
		}
	}
	return nil
}

// setEvent adds event e of the entity whose event prefix is prefix to b,
// encoding straight into the batch's buffer.
func setEvent(b *pebbledb.Batch, prefix []byte, e store.Event) error {
	op := b.SetDeferred(len(prefix)+8, anySize(e.Payload))
	copy(op.Key, prefix)
	binary.BigEndian.PutUint64(op.Key[len(prefix):], uint64(e.Seq))
	appendAny(op.Value[:0], e.Payload)
	return op.Finish()
}

// setVersioned adds the record n, extra, payload (see encodeVersioned) under
// key to b.
func setVersioned(b *pebbledb.Batch, key []byte, n int64, extra []byte, p *anypb.Any) error {
	size := 8 + len(extra)
	if p != nil {
		size += anySize(p)
	}
	op := b.SetDeferred(len(key), size)
	copy(op.Key, key)
	v := binary.BigEndian.AppendUint64(op.Value[:0], uint64(n))
	v = append(v, extra...)
	if p != nil {
		appendAny(v, p)
	}
	return op.Finish()
}

// commit writes b with one synced commit. Concurrent commits share Pebble's
// WAL fsyncs (doc.go).
func (s *Store) commit(b *pebbledb.Batch) error {
	s.stats.writes.Add(1)
	if err := b.Commit(pebbledb.Sync); err != nil {
		// Pebble treats a failed WAL write as fatal, so this is unlikely;
		// the caller must treat the outcome as unknown.
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// journalHead returns the highest stored seq of the journal whose fence f is
// held, loading it if needed.
func (s *Store) journalHead(f *fence, prefix []byte) (int64, error) {
	if !f.known {
		h, err := highestSeq(s.db, prefix)
		if err != nil {
			return 0, fmt.Errorf("read highest seq: %w", err)
		}
		f.n, f.known = h, true
	}
	return f.n, nil
}

// storedVersion returns the leading number of the record under key (a
// snapshot's seq, a value's version) for a fence that is held, loading it if
// needed; none is what to use when there is no record.
func (s *Store) storedVersion(f *fence, key []byte, none int64) (int64, error) {
	if f.known {
		return f.n, nil
	}
	rec, closer, err := s.db.Get(key)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		f.n = none
	case err != nil:
		return 0, fmt.Errorf("read stored version: %w", err)
	default:
		v, err := versionOf(rec)
		closer.Close()
		if err != nil {
			return 0, err
		}
		f.n = v
	}
	f.known = true
	return f.n, nil
}

// append writes events, and snap if not nil, to pid in one synced batch. An
// append that does not follow the stored history writes nothing and returns
// an error wrapping store.ErrConflict; a snapshot older than the stored one
// is left out. The caller has checked ctx and events.
func (s *Store) append(ctx context.Context, pid string, events []store.Event, snap *store.Snapshot) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()

	b := s.db.NewBatch()
	defer b.Close()
	prefix := idKey(spaceEvent, pid, 8)
	for _, e := range events {
		if err := setEvent(b, prefix, e); err != nil {
			return fmt.Errorf("build batch: %w", err)
		}
	}

	f := s.fences.lock(prefix)
	defer s.fences.unlock(f)
	highest, err := s.journalHead(f, prefix)
	if err != nil {
		return err
	}
	first, last := events[0].Seq, events[len(events)-1].Seq
	if first != highest+1 {
		s.stats.conflicts.Add(1)
		return fmt.Errorf("first event has seq %d, want %d (highest stored is %d): %w",
			first, highest+1, highest, store.ErrConflict)
	}
	// The journal's fence is always taken before the snapshot's, and
	// nothing takes them the other way round.
	var sf *fence
	if snap != nil {
		key := idKey(spaceSnapshot, pid, 0)
		sf = s.fences.lock(key)
		defer s.fences.unlock(sf)
		stored, err := s.storedVersion(sf, key, math.MinInt64)
		if err != nil {
			return fmt.Errorf("check stored snapshot: %w", err)
		}
		if snap.Seq < stored {
			sf = nil // older than the stored one: left out
		} else if err := setVersioned(b, key, snap.Seq, nil, snap.Payload); err != nil {
			return fmt.Errorf("build batch: %w", err)
		}
	}
	// Last chance to withdraw: once committed, the write stands.
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.commit(b); err != nil {
		f.known = false
		if sf != nil {
			sf.known = false
		}
		return err
	}
	f.n = last
	if sf != nil {
		sf.n = snap.Seq
	}
	return nil
}

// saveSnapshot writes snap as the snapshot of pid unless a later one is
// stored. The snapshot key holds only the latest snapshot, so writing it
// prunes the one before.
func (s *Store) saveSnapshot(ctx context.Context, pid string, snap store.Snapshot) error {
	if err := s.begin(); err != nil {
		return err
	}
	defer s.end()
	key := idKey(spaceSnapshot, pid, 0)
	f := s.fences.lock(key)
	defer s.fences.unlock(f)
	stored, err := s.storedVersion(f, key, math.MinInt64)
	if err != nil {
		return fmt.Errorf("check stored snapshot: %w", err)
	}
	if snap.Seq < stored {
		return nil
	}
	b := s.db.NewBatch()
	defer b.Close()
	if err := setVersioned(b, key, snap.Seq, nil, snap.Payload); err != nil {
		return fmt.Errorf("build batch: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.commit(b); err != nil {
		f.known = false
		return err
	}
	f.n = snap.Seq
	return nil
}

// putValue writes a value record (a tombstone if p is nil) under key if the
// stored version is expected, and returns the new version.
func (s *Store) putValue(ctx context.Context, key string, expected int64, p *anypb.Any) (int64, error) {
	if err := s.begin(); err != nil {
		return 0, err
	}
	defer s.end()
	k := idKey(spaceValue, key, 0)
	f := s.fences.lock(k)
	defer s.fences.unlock(f)
	current, err := s.storedVersion(f, k, 0)
	if err != nil {
		return 0, err
	}
	if current != expected {
		s.stats.conflicts.Add(1)
		return 0, fmt.Errorf("expected version %d, stored version is %d: %w", expected, current, store.ErrConflict)
	}
	state := valuePresent
	if p == nil {
		state = valueTombstone
	}
	next := current + 1
	b := s.db.NewBatch()
	defer b.Close()
	if err := setVersioned(b, k, next, []byte{state}, p); err != nil {
		return 0, fmt.Errorf("build batch: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := s.commit(b); err != nil {
		f.known = false
		return 0, err
	}
	f.n = next
	return next, nil
}
