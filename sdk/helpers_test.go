package sdk_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/crdtmodel"
	"github.com/cloudstate-go/cloudstate/sdk/internal/register"
	"github.com/cloudstate-go/cloudstate/sdk/internal/steps"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// testServer is a running sdk server on a loopback port with a client
// connection to it.
type testServer struct {
	conn   *grpc.ClientConn
	cancel context.CancelFunc
	served chan error
	// waiting and cancelled receive what the steps action's wait step saw.
	waiting   chan string
	cancelled chan error
}

// startServer serves the counter entity, the register value entity, the
// CRDT model entities and the steps action on 127.0.0.1:0 until the test ends.
func startServer(t *testing.T, opts ...sdk.ServerOption) *testServer {
	t.Helper()
	opts = append([]sdk.ServerOption{
		sdk.WithServiceName("sdk-test"), sdk.WithServiceVersion("1.2.3"),
		sdk.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}, opts...)
	srv := sdk.NewServer(opts...)
	if err := srv.RegisterEventSourced(counter.New()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterValueEntity(register.New()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterCRDT(crdtmodel.New()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterCRDT(crdtmodel.NewTwo()); err != nil {
		t.Fatal(err)
	}
	waiting, cancelled := make(chan string, 10), make(chan error, 10)
	if err := srv.RegisterAction(steps.New(steps.Hooks{Waiting: waiting, Cancelled: cancelled})); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{cancel: cancel, served: make(chan error, 1), waiting: waiting, cancelled: cancelled}
	go func() { ts.served <- srv.Serve(ctx, lis) }()
	ts.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ts.conn.Close()
		if err := ts.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// stop ends the server and returns Serve's result; it may be called twice.
func (ts *testServer) stop() error {
	ts.cancel()
	select {
	case err, ok := <-ts.served:
		if ok {
			close(ts.served)
		}
		return err
	case <-time.After(10 * time.Second):
		return errors.New("Serve did not return within 10s")
	}
}

// entityStream is one EventSourced/handle stream to the server.
type entityStream struct {
	t      *testing.T
	stream grpc.BidiStreamingClient[protocol.EventSourcedStreamIn, protocol.EventSourcedStreamOut]
}

func (ts *testServer) open(t *testing.T) *entityStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	stream, err := protocol.NewEventSourcedClient(ts.conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &entityStream{t: t, stream: stream}
}

func (s *entityStream) send(in *protocol.EventSourcedStreamIn) {
	s.t.Helper()
	if err := s.stream.Send(in); err != nil {
		s.t.Fatalf("send: %v", err)
	}
}

func (s *entityStream) init(entityID string, snapshot *protocol.EventSourcedSnapshot) {
	s.t.Helper()
	s.send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Init{Init: &protocol.EventSourcedInit{
		ServiceName: counter.ServiceName, EntityId: entityID, Snapshot: snapshot,
	}}})
}

func (s *entityStream) event(seq int64, ev proto.Message) {
	s.t.Helper()
	s.send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Event{Event: &protocol.EventSourcedEvent{
		Sequence: seq, Payload: mustAny(s.t, ev),
	}}})
}

func (s *entityStream) command(entityID string, id int64, name string, in proto.Message) {
	s.t.Helper()
	s.send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Command{Command: &protocol.Command{
		EntityId: entityID, Id: id, Name: name, Payload: mustAny(s.t, in),
	}}})
}

func (s *entityStream) recv() *protocol.EventSourcedStreamOut {
	s.t.Helper()
	out, err := s.stream.Recv()
	if err != nil {
		s.t.Fatalf("recv: %v", err)
	}
	return out
}

// expect receives one message and compares it with want exactly.
func (s *entityStream) expect(want *protocol.EventSourcedStreamOut) {
	s.t.Helper()
	got := s.recv()
	if !proto.Equal(got, want) {
		s.t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

// expectEnd checks that the server ended the stream; ok tells whether it
// ended it cleanly (io.EOF) or with an error status.
func (s *entityStream) expectEnd(clean bool) {
	s.t.Helper()
	out, err := s.stream.Recv()
	switch {
	case err == nil:
		s.t.Fatalf("want end of stream, got %s", prototext.Format(out))
	case clean && !errors.Is(err, io.EOF):
		s.t.Fatalf("want a clean end of stream, got %v", err)
	case !clean && errors.Is(err, io.EOF):
		s.t.Fatalf("want the stream to end with an error, got a clean end")
	}
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := sdk.MarshalAny(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// replyOut builds the expected reply message.
func replyOut(r *protocol.EventSourcedReply) *protocol.EventSourcedStreamOut {
	return &protocol.EventSourcedStreamOut{Message: &protocol.EventSourcedStreamOut_Reply{Reply: r}}
}

func clientReply(t *testing.T, m proto.Message, md *protocol.Metadata) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: mustAny(t, m), Metadata: md}}}
}

func clientFailure(id int64, description string, restart bool) *protocol.ClientAction {
	return &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{
		CommandId: id, Description: description, Restart: restart,
	}}}
}

func anys(t *testing.T, ms ...proto.Message) []*anypb.Any {
	var out []*anypb.Any
	for _, m := range ms {
		out = append(out, mustAny(t, m))
	}
	return out
}
