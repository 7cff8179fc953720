package postgres

import (
	"bytes"
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
)

// appendSQL appends the events $4/$5 (type URLs and bytes) with sequence
// numbers $3, $3+1, ... to persistence id $1 (tag $2), and returns one row if
// they were written, none if the append was fenced off. It never fails on a
// conflict, so it cannot abort the other writes of its batch. Why inserting
// the first event with ON CONFLICT DO NOTHING, after checking that it follows
// the highest stored one, makes the whole append all-or-nothing is argued in
// doc.go.
const appendSQL = `WITH head AS (
    SELECT coalesce(max(sequence_number), 0) AS seq FROM journal WHERE persistence_id = $1::bytea
), first AS (
    INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes)
    SELECT $1::bytea, $3::bigint, $2::bytea, ($4::text[])[1], ($5::bytea[])[1]
    FROM head WHERE head.seq = $3::bigint - 1
    ON CONFLICT (persistence_id, sequence_number) DO NOTHING
    RETURNING 1
), rest AS (
    INSERT INTO journal (persistence_id, sequence_number, tag, type_url, bytes)
    SELECT $1::bytea, $3::bigint + e.i - 1, $2::bytea, e.type_url, e.bytes
    FROM unnest($4::text[], $5::bytea[]) WITH ORDINALITY AS e(type_url, bytes, i)
    WHERE e.i > 1 AND EXISTS (SELECT 1 FROM first)
)
SELECT 1 FROM first`

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
	first := events[0].Seq
	last := events[len(events)-1].Seq
	size := 0
	typeURLs := make([]string, len(events))
	values := make([][]byte, len(events))
	// Checked here so that a malformed batch is refused without a round
	// trip; the database checks only that first follows the stored ones.
	if first < 1 {
		return fmt.Errorf("append %s: seq %d is not positive: %w", pid, first, store.ErrConflict)
	}
	for i, e := range events {
		if want := first + int64(i); e.Seq != want {
			return fmt.Errorf("append %s: event %d has seq %d, want %d: %w", pid, i, e.Seq, want, store.ErrConflict)
		}
		if e.Payload == nil {
			return fmt.Errorf("append %s: event seq %d has no payload: %w", pid, e.Seq, errInvalid)
		}
		if err := checkTypeURL(e.Payload.TypeUrl); err != nil {
			return fmt.Errorf("append %s: event seq %d: %w", pid, e.Seq, err)
		}
		typeURLs[i] = e.Payload.TypeUrl
		values[i] = nonNil(e.Payload.Value)
		size += len(e.Payload.TypeUrl) + len(e.Payload.Value)
	}
	key := []byte(pid)
	rows, err := s.write(ctx, kindAppend, key, size, appendSQL, key, tagOf(key), first, typeURLs, values)
	if err != nil {
		return fmt.Errorf("append %s (seq %d..%d): %w", pid, first, last, err)
	}
	if rows != 1 {
		return fmt.Errorf("append %s: seq %d does not follow the highest stored one: %w", pid, first, store.ErrConflict)
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
