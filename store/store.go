// Package store defines where entity state lives: the event journal and
// snapshots of event-sourced entities (and, later, the values of value
// entities). The proxy talks to storage only through these interfaces; each
// implementation (store/memory, and the durable ones) lives in its own package
// and must pass the conformance suite in store/storetest.
//
// Keys are persistence ids built by the proxy: "<persistence_id>|<entity id>"
// for event-sourced entities (shared/spec/PROTOCOL.md §6). The store treats them
// as opaque strings.
package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"google.golang.org/protobuf/types/known/anypb"
)

// ErrConflict is returned when a write is fenced off: an appended sequence
// number already exists, or does not follow the last one. It means another
// writer got there first; the caller must reload before writing again.
var ErrConflict = errors.New("store: conflict")

// ErrUnavailable is wrapped by the errors of calls that could not reach the
// storage (a database that is down). On a write the outcome is unknown: the
// caller must reload before writing again. The proxy answers UNAVAILABLE.
var ErrUnavailable = errors.New("store: unavailable")

// ErrSnapshotNotSaved is wrapped by the error of AppendWithSnapshot when the
// events were appended but the snapshot was not saved. The journal alone is
// the truth, so the caller may carry on; the next snapshot replaces the
// missing one.
var ErrSnapshotNotSaved = errors.New("store: snapshot not saved")

// Event is one journal entry of an entity. Seq is 1-based and contiguous per
// persistence id.
type Event struct {
	Seq     int64
	Payload *anypb.Any
}

// Snapshot is an entity's state as of journal sequence number Seq.
type Snapshot struct {
	Seq     int64
	Payload *anypb.Any
}

// Journal stores the events of event-sourced entities.
//
// The proxy calls it from many entity goroutines at once, one call per entity
// at a time; implementations must be safe for concurrent use and are expected
// to gather concurrent appends of different entities into one durable write
// (group commit). No call may return before its outcome is durable.
type Journal interface {
	// Append writes events atomically: all or none. events[0].Seq must be
	// exactly one more than the highest stored sequence number of pid (1 for
	// a new entity) and the rest must follow without gaps; otherwise nothing
	// is written and the error wraps ErrConflict. Events and their payloads
	// must not be modified by the caller after the call.
	Append(ctx context.Context, pid string, events []Event) error

	// Replay calls fn, in sequence order, for every event of pid with a
	// sequence number greater than afterSeq. An error from fn stops the replay
	// and is returned.
	Replay(ctx context.Context, pid string, afterSeq int64, fn func(Event) error) error

	// HighestSeq returns the highest stored sequence number of pid, 0 if none.
	HighestSeq(ctx context.Context, pid string) (int64, error)
}

// SnapshotStore stores the latest snapshot of event-sourced entities.
// Safe for concurrent use.
type SnapshotStore interface {
	// SaveSnapshot stores s as the latest snapshot of pid. A snapshot with a
	// lower Seq than the stored one is ignored (not an error), so a slow
	// writer can never roll a snapshot back.
	SaveSnapshot(ctx context.Context, pid string, s Snapshot) error

	// LatestSnapshot returns the snapshot with the highest Seq; ok is false if
	// pid has none.
	LatestSnapshot(ctx context.Context, pid string) (s Snapshot, ok bool, err error)
}

// SnapshotJournal is an optional capability of a store that keeps both the
// journal and the snapshots of event-sourced entities: it appends events and
// saves the snapshot taken after them in one atomic, durable write, so that
// saving a snapshot costs no commit of its own. Callers reach it through the
// function AppendWithSnapshot, which falls back to Append and SaveSnapshot
// for stores without it.
type SnapshotJournal interface {
	Journal
	SnapshotStore

	// AppendWithSnapshot appends events exactly as Append does and, in the
	// same atomic write, saves snap exactly as SaveSnapshot does (a snapshot
	// older than the stored one is ignored). If the append is refused or
	// fails, the snapshot is not saved either. A snapshot the store cannot
	// hold (no payload, or one the store refuses) does not stop the append:
	// the events are written alone and the error wraps ErrSnapshotNotSaved.
	// No call returns before its outcome is durable.
	AppendWithSnapshot(ctx context.Context, pid string, events []Event, snap Snapshot) error
}

// AppendWithSnapshot appends events to the journal of pid and saves snap,
// normally the state after the last of them, as its latest snapshot. When j
// and snaps are the same store and it implements SnapshotJournal, both go in
// one write; otherwise the snapshot is saved after the append. Either way
// the append's error comes first: if it fails, nothing of the snapshot is
// saved. If only the snapshot could not be saved, the events are durable and
// the error wraps ErrSnapshotNotSaved.
func AppendWithSnapshot(ctx context.Context, j Journal, snaps SnapshotStore, pid string, events []Event, snap Snapshot) error {
	if sj, ok := j.(SnapshotJournal); ok && same(sj, snaps) {
		return sj.AppendWithSnapshot(ctx, pid, events, snap)
	}
	if err := j.Append(ctx, pid, events); err != nil {
		return err
	}
	if err := snaps.SaveSnapshot(ctx, pid, snap); err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshotNotSaved, err)
	}
	return nil
}

// same reports whether a and b are the same store value. Stores are usually
// pointers; a store of a type that cannot be compared is never the same as
// another.
func same(a, b any) bool {
	t := reflect.TypeOf(a)
	return t == reflect.TypeOf(b) && t.Comparable() && a == b
}

// Value is the stored state of a value entity. Payload is nil when nothing
// is stored (never written, or deleted). Version is what the next write must
// pass as expectedVersion: 0 for a key never written, and it keeps growing
// across deletes (a delete leaves a tombstone), so a writer that read before
// a delete and re-create cannot overwrite the new value.
type Value struct {
	Payload *anypb.Any
	Version int64
}

// ValueStore stores the state of value entities under a key built by the
// proxy ("<persistence_id>|<entity id>"). Safe for concurrent use; like
// Journal, implementations are expected to group-commit concurrent writes,
// and no write may return before it is durable.
type ValueStore interface {
	// GetValue returns the value stored under key and its version.
	GetValue(ctx context.Context, key string) (Value, error)

	// PutValue replaces the value under key if its version is still
	// expectedVersion, and returns the new version. A stale expectedVersion
	// writes nothing and returns an error wrapping ErrConflict.
	PutValue(ctx context.Context, key string, expectedVersion int64, payload *anypb.Any) (int64, error)

	// DeleteValue removes the value under key if its version is still
	// expectedVersion, and returns the new version (of the tombstone).
	// Deleting a key that holds nothing, at its current version, succeeds.
	// A stale expectedVersion deletes nothing and returns an error wrapping
	// ErrConflict.
	DeleteValue(ctx context.Context, key string, expectedVersion int64) (int64, error)
}
