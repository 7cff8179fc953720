package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/genproto/googleapis/api/httpbody"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudstate-go/cloudstate/internal/discovery"
	"github.com/cloudstate-go/cloudstate/internal/route"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
)

// The HTTP side is tested against a real Server on a loopback port, a real
// router, and two fake entity handlers: an in-memory shopping cart
// (event-sourced, the sample's descriptors) and "things", an action service
// built here whose methods cover every rule form and echo what the
// transcoder made of the request.

const (
	cartService   = "com.example.shoppingcart.ShoppingCart"
	thingsService = "test.Things"
)

// fileSet returns the descriptors of files and everything they import,
// each file once, imports first.
func fileSet(files ...protoreflect.FileDescriptor) []*descriptorpb.FileDescriptorProto {
	var out []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		for i := range fd.Imports().Len() {
			add(fd.Imports().Get(i).FileDescriptor)
		}
		out = append(out, protodesc.ToFileDescriptorProto(fd))
	}
	for _, f := range files {
		add(f)
	}
	return out
}

func httpRule(r *annotations.HttpRule) *descriptorpb.MethodOptions {
	opts := &descriptorpb.MethodOptions{}
	proto.SetExtension(opts, annotations.E_Http, r)
	return opts
}

func fld(name string, number int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
	f := &descriptorpb.FieldDescriptorProto{
		Name:   proto.String(name),
		Number: proto.Int32(number),
		Type:   typ.Enum(),
		Label:  descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
	}
	if typeName != "" {
		f.TypeName = proto.String(typeName)
	}
	return f
}

func repeatedFld(f *descriptorpb.FieldDescriptorProto) *descriptorpb.FieldDescriptorProto {
	f.Label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	return f
}

type rpcSpec struct {
	name, in, out  string
	client, server bool
	rule           *annotations.HttpRule
}

