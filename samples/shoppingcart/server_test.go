package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// serve runs the cart user function on a loopback port, as main does, and
// returns a client connection to it.
func serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	srv := sdk.NewServer(sdk.WithServiceName("shopping-cart"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterEventSourced(NewEntity()); err != nil {
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

// TestDiscovery checks what a proxy learns about the cart: the entity, and
// descriptors that resolve on their own with the entity key and HTTP rules.
func TestDiscovery(t *testing.T) {
	conn := serve(t)
	spec, err := protocol.NewEntityDiscoveryClient(conn).Discover(context.Background(), &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
		SupportedEntityTypes: []string{"cloudstate.eventsourced.EventSourced"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &protocol.Entity{
		EntityType:    "cloudstate.eventsourced.EventSourced",
		ServiceName:   "com.example.shoppingcart.ShoppingCart",
		PersistenceId: "shopping-cart",
	}
	if len(spec.GetEntities()) != 1 || !proto.Equal(spec.GetEntities()[0], want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("com.example.shoppingcart.ShoppingCart")
	if err != nil {
		t.Fatal(err)
	}
	// The event and snapshot types are described too, so stored events can
	// be shown as JSON.
	for _, name := range []protoreflect.FullName{"com.example.shoppingcart.domain.ItemAdded", "com.example.shoppingcart.domain.ItemRemoved", "com.example.shoppingcart.domain.CartState"} {
		if _, err := files.FindDescriptorByName(name); err != nil {
			t.Errorf("descriptor set lacks %s: %v", name, err)
		}
	}
	getCart := d.(protoreflect.ServiceDescriptor).Methods().ByName("GetCart")
	rule, _ := proto.GetExtension(getCart.Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule.GetGet() != "/carts/{user_id}" || len(rule.GetAdditionalBindings()) != 1 ||
		rule.GetAdditionalBindings()[0].GetResponseBody() != "items" {
		t.Fatalf("GetCart http rule %v", rule)
	}
	key := getCart.Input().Fields().ByName("user_id")
	if isKey, _ := proto.GetExtension(key.Options(), protocol.E_EntityKey).(bool); !isKey {
		t.Fatalf("%s is not marked as the entity key", key.FullName())
	}
}

// TestProtocol drives one cart over the event-sourced protocol as a proxy
// would.
func TestProtocol(t *testing.T) {
	conn := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := protocol.NewEventSourcedClient(conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *protocol.EventSourcedStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	command := func(id int64, name string, m proto.Message) *protocol.EventSourcedReply {
		t.Helper()
		payload, err := sdk.MarshalAny(m)
		if err != nil {
			t.Fatal(err)
		}
		send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Command{Command: &protocol.Command{
			EntityId: "u1", Id: id, Name: name, Payload: payload,
		}}})
		out, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if out.GetReply().GetCommandId() != id {
			t.Fatalf("reply %v to command %d", out, id)
		}
		return out.GetReply()
	}
	event, err := sdk.MarshalAny(&pb.ItemAdded{Item: item("apple", "Apple", 1)})
	if err != nil {
		t.Fatal(err)
	}
	send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Init{Init: &protocol.EventSourcedInit{
		ServiceName: "com.example.shoppingcart.ShoppingCart", EntityId: "u1",
	}}})
	send(&protocol.EventSourcedStreamIn{Message: &protocol.EventSourcedStreamIn_Event{Event: &protocol.EventSourcedEvent{Sequence: 1, Payload: event}}})

	r := command(1, "AddItem", &pb.AddLineItem{UserId: "u1", ProductId: "apple", Name: "Apple", Quantity: 2})
	if len(r.GetEvents()) != 1 || r.GetClientAction().GetReply().GetPayload().GetTypeUrl() != "type.googleapis.com/google.protobuf.Empty" {
		t.Fatalf("AddItem reply %v", r)
	}
	r = command(2, "RemoveItem", &pb.RemoveLineItem{UserId: "u1", ProductId: "pear"})
	if f := r.GetClientAction().GetFailure(); f.GetDescription() != "Cannot remove item pear because it is not in the cart" || f.GetRestart() {
		t.Fatalf("RemoveItem reply %v", r)
	}
	r = command(3, "GetCart", &pb.GetShoppingCart{UserId: "u1"})
	var cart pb.Cart
	if err := r.GetClientAction().GetReply().GetPayload().UnmarshalTo(&cart); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&cart, &pb.Cart{Items: []*pb.LineItem{item("apple", "Apple", 3)}}) {
		t.Fatalf("cart %v", &cart)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
}
