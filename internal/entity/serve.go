package entity

import (
	"time"

	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/route"
)

// Session is one activation of an entity that serves commands one at a
// time over a stream (event-sourced and value entities).
type Session[Out any] interface {
	// Received yields what the function sends.
	Received() <-chan Inbound[Out]
	// Handle runs one command to its end and finishes it; it returns true
	// when the activation is over (the session has closed its stream).
	Handle(cmd *Command) (over bool)
	// Unexpected handles a message (or the end of the stream) arriving while
	// no command is in flight; the activation is over afterwards.
	Unexpected(in Inbound[Out])
	// Passivate closes the stream gracefully; the entity has been detached.
	Passivate()
}

// Serve feeds queued commands to s one at a time until the entity
// passivates (idle for idleTimeout, or the registry is stopping with an
// empty queue), or s says the activation is over. Commands whose caller has
// already left are skipped without being sent. It reports whether the
// entity passivated.
func Serve[Out any](mb *Mailbox, idleTimeout time.Duration, s Session[Out]) (passivated bool) {
	idle := time.NewTimer(idleTimeout)
	defer idle.Stop()
	for {
		cmd := mb.Pop()
		if cmd == nil {
			select {
			case <-mb.Wake():
			case <-idle.C:
				if mb.Passivate() {
					s.Passivate()
					return true
				}
			case <-mb.Stopping():
				if mb.Passivate() {
					s.Passivate()
					return true
				}
			case in := <-s.Received():
				s.Unexpected(in)
				return false
			}
			continue
		}
		if err := cmd.Ctx.Err(); err != nil {
			cmd.Finish(route.Outcome{}, status.FromContextError(err).Err())
			continue
		}
		if s.Handle(cmd) {
			return false
		}
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(idleTimeout)
	}
}