// thingsFile is test/things.proto: message Thing with a field of every kind
// the JSON mapping treats specially, and service Things with one method
// per rule form.
func thingsFile() *descriptorpb.FileDescriptorProto {
	const (
		tString  = descriptorpb.FieldDescriptorProto_TYPE_STRING
		tInt64   = descriptorpb.FieldDescriptorProto_TYPE_INT64
		tInt32   = descriptorpb.FieldDescriptorProto_TYPE_INT32
		tBool    = descriptorpb.FieldDescriptorProto_TYPE_BOOL
		tDouble  = descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		tBytes   = descriptorpb.FieldDescriptorProto_TYPE_BYTES
		tEnum    = descriptorpb.FieldDescriptorProto_TYPE_ENUM
		tMessage = descriptorpb.FieldDescriptorProto_TYPE_MESSAGE
	)
	get := func(p string) *annotations.HttpRule {
		return &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: p}}
	}
	rpcs := []rpcSpec{
		{name: "Get", in: "Thing", out: "Thing", rule: &annotations.HttpRule{
			Pattern: &annotations.HttpRule_Get{Get: "/things/{name}"},
			AdditionalBindings: []*annotations.HttpRule{{
				Pattern:      &annotations.HttpRule_Get{Get: "/things/{name}/inner/{inner.id}"},
				ResponseBody: "inner",
			}, {
				Pattern:      &annotations.HttpRule_Get{Get: "/things/{name}/tags"},
				ResponseBody: "tags",
			}},
		}},
		{name: "Create", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/things"}, Body: "*"}},
		{name: "Update", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Put{Put: "/things/{name}"}, Body: "inner"}},
		{name: "Patch", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Patch{Patch: "/things/{name}"}, Body: "*"}},
		{name: "Remove", in: "Thing", out: ".google.protobuf.Empty", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Delete{Delete: "/things/{name}"}}},
		{name: "Cancel", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/things/{name}:cancel"}, Body: "*"}},
		{name: "Anything", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Custom{Custom: &annotations.CustomHttpPattern{Kind: "*", Path: "/any/{name}"}}}},
		{name: "Files", in: "Thing", out: "Thing", rule: get("/files/{name=**}")},
		{name: "Shelf", in: "Thing", out: "Thing", rule: get("/v1/{name=shelves/*/books/*}")},
		{name: "Count", in: "Thing", out: "Thing", rule: get("/count/{count}/{flag}/{ratio}/{inner.n}")},
		{name: "Raw", in: "Thing", out: ".google.api.HttpBody", rule: get("/raw/{name}")},
		{name: "Default", in: "Thing", out: "Thing"},
		{name: "Fail", in: "Thing", out: "Thing", rule: &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: "/fail"}, Body: "*"}},
		{name: "Watch", in: "Thing", out: "Thing", server: true, rule: &annotations.HttpRule{
			Pattern: &annotations.HttpRule_Get{Get: "/watch/{name}"},
			AdditionalBindings: []*annotations.HttpRule{
				{Pattern: &annotations.HttpRule_Post{Post: "/watch"}, Body: "*"},
				{Pattern: &annotations.HttpRule_Put{Put: "/watch/{name}"}, Body: "inner"},
				{Pattern: &annotations.HttpRule_Get{Get: "/watch/{name}/inner"}, ResponseBody: "inner"},
			},
		}},
		{name: "Download", in: "Thing", out: ".google.api.HttpBody", server: true, rule: get("/download/{name}")},
		{name: "Collect", in: "Thing", out: "Thing", client: true},
		{name: "Chat", in: "Thing", out: "Thing", client: true, server: true},
	}
	var methods []*descriptorpb.MethodDescriptorProto
	for _, r := range rpcs {
		qualify := func(t string) string {
			if strings.HasPrefix(t, ".") {
				return t
			}
			return ".test." + t
		}
		m := &descriptorpb.MethodDescriptorProto{
			Name:       proto.String(r.name),
			InputType:  proto.String(qualify(r.in)),
			OutputType: proto.String(qualify(r.out)),
		}
		if r.client {
			m.ClientStreaming = proto.Bool(true)
		}
		if r.server {
			m.ServerStreaming = proto.Bool(true)
		}
		if r.rule != nil {
			m.Options = httpRule(r.rule)
		}
		methods = append(methods, m)
	}
	return &descriptorpb.FileDescriptorProto{
		Name:    proto.String("test/things.proto"),
		Package: proto.String("test"),
		Syntax:  proto.String("proto3"),
		Dependency: []string{
			"google/api/annotations.proto", "google/api/httpbody.proto",
			"google/protobuf/any.proto", "google/protobuf/duration.proto", "google/protobuf/empty.proto",
			"google/protobuf/struct.proto", "google/protobuf/timestamp.proto", "google/protobuf/wrappers.proto",
		},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Thing"),
			Field: []*descriptorpb.FieldDescriptorProto{
				fld("name", 1, tString, ""),
				fld("count", 2, tInt64, ""),
				fld("flag", 3, tBool, ""),
				fld("ratio", 4, tDouble, ""),
				fld("data", 5, tBytes, ""),
				fld("inner", 6, tMessage, ".test.Inner"),
				repeatedFld(fld("tags", 7, tString, "")),
				fld("when", 8, tMessage, ".google.protobuf.Timestamp"),
				fld("took", 9, tMessage, ".google.protobuf.Duration"),
				fld("meta", 10, tMessage, ".google.protobuf.Struct"),
				fld("extra", 11, tMessage, ".google.protobuf.Any"),
				fld("nick", 12, tMessage, ".google.protobuf.StringValue"),
				fld("size", 13, tMessage, ".google.protobuf.Int32Value"),
				fld("kind", 14, tEnum, ".test.Kind"),
				fld("display_name", 15, tString, ""),
				repeatedFld(fld("labels", 16, tMessage, ".test.Thing.LabelsEntry")),
			},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name:    proto.String("LabelsEntry"),
				Field:   []*descriptorpb.FieldDescriptorProto{fld("key", 1, tString, ""), fld("value", 2, tString, "")},
				Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
			}},
		}, {
			Name:  proto.String("Inner"),
			Field: []*descriptorpb.FieldDescriptorProto{fld("id", 1, tString, ""), fld("n", 2, tInt32, "")},
		}},
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Kind"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("KIND_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("KIND_BIG"), Number: proto.Int32(1)},
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Things"), Method: methods}},
	}
}

