package discovery

import (
	"context"
	"log/slog"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// Descriptor fixtures, written the way protoc would emit them for:
//
//	// example/cart.proto
//	syntax = "proto3";
//	package com.example.cart;
//	import "cloudstate/entity_key.proto";
//	import "google/protobuf/empty.proto";
//	message AddLineItem { string user_id = 1 [(.cloudstate.entity_key) = true]; string product_id = 2; int32 quantity = 3; }
//	message GetShoppingCart { string user_id = 1 [(.cloudstate.entity_key) = true]; }
//	message Cart { repeated string items = 1; }
//	service ShoppingCart {
//	  rpc AddItem(AddLineItem) returns (google.protobuf.Empty);
//	  rpc GetCart(GetShoppingCart) returns (Cart);
//	}

type fieldOpt func(*descriptorpb.FieldDescriptorProto)

func field(name string, number int32, typ descriptorpb.FieldDescriptorProto_Type, opts ...fieldOpt) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name:     proto.String(name),
		Number:   proto.Int32(number),
		Type:     typ.Enum(),
		Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
		JsonName: proto.String(name),
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

func withOptions(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FieldOptions {
	if f.Options == nil {
		f.Options = &descriptorpb.FieldOptions{}
	}
	return f.Options
}

// key marks a field with (cloudstate.entity_key) = true.
func key(f *descriptorpb.FieldDescriptorProto) {
	proto.SetExtension(withOptions(f), protocol.E_EntityKey, true)
}

// legacyKey marks a field with (cloudstate.legacy_entity_key) = true.
func legacyKey(f *descriptorpb.FieldDescriptorProto) {
	proto.SetExtension(withOptions(f), protocol.E_LegacyEntityKey, true)
}

func repeated(f *descriptorpb.FieldDescriptorProto) {
	f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
}

func typeName(name string) fieldOpt {
	return func(f *descriptorpb.FieldDescriptorProto) { f.TypeName = proto.String(name) }
}

func message(name string, fields ...*descriptorpb.FieldDescriptorProto) *descriptorpb.DescriptorProto {
	return &descriptorpb.DescriptorProto{Name: proto.String(name), Field: fields}
}

func method(name, input, output string, clientStreaming, serverStreaming bool) *descriptorpb.MethodDescriptorProto {
	m := &descriptorpb.MethodDescriptorProto{Name: proto.String(name), InputType: proto.String(input), OutputType: proto.String(output)}
	if clientStreaming {
		m.ClientStreaming = proto.Bool(true)
	}
	if serverStreaming {
		m.ServerStreaming = proto.Bool(true)
	}
	return m
}

func service(name string, methods ...*descriptorpb.MethodDescriptorProto) *descriptorpb.ServiceDescriptorProto {
	return &descriptorpb.ServiceDescriptorProto{Name: proto.String(name), Method: methods}
}

func userFile(name, pkg string, deps []string, msgs []*descriptorpb.DescriptorProto, svcs ...*descriptorpb.ServiceDescriptorProto) *descriptorpb.FileDescriptorProto {
	return &descriptorpb.FileDescriptorProto{
		Name:        proto.String(name),
		Package:     proto.String(pkg),
		Dependency:  deps,
		MessageType: msgs,
		Service:     svcs,
		Syntax:      proto.String("proto3"),
	}
}

const (
	tString = descriptorpb.FieldDescriptorProto_TYPE_STRING
	tInt32  = descriptorpb.FieldDescriptorProto_TYPE_INT32
)

func descriptorFileProto() *descriptorpb.FileDescriptorProto {
	return protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto)
}

func emptyFileProto() *descriptorpb.FileDescriptorProto {
	return protodesc.ToFileDescriptorProto(emptypb.File_google_protobuf_empty_proto)
}

func entityKeyFileProto() *descriptorpb.FileDescriptorProto {
	return protodesc.ToFileDescriptorProto(protocol.File_cloudstate_entity_key_proto)
}

func legacyKeyFileProto() *descriptorpb.FileDescriptorProto {
	return protodesc.ToFileDescriptorProto(protocol.File_cloudstate_legacy_entity_key_proto)
}

// cartFile is example/cart.proto above.
func cartFile() *descriptorpb.FileDescriptorProto {
	return userFile("example/cart.proto", "com.example.cart",
		[]string{"cloudstate/entity_key.proto", "google/protobuf/empty.proto"},
		[]*descriptorpb.DescriptorProto{
			message("AddLineItem", field("user_id", 1, tString, key), field("product_id", 2, tString), field("quantity", 3, tInt32)),
			message("GetShoppingCart", field("user_id", 1, tString, key)),
			message("Cart", field("items", 1, tString, repeated)),
		},
		service("ShoppingCart",
			method("AddItem", ".com.example.cart.AddLineItem", ".google.protobuf.Empty", false, false),
			method("GetCart", ".com.example.cart.GetShoppingCart", ".com.example.cart.Cart", false, false)))
}

// cartFiles is a complete descriptor set for cartFile, listed the way the Go
// support library does: a file before its imports.
func cartFiles() []*descriptorpb.FileDescriptorProto {
	return []*descriptorpb.FileDescriptorProto{cartFile(), entityKeyFileProto(), emptyFileProto(), descriptorFileProto()}
}

func marshalSet(t testing.TB, files []*descriptorpb.FileDescriptorProto) []byte {
	t.Helper()
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatalf("marshal descriptor set: %v", err)
	}
	return b
}

func serviceInfo(major, minor int32) *protocol.ServiceInfo {
	return &protocol.ServiceInfo{
		ServiceName:           "cart",
		SupportLibraryName:    "cloudstate-go-support",
		SupportLibraryVersion: "0.2.0",
		ProtocolMajorVersion:  major,
		ProtocolMinorVersion:  minor,
	}
}

func entity(entityType, serviceName, persistenceID string) *protocol.Entity {
	return &protocol.Entity{EntityType: entityType, ServiceName: serviceName, PersistenceId: persistenceID}
}

func newSpec(t testing.TB, files []*descriptorpb.FileDescriptorProto, entities ...*protocol.Entity) *protocol.EntitySpec {
	return &protocol.EntitySpec{Proto: marshalSet(t, files), Entities: entities, ServiceInfo: serviceInfo(0, 2)}
}

func cartSpec(t testing.TB) *protocol.EntitySpec {
	return newSpec(t, cartFiles(), entity(EventSourced, "com.example.cart.ShoppingCart", "shopping-cart"))
}

var allTypes = []string{EventSourced, ValueEntity, CRDT, Action}

// logRecorder is a slog.Handler that keeps every record, for asserting what
// was logged.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
	notify  chan slog.Level // receives each record's level without blocking
}

func newLogRecorder() *logRecorder {
	return &logRecorder{notify: make(chan slog.Level, 100)}
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }

func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.records = append(r.records, rec)
	r.mu.Unlock()
	select {
	case r.notify <- rec.Level:
	default:
	}
	return nil
}

// count returns how many records at level were logged.
func (r *logRecorder) count(level slog.Level) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Level == level {
			n++
		}
	}
	return n
}
