package entity

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
)

// Stream is an entity's bidirectional stream to the user function, with a
// goroutine that moves received messages to a channel so the entity loop
// can wait for a reply, a new command and a timer in one select.
// Send, CloseGracefully and Abort are called by the entity loop only.
type Stream[In, Out any] struct {
	ctx      context.Context
	cancel   context.CancelFunc
	client   grpc.BidiStreamingClient[In, Out]
	in       chan Inbound[Out]
	recvDone chan struct{}
}

// Inbound is one received message, or the error that ended the stream
// (io.EOF when the function closed it normally).
type Inbound[Out any] struct {
	Msg *Out
	Err error
}

// OpenStream opens a stream with open on a context derived from parent.
func OpenStream[In, Out any](parent context.Context, open func(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[In, Out], error)) (*Stream[In, Out], error) {
	ctx, cancel := context.WithCancel(parent)
	client, err := open(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Stream[In, Out]{ctx: ctx, cancel: cancel, client: client, in: make(chan Inbound[Out]), recvDone: make(chan struct{})}
	go s.receive()
	return s, nil
}

// Context is cancelled when the stream is aborted.
func (s *Stream[In, Out]) Context() context.Context { return s.ctx }

// Send sends one message. After an error the stream is broken and Received
// yields the reason.
func (s *Stream[In, Out]) Send(m *In) error { return s.client.Send(m) }

// Received yields what the function sends, ending with an error.
func (s *Stream[In, Out]) Received() <-chan Inbound[Out] { return s.in }

func (s *Stream[In, Out]) receive() {
	defer close(s.recvDone)
	for {
		msg, err := s.client.Recv()
		select {
		case s.in <- Inbound[Out]{Msg: msg, Err: err}:
		case <-s.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

// Abort cancels the stream and waits for the receiving goroutine to end.
func (s *Stream[In, Out]) Abort() {
	s.cancel()
	<-s.recvDone
}

// CloseGracefully half-closes the stream and gives the function up to
// timeout to end its side (messages it still sends are dropped and logged),
// then aborts.
func (s *Stream[In, Out]) CloseGracefully(timeout time.Duration, log *slog.Logger) {
	if err := s.client.CloseSend(); err == nil {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
	drain:
		for {
			select {
			case in := <-s.in:
				if in.Err != nil {
					break drain
				}
				log.Warn("message from the user function after the stream was closed; ignored")
			case <-timer.C:
				log.Warn("user function did not close the entity stream in time", "timeout", timeout)
				break drain
			}
		}
	}
	s.Abort()
}

// ReasonAfterSendError returns why a stream broke after Send failed: the
// stream's own error if it arrives within a second, else sendErr.
func (s *Stream[In, Out]) ReasonAfterSendError(sendErr error) error {
	select {
	case in := <-s.in:
		if in.Err != nil {
			return in.Err
		}
	case <-time.After(time.Second):
	}
	return sendErr
}
