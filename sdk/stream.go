package sdk

import (
	"errors"
	"io"
	"sync/atomic"
)

// errStopping reports that the server is shutting down.
var errStopping = errors.New("server stopping")

// entityStreams is what the entity stream services (event-sourced, value,
// CRDT) share with the server: how to tell that it is stopping, and how
// many messages are being processed right now, so that shutdown can wait
// for those and then cut the idle streams.
type entityStreams struct {
	// stopping is closed when the server shuts down; a stream ends when it
	// comes back for its next message.
	stopping <-chan struct{}
	// busy counts streams between receiving a message and asking for the
	// next one, and action calls in progress.
	busy *atomic.Int64
}

// receive returns the function that yields a stream's messages, read on
// the handler's own goroutine (a reader goroutine per stream would cost a
// hand-off on every command and memory for every idle entity), and the
// function the handler must defer to settle the busy count.
func receive[T any](s entityStreams, recv func() (*T, error)) (next func() (*T, error), done func()) {
	busy := false
	settle := func() {
		if busy {
			busy = false
			s.busy.Add(-1)
		}
	}
	next = func() (*T, error) {
		settle()
		select {
		case <-s.stopping:
			return nil, errStopping
		default:
		}
		msg, err := recv()
		if err == nil {
			busy = true
			s.busy.Add(1)
		}
		return msg, err
	}
	return next, settle
}

// endOfStream maps the end of the incoming stream to a stream handler's
// result: the proxy half-closing and server shutdown are normal ends.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, errStopping) {
		return nil
	}
	return err
}
