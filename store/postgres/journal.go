package postgres

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// appendsSQL appends the events of many entities in one statement. $1..$5
// hold the first event of each append (persistence id, tag, seq, type URL,
// bytes), at most one append per persistence id; $6..$10 the other events of
// those appends; $11..$14 the snapshots to save with them (persistence id,
// seq, type URL, bytes). It returns the persistence ids whose append was
// written; an append missing from the result was fenced off, and wrote
// nothing, not even its snapshot. It never fails on a conflict, so it cannot
// abort the other writes of its batch. Why inserting each first event with
// ON CONFLICT DO NOTHING, after checking that it follows the highest stored
// one, makes every append all-or-nothing is argued in doc.go. Rows are
// inserted in persistence id order, the lock order of doc.go.
const appendsSQL = `WITH a AS (
    SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[], $4::text[], $5::bytea[])
        AS a(pid, tag, seq, type_url, bytes)
), first AS (
    INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes)
    SELECT a.pid, a.seq, a.tag, a.type_url, a.bytes FROM a
    WHERE a.seq - 1 = (SELECT coalesce(max(j.sequence_number), 0) FROM journal j WHERE j.persistence_id = a.pid)
    ORDER BY a.pid
    ON CONFLICT (persistence_id, sequence_number) DO NOTHING
    RETURNING persistence_id
), rest AS (
    INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes)
    SELECT r.pid, r.seq, r.tag, r.type_url, r.bytes
    FROM unnest($6::bytea[], $7::bytea[], $8::bigint[], $9::text[], $10::bytea[]) AS r(pid, tag, seq, type_url, bytes)
    WHERE r.pid IN (SELECT persistence_id FROM first)
    ORDER BY r.pid, r.seq
), snap AS (
    INSERT INTO snapshots AS s (persistence_id, sequence_number, type_url, bytes)
    SELECT n.pid, n.seq, n.type_url, n.bytes
    FROM unnest($11::bytea[], $12::bigint[], $13::text[], $14::bytea[]) AS n(pid, seq, type_url, bytes)
    WHERE n.pid IN (SELECT persistence_id FROM first)
    ORDER BY n.pid
    ON CONFLICT (persistence_id) DO UPDATE
    SET sequence_number = excluded.sequence_number, type_url = excluded.type_url,
        bytes = excluded.bytes, written_at = now()
    WHERE s.sequence_number <= excluded.sequence_number
)
SELECT persistence_id FROM first`

const highestSQL = `SELECT coalesce(max(sequence_number), 0) FROM journal WHERE persistence_id = $1`

const replaySQL = `SELECT sequence_number, type_url, bytes FROM journal
WHERE persistence_id = $1 AND sequence_number > $2
ORDER BY sequence_number LIMIT $3`

// tagOf returns the tag of a persistence id: the part before the first '|'
// (the entity type's persistence id), or all of it if it has no '|'.
func tagOf(pid []byte) []byte {
	if i := bytes.IndexByte(pid, '|'); i >= 0 {
		return pid[:i]
	}
	return pid
}

// appendWrite is an append waiting for the committer, which puts the appends
// of a batch into one statement (appendsSQL).
type appendWrite struct {
	pid, tag []byte
	first    int64
	typeURLs []string
	values   [][]byte
	// snap is the snapshot to save with the events, if any.
	snap *snapshotWrite
}

// snapshotWrite is a snapshot saved with an append.
type snapshotWrite struct {
	seq     int64
	typeURL string
	value   []byte
}

// newAppend checks events and prepares their append to pid. It checks here
// what can be checked without a round trip; the database checks only that
// the first event follows the highest stored one.
func newAppend(pid string, events []store.Event) (*appendWrite, int, error) {
	first := events[0].Seq
	if first < 1 {
		return nil, 0, fmt.Errorf("seq %d is not positive: %w", first, store.ErrConflict)
	}
	key := []byte(pid)
	a := &appendWrite{pid: key, tag: tagOf(key), first: first,
		typeURLs: make([]string, len(events)), values: make([][]byte, len(events))}
	size := 0
	for i, e := range events {
		if want := first + int64(i); e.Seq != want {
			return nil, 0, fmt.Errorf("event %d has seq %d, want %d: %w", i, e.Seq, want, store.ErrConflict)
		}
		if e.Payload == nil {
			return nil, 0, fmt.Errorf("event seq %d has no payload: %w", e.Seq, errInvalid)
		}
		if err := checkTypeURL(e.Payload.TypeUrl); err != nil {
			return nil, 0, fmt.Errorf("event seq %d: %w", e.Seq, err)
		}
		a.typeURLs[i] = e.Payload.TypeUrl
		a.values[i] = nonNil(e.Payload.Value)
		size += len(e.Payload.TypeUrl) + len(e.Payload.Value)
	}
	return a, size, nil
}

