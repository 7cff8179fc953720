package main

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/presence/presence"
	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// serve runs the presence user function on a loopback port, as main does,
// and returns a client connection to it.
func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	srv := sdk.NewServer(sdk.WithServiceName("chat-presence"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterCRDT(presence.New()); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn
}

func TestDiscovery(t *testing.T) {
	spec, err := protocol.NewEntityDiscoveryClient(serve(t)).Discover(context.Background(), &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2, SupportedEntityTypes: []string{sdk.CRDTEntityType},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &protocol.Entity{EntityType: "cloudstate.crdt.Crdt", ServiceName: presence.ServiceName, PersistenceId: "presence"}
	if len(spec.GetEntities()) != 1 || !proto.Equal(spec.GetEntities()[0], want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
}

// TestProtocol plays the proxy on the Crdt stream: the exact messages of a
// monitor, two connections and their cancellations.
func TestProtocol(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := protocol.NewCrdtClient(serve(t)).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *protocol.CrdtStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	command := func(id int64, name string) {
		t.Helper()
		payload, err := anypb.New(&pb.User{Name: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Command{Command: &protocol.Command{
			EntityId: "alice", Id: id, Name: name, Payload: payload, Streamed: true,
		}}})
	}
	cancelStream := func(id int64) {
		t.Helper()
		send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_StreamCancelled{StreamCancelled: &protocol.StreamCancelled{EntityId: "alice", Id: id}}})
	}
	expect := func(want *protocol.CrdtStreamOut) {
		t.Helper()
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
		}
	}
	status := func(online bool) *protocol.ClientAction {
		payload, err := anypb.New(&pb.OnlineStatus{Online: online})
		if err != nil {
			t.Fatal(err)
		}
		return &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{Payload: payload}}}
	}
	vote := func(self bool) *protocol.CrdtStateAction {
		return &protocol.CrdtStateAction{Action: &protocol.CrdtStateAction_Update{Update: &protocol.CrdtDelta{
			Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{SelfVote: self}},
		}}}
	}
	reply := func(r *protocol.CrdtReply) *protocol.CrdtStreamOut {
		return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_Reply{Reply: r}}
	}
	streamed := func(id int64, online bool) *protocol.CrdtStreamOut {
		return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamedMessage{StreamedMessage: &protocol.CrdtStreamedMessage{
			CommandId: id, ClientAction: status(online),
		}}}
	}
	cancelled := func(id int64, action *protocol.CrdtStateAction) *protocol.CrdtStreamOut {
		return &protocol.CrdtStreamOut{Message: &protocol.CrdtStreamOut_StreamCancelledResponse{StreamCancelledResponse: &protocol.CrdtStreamCancelledResponse{
			CommandId: id, StateAction: action,
		}}}
	}

	send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Init{Init: &protocol.CrdtInit{ServiceName: presence.ServiceName, EntityId: "alice"}}})
	command(1, "Monitor")
	expect(reply(&protocol.CrdtReply{CommandId: 1, ClientAction: status(false), Streamed: true}))
	command(2, "Connect")
	expect(reply(&protocol.CrdtReply{CommandId: 2, StateAction: vote(true), Streamed: true}))
	expect(streamed(1, true))
	command(3, "Connect")
	expect(reply(&protocol.CrdtReply{CommandId: 3, Streamed: true}))
	cancelStream(2)
	expect(cancelled(2, nil))
	cancelStream(3)
	expect(cancelled(3, vote(false)))
	expect(streamed(1, false))
	// The proxy learns that another node voted yes.
	send(&protocol.CrdtStreamIn{Message: &protocol.CrdtStreamIn_Delta{Delta: &protocol.CrdtDelta{
		Delta: &protocol.CrdtDelta_Vote{Vote: &protocol.VoteDelta{VotesFor: 1, TotalVoters: 2}},
	}}})
	expect(streamed(1, true))
	cancelStream(1)
	expect(cancelled(1, nil))
}
