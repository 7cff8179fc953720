package crdt

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// streamBufferSize is how many outcomes the registry buffers per streamed
// command (entity.streamBuffer) before the entity gives up on its client.
const streamBufferSize = 256

// slowClient is a streamed call whose client stops reading after the first
// outcome until released.
type slowClient struct {
	*subscriber
	blocked chan struct{} // closed when emit blocks
	release chan struct{}
	once    sync.Once
	emitted atomic.Int64
}

// unblock lets the client read again.
func (sc *slowClient) unblock() { sc.once.Do(func() { close(sc.release) }) }

func (f *fixture) slowSubscribe(id string) *slowClient {
	sc := &slowClient{blocked: make(chan struct{}), release: make(chan struct{})}
	f.t.Cleanup(sc.unblock)
	sc.subscriber = f.subscribe(id, "slow", func(route.Outcome) error {
		if sc.emitted.Add(1) == 1 {
			close(sc.blocked)
			<-sc.release
		}
		return nil
	})
	return sc
}

// openSlowStream opens a streamed call on entity a whose client is stuck
// in its first emit, and returns it with the function's stream and the
// command id.
func openSlowStream(t *testing.T, f *fixture) (*slowClient, *ufStream, int64) {
	t.Helper()
	sc := f.slowSubscribe("a")
	s := f.nextStream()
	c := s.command(t)
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true, ClientAction: replyOf("first")})
	select {
	case <-sc.blocked:
	case <-time.After(waitFor):
		t.Fatal("the slow client's emit was never called")
	}
	return sc, s, c.GetId()
}

// roundTrip runs one unary command on entity a through s; because the reply
// travels on the same stream as everything the function sent before, the
// entity has handled all of that when roundTrip returns.
func roundTrip(t *testing.T, f *fixture, s *ufStream, text string) {
	t.Helper()
	u := f.unary("a", text)
	c := s.command(t)
	if c.GetName() != "Do" {
		t.Fatalf("function got %v, want the unary command", c)
	}
	s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf(text)})
	awaitReply(t, u, text)
}

// A client that does not read must not block the entity: outcomes are
// buffered; when the buffer overflows, that client's stream ends with
// RESOURCE_EXHAUSTED and the function is told the stream was cancelled.
func TestSlowClientDoesNotBlockTheEntity(t *testing.T) {
	f := newFixture(t, time.Minute)
	sc, s, id := openSlowStream(t, f)

	// Exactly fill the buffer, with other commands served in between.
	for i := 0; i < streamBufferSize; i++ {
		s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: replyOf(fmt.Sprintf("m%d", i))})
		if i == streamBufferSize/2 {
			roundTrip(t, f, s, "meanwhile")
		}
	}
	// The buffer is full, nothing has overflowed: no stream_cancelled
	// before either command (the second is sent after the entity handled
	// every streamed message).
	roundTrip(t, f, s, "full")
	roundTrip(t, f, s, "still full")
	select {
	case sc.err = <-sc.done:
		sc.returned = true
		t.Fatalf("slow stream ended (%v) before its buffer overflowed", sc.err)
	default:
	}

	// One more overflows.
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: replyOf("overflow")})
	if c := s.streamCancelled(t); c.GetId() != id || c.GetEntityId() != "a" {
		t.Fatalf("stream_cancelled %v, want entity a id %d", c, id)
	}
	// Messages the function sends before it learns of the cancellation are
	// dropped quietly.
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: replyOf("too late")})
	s.cancelledResponse(t, &protocol.CrdtStreamCancelledResponse{CommandId: id})
	roundTrip(t, f, s, "after")

	sc.unblock()
	err := sc.end(t)
	wantStatus(t, err, codes.ResourceExhausted, "the client did not keep up with the stream")
	if n := sc.emitted.Load(); n != 1+streamBufferSize {
		t.Fatalf("the slow client got %d outcomes, want %d (the first and a full buffer)", n, 1+streamBufferSize)
	}
	f.noReports()
}

