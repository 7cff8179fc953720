package ingress

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	rpbalpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/internal/call"
	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/protocol"
)

// testModel builds a model over a hand-written user file that imports the
// entity key, google.protobuf.Empty and descriptor.proto, plus a second
// user file, so the sorted service order differs from declaration order.
func testModel(t *testing.T) *discovery.Model {
	t.Helper()
	keyOpts := &descriptorpb.FieldOptions{}
	proto.SetExtension(keyOpts, protocol.E_EntityKey, true)
	shop := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("shop/shop.proto"),
		Package:    proto.String("com.example.shop"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"cloudstate/entity_key.proto", "google/protobuf/empty.proto", "google/protobuf/descriptor.proto"},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("AddLineItem"),
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("cart_id"), JsonName: proto.String("cartId"), Number: proto.Int32(1), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Options: keyOpts},
				{Name: proto.String("kind"), JsonName: proto.String("kind"), Number: proto.Int32(2), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), TypeName: proto.String(".com.example.shop.Kind")},
				{Name: proto.String("detail"), JsonName: proto.String("detail"), Number: proto.Int32(3), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".com.example.shop.AddLineItem.Detail")},
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name: proto.String("Detail"),
				Field: []*descriptorpb.FieldDescriptorProto{
					{Name: proto.String("note"), JsonName: proto.String("note"), Number: proto.Int32(1), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()},
				},
			}},
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("KIND_BOOK"), Number: proto.Int32(1)},
			},
		}},
		Extension: []*descriptorpb.FieldDescriptorProto{{
			Name: proto.String("shop_hint"), JsonName: proto.String("shopHint"), Number: proto.Int32(50100),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
			Extendee: proto.String(".google.protobuf.MethodOptions"),
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{
			{
				Name: proto.String("ShoppingCart"),
				Method: []*descriptorpb.MethodDescriptorProto{
					{Name: proto.String("AddItem"), InputType: proto.String(".com.example.shop.AddLineItem"), OutputType: proto.String(".google.protobuf.Empty")},
					{Name: proto.String("WatchCart"), InputType: proto.String(".com.example.shop.AddLineItem"), OutputType: proto.String(".google.protobuf.Empty"), ServerStreaming: proto.Bool(true)},
				},
			},
			{
				Name: proto.String("Admin"),
				Method: []*descriptorpb.MethodDescriptorProto{
					{Name: proto.String("Reset"), InputType: proto.String(".google.protobuf.Empty"), OutputType: proto.String(".google.protobuf.Empty")},
				},
			},
		},
	}
	tools := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("alpha/tools.proto"),
		Package:    proto.String("alpha"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{
			Name: proto.String("Tools"),
			Method: []*descriptorpb.MethodDescriptorProto{
				{Name: proto.String("Ping"), InputType: proto.String(".google.protobuf.Empty"), OutputType: proto.String(".google.protobuf.Empty")},
			},
		}},
	}
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(descriptorpb.File_google_protobuf_descriptor_proto),
		protodesc.ToFileDescriptorProto(emptypb.File_google_protobuf_empty_proto),
		protodesc.ToFileDescriptorProto(protocol.File_cloudstate_entity_key_proto),
		shop,
		tools,
	}}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatalf("build files: %v", err)
	}
	m := &discovery.Model{
		Files:      files,
		FileProtos: set.File,
		Services:   map[string]*discovery.Service{},
		// Deliberately unsorted: the order on the wire must not depend on it.
		ServiceNames: []string{"com.example.shop.ShoppingCart", "alpha.Tools", "com.example.shop.Admin"},
	}
	for _, name := range m.ServiceNames {
		m.Services[name] = &discovery.Service{Name: name}
	}
	return m
}

// reflectionStream sends one request and returns the response, always in
// v1 types whatever the stream's version.
type reflectionStream func(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse

// startReflection serves r on a real socket and returns a client connection.
func startReflection(t *testing.T, r *Reflection) *grpc.ClientConn {
	t.Helper()
	conn, _ := startReflectionAt(t, r)
	return conn
}

// startReflectionAt is startReflection that also returns the address.
func startReflectionAt(t *testing.T, r *Reflection) (*grpc.ClientConn, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	r.Register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, lis.Addr().String()
}

// openStream opens one reflection stream of the given version ("v1" or
// "v1alpha") and returns a request/response helper for it.
func openStream(t *testing.T, conn *grpc.ClientConn, version string) reflectionStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	switch version {
	case "v1":
		stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return func(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
			t.Helper()
			if err := stream.Send(req); err != nil {
				t.Fatalf("send: %v", err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			return resp
		}
	case "v1alpha":
		stream, err := rpbalpha.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return func(t *testing.T, req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
			t.Helper()
			alphaReq := new(rpbalpha.ServerReflectionRequest)
			if err := convertMessage(req, alphaReq); err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(alphaReq); err != nil {
				t.Fatalf("send: %v", err)
			}
			alphaResp, err := stream.Recv()
			if err != nil {
				t.Fatalf("recv: %v", err)
			}
			resp := new(rpb.ServerReflectionResponse)
			if err := convertMessage(alphaResp, resp); err != nil {
				t.Fatal(err)
			}
			return resp
		}
	}
	t.Fatalf("unknown version %q", version)
	return nil
}

var versions = []struct {
	name string
	self string
}{
	{"v1alpha", reflectionV1AlphaName},
	{"v1", reflectionV1Name},
}

func listReq(host string) *rpb.ServerReflectionRequest {
	return &rpb.ServerReflectionRequest{Host: host, MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}}
}

func symbolReq(symbol string) *rpb.ServerReflectionRequest {
	return &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}}
}