// testFiles is the descriptor set the fake function reports: the shopping
// cart sample's files and test/things.proto with their imports.
func testFiles() []*descriptorpb.FileDescriptorProto {
	files := fileSet(shoppingcartpb.File_shoppingcart_proto,
		httpbody.File_google_api_httpbody_proto, anypb.File_google_protobuf_any_proto,
		durationpb.File_google_protobuf_duration_proto, emptypb.File_google_protobuf_empty_proto,
		structpb.File_google_protobuf_struct_proto, timestamppb.File_google_protobuf_timestamp_proto,
		wrapperspb.File_google_protobuf_wrappers_proto, annotations.File_google_api_annotations_proto)
	return append(files, thingsFile())
}

// buildModel runs discovery's Build over files and entities.
func buildModel(t testing.TB, files []*descriptorpb.FileDescriptorProto, entities ...*protocol.Entity) *discovery.Model {
	t.Helper()
	set, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: files})
	if err != nil {
		t.Fatal(err)
	}
	model, err := discovery.Build(&protocol.EntitySpec{
		Proto:    set,
		Entities: entities,
		ServiceInfo: &protocol.ServiceInfo{
			ProtocolMajorVersion: discovery.ProtocolMajorVersion,
			ProtocolMinorVersion: discovery.ProtocolMinorVersion,
		},
	}, discovery.BuildOptions{
		SupportedTypes:     []string{discovery.EventSourced, discovery.ValueEntity, discovery.CRDT, discovery.Action},
		CompatibilityCheck: true,
	})
	if err != nil {
		t.Fatalf("discovery.Build: %v", err)
	}
	return model
}

func testModelHTTP(t testing.TB) *discovery.Model {
	return buildModel(t, testFiles(),
		&protocol.Entity{EntityType: discovery.EventSourced, ServiceName: cartService, PersistenceId: "cart"},
		&protocol.Entity{EntityType: discovery.Action, ServiceName: thingsService})
}

func replyWith(m *discovery.Method, msg proto.Message, md *protocol.Metadata) (route.Outcome, error) {
	b, err := proto.Marshal(msg)
	if err != nil {
		return route.Outcome{}, err
	}
	return route.Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Reply{Reply: &protocol.Reply{
		Payload:  &anypb.Any{TypeUrl: m.OutputTypeURL, Value: b},
		Metadata: md,
	}}}}, nil
}

func failure(desc string) route.Outcome {
	return route.Outcome{Action: &protocol.ClientAction{Action: &protocol.ClientAction_Failure{Failure: &protocol.Failure{Description: desc}}}}
}

// fakeCarts keeps shopping carts in memory, like the sample would.
type fakeCarts struct {
	mu    sync.Mutex
	carts map[string][]*shoppingcartpb.LineItem
	calls atomic.Int64
	// malformed counts payloads that did not parse: none may reach the
	// function.
	malformed atomic.Int64
}

func newFakeCarts() *fakeCarts {
	return &fakeCarts{carts: map[string][]*shoppingcartpb.LineItem{}}
}

