package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// The value writes. Each affects one row when it applies and none when the
// version is stale, so a conflict never aborts the batch. The first write of
// a key inserts at version 1 and loses to any existing row (ON CONFLICT DO
// NOTHING waits for a concurrent inserter and then sees its row); later
// writes update only if the row still has the expected version (a concurrent
// updater holds the row lock, and once it commits our WHERE is evaluated
// again against its new version and fails). A delete keeps the row as a
// tombstone with NULL type_url and bytes, so the version keeps growing.
const (
	insertValueSQL = `INSERT INTO entity_values (key, version, type_url, bytes) VALUES ($1, 1, $2, $3)
ON CONFLICT (key) DO NOTHING`
	updateValueSQL = `UPDATE entity_values SET version = version + 1, type_url = $3, bytes = $4, written_at = now()
WHERE key = $1 AND version = $2`
	insertTombstoneSQL = `INSERT INTO entity_values (key, version) VALUES ($1, 1)
ON CONFLICT (key) DO NOTHING`
	updateTombstoneSQL = `UPDATE entity_values SET version = version + 1, type_url = NULL, bytes = NULL, written_at = now()
WHERE key = $1 AND version = $2`
	getValueSQL = `SELECT version, type_url, bytes FROM entity_values WHERE key = $1`
)

// GetValue implements store.ValueStore.
func (s *Store) GetValue(ctx context.Context, key string) (store.Value, error) {
	if err := ctx.Err(); err != nil {
		return store.Value{}, fmt.Errorf("get value %q: %w", key, err)
	}
	var v store.Value
	err := s.read(ctx, func(ctx context.Context) error {
		v = store.Value{}
		var typeURL *string
		var value []byte
		err := s.pool.QueryRow(ctx, getValueSQL, []byte(key)).Scan(&v.Version, &typeURL, &value)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if typeURL != nil {
			v.Payload = &anypb.Any{TypeUrl: *typeURL, Value: value}
		}
		return nil
	})
	if err != nil {
		return store.Value{}, fmt.Errorf("get value %q: %w", key, err)
	}
	return v, nil
}

// PutValue implements store.ValueStore. Puts are group-committed with the
// other writes.
func (s *Store) PutValue(ctx context.Context, key string, expectedVersion int64, payload *anypb.Any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("put value %q: %w", key, err)
	}
	if payload == nil {
		return 0, fmt.Errorf("put value %q: no payload (use DeleteValue): %w", key, errInvalid)
	}
	if err := checkTypeURL(payload.TypeUrl); err != nil {
		return 0, fmt.Errorf("put value %q: %w", key, err)
	}
	k := []byte(key)
	value := nonNil(payload.Value)
	var rows int64
	var err error
	switch {
	case expectedVersion < 0:
		return 0, fmt.Errorf("put value %q: version %d is negative: %w", key, expectedVersion, store.ErrConflict)
	case expectedVersion == 0:
		rows, err = s.statement(ctx, kindValue, k, len(payload.TypeUrl)+len(value), insertValueSQL, k, payload.TypeUrl, value)
	default:
		rows, err = s.statement(ctx, kindValue, k, len(payload.TypeUrl)+len(value), updateValueSQL, k, expectedVersion, payload.TypeUrl, value)
	}
	if err != nil {
		return 0, fmt.Errorf("put value %q at version %d: %w", key, expectedVersion, err)
	}
	if rows != 1 {
		return 0, fmt.Errorf("put value %q: version %d is not the current one: %w", key, expectedVersion, store.ErrConflict)
	}
	return expectedVersion + 1, nil
}

// DeleteValue implements store.ValueStore. A delete writes a tombstone, so
// deleting a key that holds nothing at its current version also moves the
// version on.
func (s *Store) DeleteValue(ctx context.Context, key string, expectedVersion int64) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("delete value %q: %w", key, err)
	}
	k := []byte(key)
	var rows int64
	var err error
	switch {
	case expectedVersion < 0:
		return 0, fmt.Errorf("delete value %q: version %d is negative: %w", key, expectedVersion, store.ErrConflict)
	case expectedVersion == 0:
		rows, err = s.statement(ctx, kindValue, k, 0, insertTombstoneSQL, k)
	default:
		rows, err = s.statement(ctx, kindValue, k, 0, updateTombstoneSQL, k, expectedVersion)
	}
	if err != nil {
		return 0, fmt.Errorf("delete value %q at version %d: %w", key, expectedVersion, err)
	}
	if rows != 1 {
		return 0, fmt.Errorf("delete value %q: version %d is not the current one: %w", key, expectedVersion, store.ErrConflict)
	}
	return expectedVersion + 1, nil
}