func filenameReq(name string) *rpb.ServerReflectionRequest {
	return &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: name}}
}

func extensionReq(extendee string, number int32) *rpb.ServerReflectionRequest {
	return &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingExtension{
		FileContainingExtension: &rpb.ExtensionRequest{ContainingType: extendee, ExtensionNumber: number},
	}}
}

func extensionNumbersReq(extendee string) *rpb.ServerReflectionRequest {
	return &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_AllExtensionNumbersOfType{AllExtensionNumbersOfType: extendee}}
}

func serviceNames(t *testing.T, resp *rpb.ServerReflectionResponse) []string {
	t.Helper()
	list := resp.GetListServicesResponse()
	if list == nil {
		t.Fatalf("want list_services_response, got %v", resp)
	}
	var names []string
	for _, s := range list.GetService() {
		names = append(names, s.GetName())
	}
	return names
}

// fileNames decodes a file_descriptor_response and returns the file names
// in order, failing on any other kind of response.
func fileNames(t *testing.T, resp *rpb.ServerReflectionResponse) []string {
	t.Helper()
	fdr := resp.GetFileDescriptorResponse()
	if fdr == nil {
		t.Fatalf("want file_descriptor_response, got %v", resp)
	}
	names := []string{}
	for _, b := range fdr.GetFileDescriptorProto() {
		fp := new(descriptorpb.FileDescriptorProto)
		if err := proto.Unmarshal(b, fp); err != nil {
			t.Fatalf("decode file: %v", err)
		}
		names = append(names, fp.GetName())
	}
	return names
}

func TestReflectionListAndEcho(t *testing.T) {
	m := testModel(t)
	conn := startReflection(t, NewReflection(func() *discovery.Model { return m }))
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			call := openStream(t, conn, v.name)
			for _, host := range []string{"", "localhost:9000", "any.host"} {
				req := listReq(host)
				resp := call(t, req)
				want := []string{v.self, "alpha.Tools", "com.example.shop.Admin", "com.example.shop.ShoppingCart"}
				if got := serviceNames(t, resp); !slices.Equal(got, want) {
					t.Errorf("host %q: services = %v, want %v", host, got, want)
				}
				if resp.GetValidHost() != host {
					t.Errorf("valid_host = %q, want %q", resp.GetValidHost(), host)
				}
				if !proto.Equal(resp.GetOriginalRequest(), req) {
					t.Errorf("original_request = %v, want %v", resp.GetOriginalRequest(), req)
				}
			}
			req := symbolReq("com.example.shop.Kind")
			req.Host = "h"
			resp := call(t, req)
			if resp.GetValidHost() != "h" || !proto.Equal(resp.GetOriginalRequest(), req) {
				t.Errorf("file response does not echo the request: %v", resp)
			}
		})
	}
}