func (f *fakeCarts) Unary(_ context.Context, call route.Call) (route.Outcome, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	value := call.Payload.GetValue()
	switch call.Method.Name {
	case "AddItem":
		var in shoppingcartpb.AddLineItem
		if err := proto.Unmarshal(value, &in); err != nil {
			f.malformed.Add(1)
			return route.Outcome{}, fmt.Errorf("AddItem payload reached the function malformed: %w", err)
		}
		if in.GetQuantity() <= 0 {
			return failure(fmt.Sprintf("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())), nil
		}
		items := f.carts[call.EntityID]
		if i := slices.IndexFunc(items, func(it *shoppingcartpb.LineItem) bool { return it.GetProductId() == in.GetProductId() }); i >= 0 {
			items[i].Quantity += in.GetQuantity()
		} else {
			f.carts[call.EntityID] = append(items, &shoppingcartpb.LineItem{ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity()})
		}
		return replyWith(call.Method, &emptypb.Empty{}, nil)
	case "RemoveItem":
		var in shoppingcartpb.RemoveLineItem
		if err := proto.Unmarshal(value, &in); err != nil {
			f.malformed.Add(1)
			return route.Outcome{}, fmt.Errorf("RemoveItem payload reached the function malformed: %w", err)
		}
		items := f.carts[call.EntityID]
		i := slices.IndexFunc(items, func(it *shoppingcartpb.LineItem) bool { return it.GetProductId() == in.GetProductId() })
		if i < 0 {
			return failure(fmt.Sprintf("Cannot remove item %s because it is not in the cart", in.GetProductId())), nil
		}
		f.carts[call.EntityID] = slices.Delete(items, i, i+1)
		return replyWith(call.Method, &emptypb.Empty{}, nil)
	case "GetCart":
		var in shoppingcartpb.GetShoppingCart
		if err := proto.Unmarshal(value, &in); err != nil {
			f.malformed.Add(1)
			return route.Outcome{}, fmt.Errorf("GetCart payload reached the function malformed: %w", err)
		}
		return replyWith(call.Method, &shoppingcartpb.Cart{Items: f.carts[call.EntityID]}, nil)
	}
	return route.Outcome{}, status.Errorf(codes.Unimplemented, "fake cart has no %s", call.Method.Name)
}

// fakeThings serves test.Things: most methods echo the request, with the
// request's x-test header echoed as an x-echo response header.
type fakeThings struct {
	calls     atomic.Int64
	malformed atomic.Int64 // as in fakeCarts
	// cancelled receives the name of every Watch "forever-*" stream whose
	// context was cancelled.
	cancelled chan string
}

// decode parses a request as the method's input, as the function would;
// a failure means something malformed reached the function.
func (f *fakeThings) decode(m *discovery.Method, b []byte) (*dynamicpb.Message, error) {
	msg := dynamicpb.NewMessage(m.Desc.Input())
	if err := proto.Unmarshal(b, msg); err != nil {
		f.malformed.Add(1)
		return nil, status.Errorf(codes.Internal, "%s payload reached the function malformed: %v", m.Name, err)
	}
	return msg, nil
}

func stringField(msg *dynamicpb.Message, name string) string {
	return msg.Get(msg.Descriptor().Fields().ByName(protoreflect.Name(name))).String()
}

func echoMetadata(md *protocol.Metadata) *protocol.Metadata {
	for _, e := range md.GetEntries() {
		if e.GetKey() == "x-test" {
			return &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "x-echo", Value: &protocol.MetadataEntry_StringValue{StringValue: e.GetStringValue()}}}}
		}
	}
	return nil
}

func (f *fakeThings) Unary(_ context.Context, call route.Call) (route.Outcome, error) {
	f.calls.Add(1)
	in, err := f.decode(call.Method, call.Payload.GetValue())
	if err != nil {
		return route.Outcome{}, err
	}
	switch call.Method.Name {
	case "Raw":
		return replyWith(call.Method, &httpbody.HttpBody{ContentType: "text/csv", Data: []byte("name," + stringField(in, "name") + "\n")}, nil)
	case "Remove":
		return replyWith(call.Method, &emptypb.Empty{}, nil)
	case "Fail":
		code := in.Get(in.Descriptor().Fields().ByName("count")).Int()
		if code == 0 {
			return failure(stringField(in, "name")), nil
		}
		return route.Outcome{}, status.Error(codes.Code(code), stringField(in, "name"))
	}
	return replyWith(call.Method, in, echoMetadata(call.Metadata))
}

