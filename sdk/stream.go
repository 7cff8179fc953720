package sdk

import (
	"context"
	"errors"
	"io"
	"sync"
)

// errStopping reports that the server is shutting down.
var errStopping = errors.New("server stopping")

// entityStreams is what the entity stream services (event-sourced, value)
// share with the server: how to tell that it is stopping, and the group of
// receive goroutines that Serve waits for.
type entityStreams struct {
	// stopping is closed when the server shuts down; streams then end after
	// the command in progress, so shutdown need not wait for passivation.
	stopping <-chan struct{}
	// readers tracks the per-stream receive goroutines; Serve waits for it.
	readers *sync.WaitGroup
}

type received[T any] struct {
	msg *T
	err error
}

// receive starts a stream's reader goroutine and returns the function that
// yields its messages. The reader lets a stream handler react to server
// shutdown while it waits for the proxy; it ends when the stream ends (gRPC
// cancels ctx once the handler returns).
func receive[T any](s entityStreams, ctx context.Context, recv func() (*T, error)) func() (*T, error) {
	ch := make(chan received[T])
	s.readers.Add(1)
	go func() {
		defer s.readers.Done()
		for {
			msg, err := recv()
			select {
			case ch <- received[T]{msg, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return func() (*T, error) {
		select {
		case r := <-ch:
			return r.msg, r.err
		case <-s.stopping:
			return nil, errStopping
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// endOfStream maps the end of the incoming stream to a stream handler's
// result: the proxy half-closing and server shutdown are normal ends.
func endOfStream(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, errStopping) {
		return nil
	}
	return err
}