func TestReflectionFileContainingSymbolSendsDependenciesOnce(t *testing.T) {
	m := testModel(t)
	conn := startReflection(t, NewReflection(func() *discovery.Model { return m }))
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			call := openStream(t, conn, v.name)
			got := fileNames(t, call(t, symbolReq("com.example.shop.ShoppingCart")))
			if len(got) == 0 || got[0] != "shop/shop.proto" {
				t.Fatalf("files = %v, want shop/shop.proto first", got)
			}
			wantSet := []string{"cloudstate/entity_key.proto", "google/protobuf/descriptor.proto", "google/protobuf/empty.proto", "shop/shop.proto"}
			sorted := slices.Sorted(slices.Values(got))
			if !slices.Equal(sorted, wantSet) {
				t.Errorf("files = %v, want each of %v exactly once", got, wantSet)
			}

			// Same stream: the requested file again, its imports not resent.
			if got := fileNames(t, call(t, symbolReq("com.example.shop.AddLineItem"))); !slices.Equal(got, []string{"shop/shop.proto"}) {
				t.Errorf("second request files = %v, want only shop/shop.proto", got)
			}
			// A file sharing imports with what was sent brings only itself.
			if got := fileNames(t, call(t, symbolReq("alpha.Tools"))); !slices.Equal(got, []string{"alpha/tools.proto"}) {
				t.Errorf("alpha.Tools files = %v, want only alpha/tools.proto", got)
			}
			// A new stream starts afresh.
			fresh := openStream(t, conn, v.name)
			if got := fileNames(t, fresh(t, symbolReq("alpha.Tools"))); !slices.Equal(got, []string{"alpha/tools.proto", "google/protobuf/empty.proto"}) {
				t.Errorf("fresh stream alpha.Tools files = %v, want tools then empty", got)
			}

			// The bytes are the descriptor set's file, intact.
			shop := fileNames(t, fresh(t, filenameReq("shop/shop.proto")))
			if shop[0] != "shop/shop.proto" {
				t.Fatalf("file_by_filename = %v", shop)
			}
		})
	}
}

func TestReflectionSymbolKinds(t *testing.T) {
	m := testModel(t)
	conn := startReflection(t, NewReflection(func() *discovery.Model { return m }))
	cases := []struct {
		symbol string
		file   string
	}{
		{"com.example.shop.ShoppingCart", "shop/shop.proto"},
		{"com.example.shop.ShoppingCart.AddItem", "shop/shop.proto"},
		{"com.example.shop.AddLineItem", "shop/shop.proto"},
		{"com.example.shop.AddLineItem.cart_id", "shop/shop.proto"},
		{"com.example.shop.AddLineItem.Detail", "shop/shop.proto"},
		{"com.example.shop.AddLineItem.Detail.note", "shop/shop.proto"},
		{"com.example.shop.Kind", "shop/shop.proto"},
		{"com.example.shop.KIND_BOOK", "shop/shop.proto"},
		{"com.example.shop.shop_hint", "shop/shop.proto"},
		{"cloudstate.entity_key", "cloudstate/entity_key.proto"},
		{"google.protobuf.Empty", "google/protobuf/empty.proto"},
		{"alpha.Tools.Ping", "alpha/tools.proto"},
		{"grpc.reflection.v1alpha.ServerReflection", "grpc/reflection/v1alpha/reflection.proto"},
		{"grpc.reflection.v1.ServerReflection", "grpc/reflection/v1/reflection.proto"},
	}
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			call := openStream(t, conn, v.name)
			for _, c := range cases {
				got := fileNames(t, call(t, symbolReq(c.symbol)))
				if len(got) == 0 || got[0] != c.file {
					t.Errorf("symbol %s: files = %v, want %s first", c.symbol, got, c.file)
				}
			}
			for _, unknown := range []string{"no.such.Thing", "com.example.shop.ShoppingCart.Nope", "", "com.example"} {
				if got := fileNames(t, call(t, symbolReq(unknown))); len(got) != 0 {
					t.Errorf("unknown symbol %q: files = %v, want an empty response", unknown, got)
				}
			}
			if got := fileNames(t, call(t, filenameReq("no/such.proto"))); len(got) != 0 {
				t.Errorf("unknown file: files = %v, want an empty response", got)
			}
			// The stream is still usable after unknown lookups.
			if got := serviceNames(t, call(t, listReq(""))); got[0] != v.self {
				t.Errorf("services after unknowns = %v", got)
			}
		})
	}
}

func TestReflectionExtensions(t *testing.T) {
	m := testModel(t)
	conn := startReflection(t, NewReflection(func() *discovery.Model { return m }))
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			call := openStream(t, conn, v.name)
			if got := fileNames(t, call(t, extensionReq("google.protobuf.FieldOptions", 1080))); len(got) == 0 || got[0] != "cloudstate/entity_key.proto" {
				t.Errorf("extension 1080: files = %v", got)
			}
			if got := fileNames(t, call(t, extensionReq("google.protobuf.MethodOptions", 50100))); len(got) == 0 || got[0] != "shop/shop.proto" {
				t.Errorf("extension 50100: files = %v", got)
			}
			for _, unknown := range []*rpb.ServerReflectionRequest{
				extensionReq("google.protobuf.FieldOptions", 1081),
				extensionReq("no.such.Type", 1080),
			} {
				if got := fileNames(t, call(t, unknown)); len(got) != 0 {
					t.Errorf("unknown extension %v: files = %v, want empty", unknown, got)
				}
			}

			numbers := func(extendee string) []int32 {
				resp := call(t, extensionNumbersReq(extendee))
				r := resp.GetAllExtensionNumbersResponse()
				if r == nil {
					t.Fatalf("want all_extension_numbers_response, got %v", resp)
				}
				if r.GetBaseTypeName() != extendee {
					t.Errorf("base_type_name = %q, want %q", r.GetBaseTypeName(), extendee)
				}
				return r.GetExtensionNumber()
			}
			if got := numbers("google.protobuf.FieldOptions"); !slices.Equal(got, []int32{1080}) {
				t.Errorf("FieldOptions extensions = %v, want [1080]", got)
			}
			if got := numbers("google.protobuf.MethodOptions"); !slices.Equal(got, []int32{50100}) {
				t.Errorf("MethodOptions extensions = %v, want [50100]", got)
			}
			if got := numbers("no.such.Type"); len(got) != 0 {
				t.Errorf("unknown type extensions = %v, want none", got)
			}
		})
	}
}

