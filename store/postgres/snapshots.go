package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// saveSnapshotSQL replaces the snapshot of $1 unless the stored one has a
// higher sequence number. Concurrent saves of one id queue on the row lock
// and each compares with the row as the previous one left it, so the highest
// sequence number always ends up stored.
const saveSnapshotSQL = `INSERT INTO snapshots AS s (persistence_id, sequence_number, type_url, bytes)
VALUES ($1, $2, $3, $4)
ON CONFLICT (persistence_id) DO UPDATE
SET sequence_number = excluded.sequence_number, type_url = excluded.type_url,
    bytes = excluded.bytes, written_at = now()
WHERE s.sequence_number <= excluded.sequence_number`

const latestSnapshotSQL = `SELECT sequence_number, type_url, bytes FROM snapshots WHERE persistence_id = $1`

// SaveSnapshot implements store.SnapshotStore. Saves are group-committed
// with the other writes.
func (s *Store) SaveSnapshot(ctx context.Context, pid string, snap store.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save snapshot %s: %w", pid, err)
	}
	if err := checkSnapshot(snap); err != nil {
		return fmt.Errorf("save snapshot %s (seq %d): %w", pid, snap.Seq, err)
	}
	key := []byte(pid)
	// Zero rows means a newer snapshot is stored, which is not an error.
	if _, err := s.statement(ctx, kindSnapshot, key, len(snap.Payload.TypeUrl)+len(snap.Payload.Value), saveSnapshotSQL, key, snap.Seq, snap.Payload.TypeUrl, nonNil(snap.Payload.Value)); err != nil {
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
	found := false
	err := s.read(ctx, func(ctx context.Context) error {
		var typeURL string
		var value []byte
		err := s.pool.QueryRow(ctx, latestSnapshotSQL, []byte(pid)).Scan(&snap.Seq, &typeURL, &value)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		if err != nil {
			return err
		}
		snap.Payload = &anypb.Any{TypeUrl: typeURL, Value: value}
		found = true
		return nil
	})
	if err != nil {
		return store.Snapshot{}, false, fmt.Errorf("load snapshot %s: %w", pid, err)
	}
	if !found {
		return store.Snapshot{}, false, nil
	}
	return snap, true, nil
}
