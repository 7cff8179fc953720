// Package crdt implements the CRDTs of the Cloudstate protocol as the proxy
// holds them: GCounter, PNCounter, GSet, ORSet, LWWRegister, Flag, ORMap and
// Vote. It is pure: no I/O, no goroutines, no clocks except the one a Replica
// injects. BEHAVIOR.md CRDT-6 is the contract; this file explains the design.
//
// # Two representations
//
// A CRDT (the interface, implemented by *GCounter, *ORMap, ...) is the full
// replicated state with the metadata needed to merge replicas. A View is only
// the value a user function holds: a number, sorted elements, a register's
// value, a map of Views. The proxy uses them like this:
//
//	c, err := crdt.FromDelta(r, firstUpdate) // or UnmarshalState, or Apply
//	last := c.View(r)                        // init: crdt.InitialDelta(last)
//	c.Apply(r, update)                       // the function's own update...
//	last, err = crdt.ApplyView(last, update) // ...which it has applied too
//	c.Merge(remote)                          // replication
//	d, err := crdt.Diff(last, c.View(r))     // nil, or the delta to send
//	last = c.View(r)
//
// CRDT-6's "delta sent to the UF" depends only on the old and new values, so
// deltas are functions of two Views (Diff, InitialDelta) rather than methods
// of each type; they do not depend on how the state got there, and the
// function never receives its own updates back because last includes them.
//
// # State model
//
// Counters keep one count per node (PNCounter: one for increments, one for
// decrements) and merge with the per-node maximum; Vote keeps one counter
// per node, odd meaning yes. GSet merges by union, Flag by OR. LWWRegister
// keeps the write with the highest (timestamp, node id, value), so ties are
// broken the same way everywhere.
//
// ORSet and ORMap are add-wins observed-remove collections built on dots. A
// dot (node, counter) names one update; a version vector, the context,
// records per node the highest counter seen. Because replicas exchange full
// states, a context is causally complete: every dot at or below it has been
// seen. An element or key holds the dots of the updates that made it live;
// an update replaces them with one new dot (all elements of one update share
// it). Removing drops the dots; a merge keeps a dot if both sides hold it or
// if the side without it has not seen it, so removes win only over what they
// observed and a concurrent add survives.
//
// ORMap keys work the same way, and each live dot also keeps the value that
// was written with it, never changed afterwards; a key's value is the join
// of its live dots' values (usually just one). A key removed and created
// again therefore starts from its new value even when merged with a replica
// that still holds the old one; only a removal concurrent with an update
// keeps the updater's whole value (the reference has the same anomaly).
// Values of different types under one key, created concurrently, join by
// keeping the higher Kind. Nested ORSets and ORMaps tag their elements with
// the enclosing map's dot instead of counters of their own, so a re-created
// key never reuses a dot of its former incarnation.
//
// State serializes to the private crdtpb.State message (MarshalState,
// UnmarshalState) in a canonical, deterministic form: equal states give
// equal bytes.
//
// # Deltas
//
// Apply implements the "update from the UF" column of CRDT-6 and rejects,
// with an error and no change, a delta with no type (ErrEmptyDelta), of
// another type (ErrWrongKind), a GCounter increment of 2^63 or more, an
// overflowing count, a flag switched off, or a missing key or register value
// (ErrInvalidDelta). Diff implements the "delta sent to the UF" column;
// InitialDelta is the full value for CrdtInit.
//
// # Deviations from the reference
//
//   - Vote's total_voters and votes_for count Replica.Members, which the
//     cluster layer supplies (View takes the Replica). Because Diff compares
//     values, a membership change alone yields a Vote delta the next time the
//     entity diffs; the reference sends none.
//   - An ORMap key whose value changed in a way no delta can express (a
//     grow-only value that shrank because the key was removed and created
//     again) is sent as removed plus added instead of crashing the entity.
//   - An ORMap "added" entry for a key holding a value of another type
//     replaces that value; the reference fails.
//   - Concurrent creations of one ORMap key with different types resolve
//     deterministically (higher Kind wins) instead of failing.
//   - ORMap keys removed and re-created do not resurrect their old value
//     (see above).
//
// Nothing here is safe for concurrent use; the entity owning a CRDT calls it
// from one goroutine.
package crdt
