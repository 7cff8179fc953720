package main

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	pb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
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
	srv := sdk.NewServer(sdk.WithServiceName("value-shopping-cart"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterValueEntity(cart.New()); err != nil {
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

// TestDiscovery checks what a proxy learns about the cart: a value entity,
// and descriptors that resolve on their own with the entity key and HTTP
// rules.
func TestDiscovery(t *testing.T) {
	conn := serve(t)
	spec, err := protocol.NewEntityDiscoveryClient(conn).Discover(context.Background(), &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
		SupportedEntityTypes: []string{"cloudstate.valueentity.ValueEntity"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := &protocol.Entity{
		EntityType:    "cloudstate.valueentity.ValueEntity",
		ServiceName:   "com.example.valueentity.shoppingcart.ShoppingCart",
		PersistenceId: "value-shopping-cart",
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
	d, err := files.FindDescriptorByName("com.example.valueentity.shoppingcart.ShoppingCart")
	if err != nil {
		t.Fatal(err)
	}
	methods := d.(protoreflect.ServiceDescriptor).Methods()
	for _, m := range []string{"AddItem", "RemoveItem", "GetCart", "RemoveCart"} {
		md := methods.ByName(protoreflect.Name(m))
		if md == nil {
			t.Fatalf("no method %s", m)
		}
		key := md.Input().Fields().ByName("user_id")
		if isKey, _ := proto.GetExtension(key.Options(), protocol.E_EntityKey).(bool); !isKey {
			t.Fatalf("%s is not marked as the entity key", key.FullName())
		}
	}
	rule, _ := proto.GetExtension(methods.ByName("RemoveCart").Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule.GetPost() != "/carts/{user_id}/remove" {
		t.Fatalf("RemoveCart http rule %v", rule)
	}
}

// TestProtocol drives one cart over the value entity protocol as a proxy
// would, starting from a stored cart.
func TestProtocol(t *testing.T) {
	conn := serve(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := protocol.NewValueEntityClient(conn).Handle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	send := func(in *protocol.ValueEntityStreamIn) {
		t.Helper()
		if err := stream.Send(in); err != nil {
			t.Fatal(err)
		}
	}
	command := func(id int64, name string, m proto.Message) *protocol.ValueEntityReply {
		t.Helper()
		payload, err := sdk.MarshalAny(m)
		if err != nil {
			t.Fatal(err)
		}
		send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Command{Command: &protocol.Command{
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
	stored, err := sdk.MarshalAny(&pb.Cart{Items: []*pb.LineItem{{ProductId: "apple", Name: "Apple", Quantity: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	send(&protocol.ValueEntityStreamIn{Message: &protocol.ValueEntityStreamIn_Init{Init: &protocol.ValueEntityInit{
		ServiceName: cart.ServiceName, EntityId: "u1", State: &protocol.ValueEntityInitState{Value: stored},
	}}})

	r := command(1, "AddItem", &pb.AddLineItem{UserId: "u1", ProductId: "apple", Name: "Apple", Quantity: 2})
	var updated pb.Cart
	if err := r.GetStateAction().GetUpdate().GetValue().UnmarshalTo(&updated); err != nil {
		t.Fatalf("AddItem reply %v: %v", r, err)
	}
	if !proto.Equal(&updated, &pb.Cart{Items: []*pb.LineItem{{ProductId: "apple", Name: "Apple", Quantity: 3}}}) {
		t.Fatalf("stored cart %v", &updated)
	}
	r = command(2, "RemoveItem", &pb.RemoveLineItem{UserId: "u1", ProductId: "pear"})
	if f := r.GetClientAction().GetFailure(); f.GetDescription() != "Cannot remove item pear because it is not in the cart" || r.GetStateAction() != nil {
		t.Fatalf("RemoveItem reply %v", r)
	}
	r = command(3, "RemoveCart", &pb.RemoveShoppingCart{UserId: "u1"})
	if r.GetStateAction().GetDelete() == nil {
		t.Fatalf("RemoveCart reply %v", r)
	}
	r = command(4, "GetCart", &pb.GetShoppingCart{UserId: "u1"})
	var got pb.Cart
	if err := r.GetClientAction().GetReply().GetPayload().UnmarshalTo(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.GetItems()) != 0 || r.GetStateAction() != nil {
		t.Fatalf("GetCart after RemoveCart: %v", r)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream end: %v", err)
	}
}