// checkSnapshot refuses a snapshot PostgreSQL could not hold, or that has no
// payload.
func checkSnapshot(snap store.Snapshot) error {
	if snap.Payload == nil {
		return fmt.Errorf("no payload: %w", errInvalid)
	}
	return checkTypeURL(snap.Payload.TypeUrl)
}

// Append implements store.Journal. It returns once the events are committed
// (with synchronous_commit on, durable); it is group-committed with the
// concurrent writes of other entities.
func (s *Store) Append(ctx context.Context, pid string, events []store.Event) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	if len(events) == 0 {
		return nil
	}
	a, size, err := newAppend(pid, events)
	if err != nil {
		return fmt.Errorf("append %s: %w", pid, err)
	}
	if err := s.writeAppend(ctx, a, size); err != nil {
		return fmt.Errorf("append %s (seq %d..%d): %w", pid, events[0].Seq, events[len(events)-1].Seq, err)
	}
	return nil
}

// AppendWithSnapshot implements store.SnapshotJournal: the events and the
// snapshot are written by one statement of one transaction.
func (s *Store) AppendWithSnapshot(ctx context.Context, pid string, events []store.Event, snap store.Snapshot) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("append %s with snapshot: %w", pid, err)
	}
	if len(events) == 0 {
		return s.SaveSnapshot(ctx, pid, snap)
	}
	a, size, err := newAppend(pid, events)
	if err != nil {
		return fmt.Errorf("append %s with snapshot: %w", pid, err)
	}
	first, last := events[0].Seq, events[len(events)-1].Seq
	if err := checkSnapshot(snap); err != nil {
		if aerr := s.writeAppend(ctx, a, size); aerr != nil {
			return fmt.Errorf("append %s (seq %d..%d): %w", pid, first, last, aerr)
		}
		return fmt.Errorf("append %s: snapshot at seq %d: %w: %w", pid, snap.Seq, store.ErrSnapshotNotSaved, err)
	}
	a.snap = &snapshotWrite{seq: snap.Seq, typeURL: snap.Payload.TypeUrl, value: nonNil(snap.Payload.Value)}
	size += len(snap.Payload.TypeUrl) + len(snap.Payload.Value)
	if err := s.writeAppend(ctx, a, size); err != nil {
		return fmt.Errorf("append %s (seq %d..%d) with snapshot at seq %d: %w", pid, first, last, snap.Seq, err)
	}
	return nil
}

// writeAppend runs a through the group committer; an append that was fenced
// off returns an error wrapping store.ErrConflict.
func (s *Store) writeAppend(ctx context.Context, a *appendWrite, size int) error {
	rows, err := s.write(ctx, &op{kind: kindAppend, key: a.pid, size: size, app: a})
	if err != nil {
		return err
	}
	if rows != 1 {
		return fmt.Errorf("seq %d does not follow the highest stored one: %w", a.first, store.ErrConflict)
	}
	return nil
}

// HighestSeq implements store.Journal.
func (s *Store) HighestSeq(ctx context.Context, pid string) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	var seq int64
	err := s.read(ctx, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, highestSQL, []byte(pid)).Scan(&seq)
	})
	if err != nil {
		return 0, fmt.Errorf("highest seq %s: %w", pid, err)
	}
	return seq, nil
}

// Replay implements store.Journal. It reads the events a page at a time and
// calls fn with no connection held, so fn may call back into the store and a
// slow fn keeps no connection busy. Events appended during the replay may or
// may not be delivered.
func (s *Store) Replay(ctx context.Context, pid string, afterSeq int64, fn func(store.Event) error) error {
	key := []byte(pid)
	after := max(afterSeq, 0)
	page := make([]store.Event, 0, s.cfg.replayPage)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("replay %s after seq %d: %w", pid, after, err)
		}
		err := s.read(ctx, func(ctx context.Context) error {
			page = page[:0]
			rows, err := s.pool.Query(ctx, replaySQL, key, after, s.cfg.replayPage)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var e store.Event
				var typeURL string
				var value []byte
				if err := rows.Scan(&e.Seq, &typeURL, &value); err != nil {
					return err
				}
				e.Payload = &anypb.Any{TypeUrl: typeURL, Value: value}
				page = append(page, e)
			}
			return rows.Err()
		})
		if err != nil {
			return fmt.Errorf("replay %s after seq %d: %w", pid, after, err)
		}
		for _, e := range page {
			// Checked per event so a cancel from inside fn stops the replay
			// before the next event.
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("replay %s at seq %d: %w", pid, e.Seq, err)
			}
			if err := fn(e); err != nil {
				return err
			}
			after = e.Seq
		}
		if len(page) < s.cfg.replayPage {
			return nil
		}
	}
}