// Watch streams three copies of the request named <name>-0..2, the first
// with the x-echo metadata; names change that: "fail" fails after one
// message, "failfirst" before any, "none" sends nothing, and "forever-*"
// sends one message and then waits for the call to be cancelled (when the
// fake has a cancelled channel to report it on).
// Download streams three HttpBody chunks typed text/plain; "meta" types the
// first reply with content-type metadata instead, "untyped" leaves the type
// empty, "fail" fails after one chunk.
func (f *fakeThings) Stream(ctx context.Context, call route.StreamCall, emit func(route.Outcome) error) error {
	f.calls.Add(1)
	m := call.Method
	var names []string
	for {
		p, err := call.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		in, err := f.decode(m, p.GetValue())
		if err != nil {
			return err
		}
		name := stringField(in, "name")
		switch m.Name {
		case "Watch":
			for i := range 3 {
				switch {
				case name == "none":
					return nil
				case name == "fail" && i == 1:
					return emit(failure("watch failed"))
				case name == "failfirst" && i == 0:
					return emit(failure("watch failed first"))
				case strings.HasPrefix(name, "forever") && i == 1 && f.cancelled != nil:
					<-ctx.Done()
					if f.cancelled != nil {
						f.cancelled <- name
					}
					return ctx.Err()
				}
				out := proto.CloneOf(in)
				out.Set(out.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(fmt.Sprintf("%s-%d", name, i)))
				var md *protocol.Metadata
				if i == 0 {
					md = echoMetadata(call.Metadata)
				}
				o, err := replyWith(m, out, md)
				if err != nil {
					return err
				}
				if err := emit(o); err != nil {
					return err
				}
			}
		case "Download":
			for i := range 3 {
				if name == "fail" && i == 1 {
					return emit(failure("download failed"))
				}
				body := &httpbody.HttpBody{ContentType: "text/plain", Data: fmt.Appendf(nil, "%s chunk %d\n", name, i)}
				var md *protocol.Metadata
				switch {
				case name == "untyped":
					body.ContentType = ""
				case name == "meta" && i == 0:
					body.ContentType = ""
					md = &protocol.Metadata{Entries: []*protocol.MetadataEntry{{Key: "Content-Type", Value: &protocol.MetadataEntry_StringValue{StringValue: "application/x-custom"}}}}
				}
				o, err := replyWith(m, body, md)
				if err != nil {
					return err
				}
				if err := emit(o); err != nil {
					return err
				}
			}
		case "Chat":
			if name == "fail" {
				return emit(failure("chat failed"))
			}
			o, err := replyWith(m, in, nil)
			if err != nil {
				return err
			}
			if err := emit(o); err != nil {
				return err
			}
		case "Collect":
			names = append(names, name)
		}
	}
	if m.Name == "Collect" {
		out := dynamicpb.NewMessage(m.Desc.Output())
		out.Set(out.Descriptor().Fields().ByName("name"), protoreflect.ValueOfString(strings.Join(names, "+")))
		o, err := replyWith(m, out, nil)
		if err != nil {
			return err
		}
		return emit(o)
	}
	return nil
}

// httpHarness is a Server on a loopback port with the test model routed to
// the fakes.
type httpHarness struct {
	base   string // http://127.0.0.1:port
	srv    *Server
	conn   *grpc.ClientConn
	carts  *fakeCarts
	things *fakeThings
}

func startHTTP(t testing.TB, opts Options) *httpHarness {
	t.Helper()
	if opts.MaxRecvMsgSize == 0 {
		opts.MaxRecvMsgSize = 1 << 20
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	h := &httpHarness{srv: New(opts), carts: newFakeCarts(), things: &fakeThings{cancelled: make(chan string, 16)}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- h.srv.Serve(lis) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.srv.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	h.base = "http://" + lis.Addr().String()
	router := route.New(testModelHTTP(t), map[string]route.Handler{
		discovery.EventSourced: h.carts,
		discovery.Action:       h.things,
	}, nil, opts.Log)
	h.srv.SetRouter(router)
	h.srv.SetReady()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	h.conn = conn
	return h
}

// do sends one HTTP request and returns the status, headers and body.
func (h *httpHarness) do(t testing.TB, method, path, contentType, body string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, h.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body == "" {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}