// PROTOCOL §3.4: stream_cancelled is not sent for a stream the function
// ended itself, even if the client could not take that last message.
func TestOverflowOnEndStreamIsNotCancelled(t *testing.T) {
	f := newFixture(t, time.Minute)
	sc, s, id := openSlowStream(t, f)
	for i := 0; i < streamBufferSize; i++ {
		s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: replyOf(fmt.Sprintf("m%d", i))})
	}
	s.streamed(t, &protocol.CrdtStreamedMessage{CommandId: id, ClientAction: replyOf("last"), EndStream: true})

	// Once the reply to a command sent after those messages is through, the
	// entity has handled them; everything it sent the function until then
	// arrives before the next command.
	u := f.unary("a", "barrier")
	var cmds []*protocol.Command
	for len(cmds) < 2 {
		m := s.next(t)
		if c := m.GetStreamCancelled(); c != nil {
			t.Fatalf("function got stream_cancelled for command %d, whose stream it ended with end_stream; "+
				"a function that sends nothing for a command after end_stream never answers it, and the entity then stays busy for good", c.GetId())
		}
		c := m.GetCommand()
		if c == nil {
			t.Fatalf("function got %v, want a unary command", m)
		}
		cmds = append(cmds, c)
		s.reply(t, &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("ok")})
		if len(cmds) == 1 {
			awaitReply(t, u, "ok")
			u = f.unary("a", "next")
		}
	}
	awaitReply(t, u, "ok")

	sc.unblock()
	if err := sc.end(t); statusCode(err) != codes.ResourceExhausted {
		t.Fatalf("slow stream ended with %v, want RESOURCE_EXHAUSTED (it missed its last message)", err)
	}
}

// Fan-out: many clients stream from one entity; each gets every message
// the function pushes, in order; when they leave, each is cancelled once.
func TestFanOutToManySubscribers(t *testing.T) {
	const subscribers, messages = 200, 5
	f := newFixture(t, time.Minute)
	subscribed := make(chan int, subscribers)
	cancelled := make(chan int64, subscribers)
	f.fn.setScript(func(s *ufStream) error {
		var subs []int64
		for m := range s.in {
			var err error
			switch {
			case m.GetCommand() != nil && m.GetCommand().GetStreamed():
				c := m.GetCommand()
				subs = append(subs, c.GetId())
				err = s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: &protocol.CrdtReply{CommandId: c.GetId(), Streamed: true}}})
				subscribed <- len(subs)
			case m.GetCommand() != nil:
				c := m.GetCommand()
				for _, id := range subs {
					if err = s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{StreamedMessage: &protocol.CrdtStreamedMessage{
						CommandId: id, ClientAction: replyOf(string(c.GetPayload().GetValue())),
					}}}); err != nil {
						return err
					}
				}
				err = s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: &protocol.CrdtReply{CommandId: c.GetId(), ClientAction: replyOf("published")}}})
			case m.GetStreamCancelled() != nil:
				id := m.GetStreamCancelled().GetId()
				cancelled <- id
				err = s.send(&protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: &protocol.CrdtStreamCancelledResponse{CommandId: id}}})
			}
			if err != nil {
				return err
			}
		}
		return nil
	})

	subs := make([]*subscriber, subscribers)
	for i := range subs {
		subs[i] = f.subscribe("room", fmt.Sprintf("s%d", i), nil)
	}
	timer := time.NewTimer(waitFor)
	defer timer.Stop()
	for n := 0; n < subscribers; {
		select {
		case n = <-subscribed:
		case <-timer.C:
			t.Fatalf("only %d of %d subscribers reached the function", n, subscribers)
		}
	}
	for i := 0; i < subscribers; i++ {
		subs[i].next(t) // the empty first reply
	}

	for j := 0; j < messages; j++ {
		u := f.unaryCall(route.Call{Method: f.do, EntityID: "room", Payload: msg(fmt.Sprintf("p%d", j))})
		awaitReply(t, u, "published")
	}
	var wg sync.WaitGroup
	errs := make(chan error, subscribers)
	for i, sub := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < messages; j++ {
				select {
				case o := <-sub.outs:
					if got, want := textOf(o), fmt.Sprintf("p%d", j); got != want {
						errs <- fmt.Errorf("subscriber %d got %q, want %q", i, got, want)
						return
					}
				case <-time.After(waitFor):
					errs <- fmt.Errorf("subscriber %d got only %d of %d messages", i, j, messages)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		return
	}

	for _, sub := range subs {
		sub.cancel()
	}
	for i, sub := range subs {
		if err := sub.end(t); statusCode(err) != codes.Canceled {
			t.Fatalf("subscriber %d ended with %v, want CANCELED", i, err)
		}
	}
	seen := map[int64]bool{}
	for len(seen) < subscribers {
		select {
		case id := <-cancelled:
			if seen[id] {
				t.Fatalf("stream_cancelled for command %d twice", id)
			}
			seen[id] = true
		case <-time.After(waitFor):
			t.Fatalf("only %d of %d streams were cancelled", len(seen), subscribers)
		}
	}
	if n := f.fn.streamCount(); n != 1 {
		t.Fatalf("%d entity streams, want 1", n)
	}
}
