package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	pb "github.com/cloudstate-go/cloudstate/samples/cartactions/cartactionspb"
	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	cartpb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// serve runs the user function on a loopback port, as main does, and
// returns a client connection to it.
func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	srv := sdk.NewServer(sdk.WithServiceName("cart-actions"), sdk.WithServiceVersion("0.1.0"))
	if err := register(srv); err != nil {
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

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := sdk.MarshalAny(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func expect(t *testing.T, got, want *protocol.ActionResponse) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Fatalf("got  %s\nwant %s", prototext.Format(got), prototext.Format(want))
	}
}

func reply(t *testing.T, m proto.Message) *protocol.ActionResponse {
	return &protocol.ActionResponse{Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: mustAny(t, m)}}}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDiscovery(t *testing.T) {
	spec, err := protocol.NewEntityDiscoveryClient(serve(t)).Discover(callCtx(t), &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*protocol.Entity{
		{EntityType: "cloudstate.action.ActionProtocol", ServiceName: "com.example.cartactions.CartActions"},
		{EntityType: "cloudstate.valueentity.ValueEntity", ServiceName: cart.ServiceName, PersistenceId: cart.PersistenceID},
	}
	if len(spec.GetEntities()) != len(want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	for i := range want {
		if !proto.Equal(spec.GetEntities()[i], want[i]) {
			t.Fatalf("entity %d: %v, want %v", i, spec.GetEntities()[i], want[i])
		}
	}
}

// TestProtocol makes one call of each shape as the proxy would.
func TestProtocol(t *testing.T) {
	client := protocol.NewActionProtocolClient(serve(t))

	t.Run("unary Checkout", func(t *testing.T) {
		got, err := client.HandleUnary(callCtx(t), &protocol.ActionCommand{
			ServiceName: ServiceName, Name: "Checkout", Payload: mustAny(t, &pb.CheckoutRequest{UserId: "alice"}),
		})
		if err != nil {
			t.Fatal(err)
		}
		expect(t, got, &protocol.ActionResponse{Response: &protocol.ActionResponse_Forward{Forward: &protocol.Forward{
			ServiceName: cart.ServiceName, CommandName: "RemoveCart", Payload: mustAny(t, &cartpb.RemoveShoppingCart{UserId: "alice"}),
		}}})
	})

	t.Run("client-streaming AddItems", func(t *testing.T) {
		stream, err := client.HandleStreamedIn(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []*protocol.ActionCommand{
			{ServiceName: ServiceName, Name: "AddItems"},
			{Payload: mustAny(t, &pb.AddLineItem{UserId: "alice", ProductId: "apple", Name: "Apple", Quantity: 2})},
			{Payload: mustAny(t, &pb.AddLineItem{UserId: "alice", ProductId: "pear", Name: "Pear", Quantity: 1})},
		} {
			if err := stream.Send(cmd); err != nil {
				t.Fatal(err)
			}
		}
		got, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		want := reply(t, &pb.Summary{Lines: 2, TotalQuantity: 3})
		for _, line := range []*cartpb.AddLineItem{
			{UserId: "alice", ProductId: "apple", Name: "Apple", Quantity: 2},
			{UserId: "alice", ProductId: "pear", Name: "Pear", Quantity: 1},
		} {
			want.SideEffects = append(want.SideEffects, &protocol.SideEffect{
				ServiceName: cart.ServiceName, CommandName: "AddItem", Payload: mustAny(t, line), Synchronous: true,
			})
		}
		expect(t, got, want)
	})

	t.Run("server-streaming Countdown", func(t *testing.T) {
		stream, err := client.HandleStreamedOut(callCtx(t), &protocol.ActionCommand{
			ServiceName: ServiceName, Name: "Countdown", Payload: mustAny(t, &pb.CountdownRequest{From: 2, IntervalMs: 1}),
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int32{2, 1, 0} {
			got, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			expect(t, got, reply(t, &pb.Tick{Remaining: n}))
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	})

	t.Run("bidi Echo", func(t *testing.T) {
		stream, err := client.HandleStreamed(callCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&protocol.ActionCommand{ServiceName: ServiceName, Name: "Echo"}); err != nil {
			t.Fatal(err)
		}
		// Each answer arrives before the next message is sent.
		for _, c := range []struct{ say, hear string }{{"hello", "echo: hello"}, {"bye", "bye!"}} {
			if err := stream.Send(&protocol.ActionCommand{Payload: mustAny(t, &pb.ChatMessage{Text: c.say})}); err != nil {
				t.Fatal(err)
			}
			got, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			expect(t, got, reply(t, &pb.ChatMessage{Text: c.hear}))
		}
		// "bye" ended the call from the function's side.
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Fatalf("end of stream: %v", err)
		}
	})
}
