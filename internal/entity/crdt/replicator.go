package crdt

import (
	"context"
	"fmt"
	"sync"

	"github.com/cloudstate-go/cloudstate/crdt"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// Replicator holds this node's copy of every CRDT and shares it with the
// other nodes. Entities call it from their loop goroutines; methods must
// not block except Update and Delete, which wait until the write
// consistency is met. On one node (Local) every write completes locally;
// the cluster layer supplies an implementation that gossips state.
type Replicator interface {
	// Get returns a copy of the CRDT at key (nil if it does not exist) and
	// whether it has been deleted.
	Get(key string) (c crdt.CRDT, deleted bool)
	// Update merges c, this node's new state, into key and replicates it
	// with the given consistency. It returns a copy of the merged state.
	Update(ctx context.Context, key string, c crdt.CRDT, wc protocol.CrdtWriteConsistency) (crdt.CRDT, error)
	// Delete deletes key for good, everywhere, with the given consistency.
	Delete(ctx context.Context, key string, wc protocol.CrdtWriteConsistency) error
	// Watch calls fn (on any goroutine, never blocking it for long) after
	// key changes; the returned func stops watching.
	Watch(key string, fn func()) (stop func())
	// Replica is this node's identity and the cluster members, for Vote.
	Replica() crdt.Replica
}

// Local is the Replicator of a single node: all state in memory, every
// write consistency met by the local write.
type Local struct {
	replica crdt.Replica

	mu       sync.Mutex
	entries  map[string]*localEntry
	watchSeq int
}

type localEntry struct {
	c        crdt.CRDT
	deleted  bool
	watchers map[int]func()
}

var _ Replicator = (*Local)(nil)

// NewLocal returns a single-node replicator for node.
func NewLocal(node string) *Local {
	return &Local{replica: crdt.Replica{Node: node, Members: []string{node}}, entries: make(map[string]*localEntry)}
}

func (l *Local) entry(key string) *localEntry {
	e := l.entries[key]
	if e == nil {
		e = &localEntry{watchers: make(map[int]func())}
		l.entries[key] = e
	}
	return e
}

// Get implements Replicator.
func (l *Local) Get(key string) (crdt.CRDT, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.entries[key]
	if e == nil || e.c == nil {
		return nil, e != nil && e.deleted
	}
	return e.c.Clone(), e.deleted
}

// Update implements Replicator.
func (l *Local) Update(_ context.Context, key string, c crdt.CRDT, _ protocol.CrdtWriteConsistency) (crdt.CRDT, error) {
	l.mu.Lock()
	e := l.entry(key)
	if e.deleted {
		l.mu.Unlock()
		return nil, fmt.Errorf("crdt %s: deleted", key)
	}
	if e.c == nil {
		e.c = c.Clone()
	} else if err := e.c.Merge(c); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("crdt %s: %w", key, err)
	}
	merged := e.c.Clone()
	watchers := l.watchersOf(e)
	l.mu.Unlock()
	notify(watchers)
	return merged, nil
}

// Delete implements Replicator.
func (l *Local) Delete(_ context.Context, key string, _ protocol.CrdtWriteConsistency) error {
	l.mu.Lock()
	e := l.entry(key)
	e.deleted = true
	e.c = nil
	watchers := l.watchersOf(e)
	l.mu.Unlock()
	notify(watchers)
	return nil
}

// Watch implements Replicator.
func (l *Local) Watch(key string, fn func()) func() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watchSeq++
	id := l.watchSeq
	l.entry(key).watchers[id] = fn
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if e := l.entries[key]; e != nil {
			delete(e.watchers, id)
		}
	}
}

// Replica implements Replicator.
func (l *Local) Replica() crdt.Replica { return l.replica }

func (l *Local) watchersOf(e *localEntry) []func() {
	fns := make([]func(), 0, len(e.watchers))
	for _, fn := range e.watchers {
		fns = append(fns, fn)
	}
	return fns
}

func notify(fns []func()) {
	for _, fn := range fns {
		fn()
	}
}
