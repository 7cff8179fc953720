package main

import (
	"context"
	"net"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/likes/likes"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

// TestDiscovery serves the function as main does and checks what a proxy
// learns: two CRDT entities, with descriptors that resolve on their own.
func TestDiscovery(t *testing.T) {
	srv := sdk.NewServer(sdk.WithServiceName("likes"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterCRDT(likes.NewLikes()); err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterCRDT(likes.NewHotItems()); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, lis) }()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	spec, err := protocol.NewEntityDiscoveryClient(conn).Discover(context.Background(), &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2, SupportedEntityTypes: []string{sdk.CRDTEntityType},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []*protocol.Entity{
		{EntityType: "cloudstate.crdt.Crdt", ServiceName: likes.LikesService, PersistenceId: "likes"},
		{EntityType: "cloudstate.crdt.Crdt", ServiceName: likes.HotItemsService, PersistenceId: "hot-items"},
	}
	if len(spec.GetEntities()) != len(want) {
		t.Fatalf("entities %v", spec.GetEntities())
	}
	for i, w := range want {
		if !proto.Equal(spec.GetEntities()[i], w) {
			t.Errorf("entity %d: %v, want %v", i, spec.GetEntities()[i], w)
		}
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(spec.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName(likes.HotItemsService)
	if err != nil {
		t.Fatal(err)
	}
	if m := d.(protoreflect.ServiceDescriptor).Methods().ByName("WatchHot"); m == nil || !m.IsStreamingServer() {
		t.Fatal("WatchHot is missing or not server-streaming")
	}
}
