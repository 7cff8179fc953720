// Package eventsourced runs event-sourced entities in the proxy: one
// goroutine per active entity owns that entity's stream to the user
// function (cloudstate.eventsourced.EventSourced/handle), its command queue
// and its journal position.
//
// # Life of an entity
//
// The first command for an inactive entity creates it. Activation loads the
// latest snapshot and the journal events after it, opens a stream and sends
// init, then every event, then commands one at a time (PROTOCOL.md §7.1).
// For each reply the events are appended to the journal — and the snapshot
// saved — before the outcome is handed back to the caller, so nothing is
// released that is not durable (ES-3). The next command is sent only then.
//
// # Failures
//
//   - A client-action failure goes to that caller; its events and side
//     effects are dropped (ES-4 deviation). With restart=true the stream is
//     closed and the entity is activated again from the store; queued
//     commands keep their order and go to the new stream (ES-5).
//   - A top-level failure, a reply for the wrong command, an empty message, a
//     broken stream or a journal write error fail the current command with
//     the reference's description, fail every queued command with "Entity
//     terminated", and stop the entity (ES-6, ES-7); the next command
//     activates it again from the store.
//
// # Passivation
//
// After an idle period (the service's own strategy, else the configured
// default) the entity half-closes its stream and stops. The queue, and how
// passivation never strands a command, are in package entity.
package eventsourced