func TestReflectionBeforeDiscovery(t *testing.T) {
	var current atomic.Pointer[discovery.Model]
	conn := startReflection(t, NewReflection(current.Load))
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			current.Store(nil)
			call := openStream(t, conn, v.name)
			if got := serviceNames(t, call(t, listReq(""))); !slices.Equal(got, []string{v.self}) {
				t.Errorf("services before discovery = %v, want only %s", got, v.self)
			}
			if got := fileNames(t, call(t, symbolReq("com.example.shop.ShoppingCart"))); len(got) != 0 {
				t.Errorf("symbol before discovery: files = %v, want empty", got)
			}
			if got := fileNames(t, call(t, filenameReq("shop/shop.proto"))); len(got) != 0 {
				t.Errorf("file before discovery: files = %v, want empty", got)
			}
			if got := call(t, extensionNumbersReq("google.protobuf.FieldOptions")).GetAllExtensionNumbersResponse(); got == nil || len(got.GetExtensionNumber()) != 0 {
				t.Errorf("extension numbers before discovery = %v, want an empty list", got)
			}

			// Discovery succeeds while the stream is open.
			current.Store(testModel(t))
			want := []string{v.self, "alpha.Tools", "com.example.shop.Admin", "com.example.shop.ShoppingCart"}
			if got := serviceNames(t, call(t, listReq(""))); !slices.Equal(got, want) {
				t.Errorf("services after discovery = %v, want %v", got, want)
			}
			if got := fileNames(t, call(t, symbolReq("com.example.shop.ShoppingCart"))); len(got) != 4 {
				t.Errorf("symbol after discovery: files = %v, want the file and its 3 imports", got)
			}
		})
	}
}

func TestReflectionRequestWithoutKind(t *testing.T) {
	m := testModel(t)
	conn := startReflection(t, NewReflection(func() *discovery.Model { return m }))
	for _, v := range versions {
		t.Run(v.name, func(t *testing.T) {
			call := openStream(t, conn, v.name)
			resp := call(t, &rpb.ServerReflectionRequest{Host: "x"})
			if e := resp.GetErrorResponse(); e == nil || codes.Code(e.GetErrorCode()) != codes.InvalidArgument {
				t.Errorf("empty request: got %v, want error_response INVALID_ARGUMENT", resp)
			}
			if got := serviceNames(t, call(t, listReq(""))); len(got) != 4 {
				t.Errorf("stream unusable after a bad request: %v", got)
			}
		})
	}
}

// TestReflectionServesAClient checks that a real reflection client, the
// `cloudstate call --list` command, can resolve every service from the
// files this implementation sends (with imports skipped once sent).
func TestReflectionServesAClient(t *testing.T) {
	m := testModel(t)
	_, addr := startReflectionAt(t, NewReflection(func() *discovery.Model { return m }))
	var stdout, stderr bytes.Buffer
	if err := call.Run(context.Background(), []string{"--addr", addr, "--list"}, strings.NewReader(""), &stdout, &stderr); err != nil {
		t.Fatalf("call --list: %v\n%s", err, stderr.String())
	}
	want := "alpha.Tools\n" +
		"  Ping(google.protobuf.Empty) → google.protobuf.Empty\n" +
		"com.example.shop.Admin\n" +
		"  Reset(google.protobuf.Empty) → google.protobuf.Empty\n" +
		"com.example.shop.ShoppingCart\n" +
		"  AddItem(com.example.shop.AddLineItem) → google.protobuf.Empty\n" +
		"  WatchCart(com.example.shop.AddLineItem) → stream google.protobuf.Empty\n" +
		"grpc.reflection.v1alpha.ServerReflection\n" +
		"  ServerReflectionInfo(stream grpc.reflection.v1alpha.ServerReflectionRequest) → stream grpc.reflection.v1alpha.ServerReflectionResponse\n"
	if stdout.String() != want {
		t.Errorf("call --list output:\n%s\nwant:\n%s", stdout.String(), want)
	}
}
