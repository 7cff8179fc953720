package memory

import (
	"context"
	"fmt"
	"hash/maphash"
	"sync"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

var _ store.ValueStore = (*Store)(nil)

// valueShards holds the values of value entities, sharded like the journals
// by a hash of the key. Its zero value is ready to use: a shard's map is made
// on its first write, so New need not know about values.
type valueShards [shardCount]valueShard

type valueShard struct {
	mu     sync.RWMutex
	values map[string]valueRecord
	// Padding keeps neighbouring shards' locks on different cache lines.
	_ [64]byte
}

// valueRecord is a stored value or, when present is false, the tombstone a
// delete leaves so that the version keeps growing. Like record, its bytes are
// never modified after it is stored.
type valueRecord struct {
	version int64
	present bool
	record
}

func (s *Store) valueShard(key string) *valueShard {
	return &s.values[maphash.String(s.seed, key)%shardCount]
}

// GetValue implements store.ValueStore.
func (s *Store) GetValue(ctx context.Context, key string) (store.Value, error) {
	if err := ctx.Err(); err != nil {
		return store.Value{}, fmt.Errorf("get value %s: %w", key, err)
	}
	sh := s.valueShard(key)
	sh.mu.RLock()
	rec := sh.values[key]
	sh.mu.RUnlock()
	v := store.Value{Version: rec.version}
	if rec.present {
		v.Payload = rec.toAny()
	}
	return v, nil
}

// PutValue implements store.ValueStore.
func (s *Store) PutValue(ctx context.Context, key string, expectedVersion int64, payload *anypb.Any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put value %s: %w", key, err)
	}
	if payload == nil {
		return 0, fmt.Errorf("put value %s: %w", key, errNoPayload)
	}
	// Copy before taking the lock so the critical section is only the
	// version check and the map write.
	value := make([]byte, len(payload.Value))
	copy(value, payload.Value)
	rec := record{typeURL: payload.TypeUrl, value: value}
	return s.writeValue(key, expectedVersion, true, rec)
}

// DeleteValue implements store.ValueStore.
func (s *Store) DeleteValue(ctx context.Context, key string, expectedVersion int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("delete value %s: %w", key, err)
	}
	return s.writeValue(key, expectedVersion, false, record{})
}

// writeValue stores rec (or a tombstone, if present is false) under key if
// the stored version is still expectedVersion.
func (s *Store) writeValue(key string, expectedVersion int64, present bool, rec record) (int64, error) {
	sh := s.valueShard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	current := sh.values[key].version
	if current != expectedVersion {
		op := "put"
		if !present {
			op = "delete"
		}
		return 0, fmt.Errorf("%s value %s: expected version %d, stored version is %d: %w",
			op, key, expectedVersion, current, store.ErrConflict)
	}
	if sh.values == nil {
		sh.values = make(map[string]valueRecord)
	}
	next := current + 1
	sh.values[key] = valueRecord{version: next, present: present, record: rec}
	return next, nil
}
