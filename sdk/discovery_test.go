package sdk_test

import (
	"context"
	"runtime"
	"slices"
	"testing"

	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/crdtmodel"
	"github.com/cloudstate-go/cloudstate/sdk/internal/register"
	"github.com/cloudstate-go/cloudstate/sdk/internal/steps"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestDiscover(t *testing.T) {
	ts := startServer(t)
	client := protocol.NewEntityDiscoveryClient(ts.conn)
	info := &protocol.ProxyInfo{
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2, ProxyName: "test-proxy", ProxyVersion: "0.0.1",
		SupportedEntityTypes: []string{sdk.EventSourcedEntityType, sdk.ValueEntityType, sdk.CRDTEntityType, sdk.ActionEntityType},
	}
	first, err := client.Discover(context.Background(), info)
	if err != nil {
		t.Fatal(err)
	}
	second, err := client.Discover(context.Background(), info)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(first, second) {
		t.Fatalf("discover answered differently the second time")
	}

	// Every entity type, in registration order; actions have no
	// persistence id or passivation.
	wantEntities := []*protocol.Entity{{
		EntityType:    "cloudstate.eventsourced.EventSourced",
		ServiceName:   counter.ServiceName,
		PersistenceId: "counters",
		PassivationStrategy: &protocol.EntityPassivationStrategy{Strategy: &protocol.EntityPassivationStrategy_Timeout{
			Timeout: &protocol.TimeoutPassivationStrategy{Timeout: 120000},
		}},
	}, {
		EntityType:    "cloudstate.valueentity.ValueEntity",
		ServiceName:   register.ServiceName,
		PersistenceId: "registers",
		PassivationStrategy: &protocol.EntityPassivationStrategy{Strategy: &protocol.EntityPassivationStrategy_Timeout{
			Timeout: &protocol.TimeoutPassivationStrategy{Timeout: 60000},
		}},
	}, {
		// CRDT entities default to the service's full name.
		EntityType:    "cloudstate.crdt.Crdt",
		ServiceName:   crdtmodel.ServiceName,
		PersistenceId: crdtmodel.ServiceName,
	}, {
		EntityType:    "cloudstate.crdt.Crdt",
		ServiceName:   crdtmodel.TwoServiceName,
		PersistenceId: crdtmodel.TwoServiceName,
	}, {
		EntityType:  "cloudstate.action.ActionProtocol",
		ServiceName: steps.ServiceName,
	}}
	if len(first.GetEntities()) != len(wantEntities) {
		t.Fatalf("entities %v, want %v", first.GetEntities(), wantEntities)
	}
	for i, want := range wantEntities {
		if got := first.GetEntities()[i]; !proto.Equal(got, want) {
			t.Errorf("entity %d: %v, want %v", i, prototext.Format(got), prototext.Format(want))
		}
	}
	wantInfo := &protocol.ServiceInfo{
		ServiceName: "sdk-test", ServiceVersion: "1.2.3",
		ServiceRuntime:     runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
		SupportLibraryName: "cloudstate-go-sdk", SupportLibraryVersion: sdk.LibraryVersion,
		ProtocolMajorVersion: 0, ProtocolMinorVersion: 2,
	}
	if !proto.Equal(first.GetServiceInfo(), wantInfo) {
		t.Fatalf("service info %v, want %v", first.GetServiceInfo(), wantInfo)
	}

	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(first.GetProto(), &set); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range set.GetFile() {
		names = append(names, f.GetName())
	}
	for _, want := range []string{
		"sdktest.proto", "register.proto", "steps.proto", "crdtmodel.proto", "cloudstate/entity_key.proto", "google/api/annotations.proto", "google/api/http.proto",
		"google/protobuf/empty.proto", "google/protobuf/descriptor.proto",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("descriptor set lacks %s: %v", want, names)
		}
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	if len(slices.Compact(sorted)) != len(names) {
		t.Errorf("descriptor set repeats a file: %v", names)
	}
	// The set must stand alone: it resolves without the global registry.
	files, err := protodesc.NewFiles(&set)
	if err != nil {
		t.Fatalf("descriptor set does not resolve: %v", err)
	}
	d, err := files.FindDescriptorByName(counter.ServiceName)
	if err != nil {
		t.Fatal(err)
	}
	sd := d.(protoreflect.ServiceDescriptor)
	if sd.Methods().ByName("Add") == nil {
		t.Fatalf("service %s lacks Add", sd.FullName())
	}
	for _, name := range []string{register.ServiceName, steps.ServiceName, crdtmodel.ServiceName, crdtmodel.TwoServiceName} {
		if _, err := files.FindDescriptorByName(protoreflect.FullName(name)); err != nil {
			t.Errorf("descriptor set lacks %s: %v", name, err)
		}
	}
	// The entity key option survives: the proxy needs it to route.
	key := sd.Methods().ByName("Add").Input().Fields().ByName("counter_id")
	if !proto.HasExtension(key.Options(), protocol.E_EntityKey) {
		t.Fatalf("entity_key option lost on %s", key.FullName())
	}
}

func TestReportError(t *testing.T) {
	ts := startServer(t)
	client := protocol.NewEntityDiscoveryClient(ts.conn)
	if _, err := client.ReportError(context.Background(), &protocol.UserFunctionError{Message: "Service [x] unknown"}); err != nil {
		t.Fatal(err)
	}
}
