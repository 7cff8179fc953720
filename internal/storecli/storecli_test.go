package storecli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/protocol"
	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// The test's event types are built from a descriptor at run time, so they
// are not linked into the binary: the command can only print them as JSON
// after learning them from a server or a file, as with a real user
// function's types.
const (
	itemAddedURL = "type.googleapis.com/storecli.test.ItemAdded"
	cartURL      = "type.googleapis.com/storecli.test.Cart"
)

// testFileProto declares storecli.test.ItemAdded and Cart; Cart holds an
// Any, to check that payloads nested in Any fields resolve too.
func testFileProto() *descriptorpb.FileDescriptorProto {
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string, repeated bool) *descriptorpb.FieldDescriptorProto {
		label := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		if repeated {
			label = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		}
		f := &descriptorpb.FieldDescriptorProto{
			Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(), Label: label.Enum(),
		}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	return &descriptorpb.FileDescriptorProto{
		Name:       proto.String("storecli/test/events.proto"),
		Package:    proto.String("storecli.test"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/any.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("ItemAdded"), Field: []*descriptorpb.FieldDescriptorProto{
				field("product", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, "", false),
				field("quantity", 2, descriptorpb.FieldDescriptorProto_TYPE_INT32, "", false),
			}},
			{Name: proto.String("Cart"), Field: []*descriptorpb.FieldDescriptorProto{
				field("items", 1, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".storecli.test.ItemAdded", true),
				field("note", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".google.protobuf.Any", false),
			}},
		},
	}
}

// testFiles is testFileProto resolved, with its import.
func testFiles(t *testing.T) *protoregistry.Files {
	t.Helper()
	files, err := buildFiles(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{testFileProto()}})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// itemAdded encodes an ItemAdded event.
func itemAdded(t *testing.T, product string, quantity int32) *anypb.Any {
	t.Helper()
	md := messageDesc(t, "storecli.test.ItemAdded")
	m := dynamicpb.NewMessage(md)
	m.Set(md.Fields().ByName("product"), protoreflect.ValueOfString(product))
	m.Set(md.Fields().ByName("quantity"), protoreflect.ValueOfInt32(quantity))
	return anyOf(t, itemAddedURL, m)
}

// cart encodes a Cart with the given items and a note wrapped in an Any.
func cart(t *testing.T, note string, items ...*anypb.Any) *anypb.Any {
	t.Helper()
	md := messageDesc(t, "storecli.test.Cart")
	itemMD := messageDesc(t, "storecli.test.ItemAdded")
	m := dynamicpb.NewMessage(md)
	list := m.Mutable(md.Fields().ByName("items")).List()
	for _, it := range items {
		item := dynamicpb.NewMessage(itemMD)
		if err := proto.Unmarshal(it.GetValue(), item); err != nil {
			t.Fatal(err)
		}
		list.Append(protoreflect.ValueOfMessage(item))
	}
	n, err := anypb.New(wrapperspb.String(note))
	if err != nil {
		t.Fatal(err)
	}
	m.Set(md.Fields().ByName("note"), protoreflect.ValueOfMessage(n.ProtoReflect()))
	return anyOf(t, cartURL, m)
}

func messageDesc(t *testing.T, name string) protoreflect.MessageDescriptor {
	t.Helper()
	d, err := testFiles(t).FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		t.Fatal(err)
	}
	return d.(protoreflect.MessageDescriptor)
}

func anyOf(t *testing.T, url string, m proto.Message) *anypb.Any {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: url, Value: b}
}

// primitiveString is a Cloudstate primitive string payload.
func primitiveString(s string) *anypb.Any {
	b, _ := proto.Marshal(wrapperspb.String(s)) // field 1, like the primitive encoding
	return &anypb.Any{TypeUrl: primitivePrefix + "string", Value: b}
}

// serve starts a gRPC server on loopback with register's services and
// returns its address; it stops at cleanup.
func serve(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	register(s)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// reflectionServer serves grpc.reflection.v1 over files, as a proxy does
// over its user function's descriptors.
func reflectionServer(t *testing.T, files *protoregistry.Files) string {
	return serve(t, func(s *grpc.Server) {
		rpb.RegisterServerReflectionServer(s, reflection.NewServerV1(reflection.ServerOptions{
			Services: s, DescriptorResolver: files, ExtensionResolver: protoregistry.GlobalTypes,
		}))
	})
}

// discoveryServer answers discover with set, as a user function does.
type discoveryServer struct {
	protocol.UnimplementedEntityDiscoveryServer
	set []byte
}

func (d discoveryServer) Discover(context.Context, *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	return &protocol.EntitySpec{Proto: d.set}, nil
}

func functionServer(t *testing.T) string {
	t.Helper()
	set, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{
		protodesc.ToFileDescriptorProto(anypb.File_google_protobuf_any_proto), testFileProto(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return serve(t, func(s *grpc.Server) { protocol.RegisterEntityDiscoveryServer(s, discoveryServer{set: set}) })
}

// writer is what the tests fill a store through.
type writer interface {
	store.Journal
	store.SnapshotStore
	store.ValueStore
}

// backend is a real store a test writes through and the command reads.
type backend struct {
	name string
	// open returns the --store value and a store on it, which the test
	// must close before running the command (Pebble allows one opener).
	open func(t *testing.T) (string, writer, func())
}

func backends() []backend {
	return []backend{
		{"pebble", func(t *testing.T) (string, writer, func()) {
			dir := t.TempDir()
			s, err := pebble.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			return "pebble:" + dir, s, func() {
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"postgres", func(t *testing.T) (string, writer, func()) {
			dsn, _ := testenv.PostgresSchema(t)
			s, err := postgres.Open(context.Background(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			return dsn, s, s.Close
		}},
	}
}

type result struct {
	stdout, stderr string
	err            error
}

// run runs the command with args and an environment of env only.
func run(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return result{stdout.String(), stderr.String(), err}
}

func mustRun(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	r := run(t, env, args...)
	if r.err != nil {
		t.Fatalf("cloudstate store %s: %v\nstderr:\n%s", strings.Join(args, " "), r.err, r.stderr)
	}
	return r
}

func appendEvents(t *testing.T, w writer, pid string, payloads ...*anypb.Any) {
	t.Helper()
	events := make([]store.Event, len(payloads))
	for i, p := range payloads {
		events[i] = store.Event{Seq: int64(i + 1), Payload: p}
	}
	if err := w.Append(context.Background(), pid, events); err != nil {
		t.Fatal(err)
	}
}

func TestEventsSnapshotAndValue(t *testing.T) {
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			spec, w, closeStore := b.open(t)
			ctx := context.Background()
			pen, ink := itemAdded(t, "pen", 2), itemAdded(t, "ink", 1)
			empty, err := anypb.New(&emptypb.Empty{})
			if err != nil {
				t.Fatal(err)
			}
			appendEvents(t, w, "cart|alice", pen, ink, empty, primitiveString("hi <there>"))
			appendEvents(t, w, "cart|alice2", pen) // a neighbour, never shown
			if err := w.SaveSnapshot(ctx, "cart|alice", store.Snapshot{Seq: 2, Payload: cart(t, "two items", pen, ink)}); err != nil {
				t.Fatal(err)
			}
			v1, err := w.PutValue(ctx, "counter|a", 0, primitiveString("one"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.PutValue(ctx, "counter|a", v1, itemAdded(t, "x", 7)); err != nil {
				t.Fatal(err)
			}
			v, err := w.PutValue(ctx, "counter|gone", 0, primitiveString("bye"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.DeleteValue(ctx, "counter|gone", v); err != nil {
				t.Fatal(err)
			}
			closeStore()

			addr := reflectionServer(t, testFiles(t))
			env := map[string]string{StoreEnv: spec}

			r := mustRun(t, env, "events", "cart|alice", "--descriptors", addr)
			want := "" +
				"SEQ  TYPE_URL                                     PAYLOAD\n" +
				`1    type.googleapis.com/storecli.test.ItemAdded  {"product":"pen","quantity":2}` + "\n" +
				`2    type.googleapis.com/storecli.test.ItemAdded  {"product":"ink","quantity":1}` + "\n" +
				`3    type.googleapis.com/google.protobuf.Empty    {}` + "\n" +
				`4    p.cloudstate.io/string                       "hi <there>"` + "\n"
			if r.stdout != want {
				t.Errorf("events:\n%s\nwant:\n%s", r.stdout, want)
			}
			if r.stderr != "" {
				t.Errorf("events wrote to stderr: %q", r.stderr)
			}

			r = mustRun(t, env, "events", "--json", "--after", "2", "--descriptors", addr, "cart|alice")
			want = `{"seq":3,"type_url":"type.googleapis.com/google.protobuf.Empty","payload":{}}` + "\n" +
				`{"seq":4,"type_url":"p.cloudstate.io/string","payload":"hi <there>"}` + "\n"
			if r.stdout != want {
				t.Errorf("events --json --after 2:\n%s\nwant:\n%s", r.stdout, want)
			}
			if r := mustRun(t, env, "events", "cart|alice", "--after", "4"); r.stdout != "" {
				t.Errorf("events --after 4 printed %q, want nothing", r.stdout)
			}

			r = mustRun(t, env, "snapshot", "cart|alice", "--descriptors", addr)
			want = "seq: 2\ntype_url: " + cartURL + "\n" + `{
  "items": [
    {
      "product": "pen",
      "quantity": 2
    },
    {
      "product": "ink",
      "quantity": 1
    }
  ],
  "note": {
    "@type": "type.googleapis.com/google.protobuf.StringValue",
    "value": "two items"
  }
}
`
			if r.stdout != want {
				t.Errorf("snapshot:\n%s\nwant:\n%s", r.stdout, want)
			}

			r = mustRun(t, env, "value", "counter|a", "--descriptors", addr)
			want = "version: 2\ntype_url: " + itemAddedURL + "\n{\n  \"product\": \"x\",\n  \"quantity\": 7\n}\n"
			if r.stdout != want {
				t.Errorf("value:\n%s\nwant:\n%s", r.stdout, want)
			}
			r = mustRun(t, env, "value", "counter|a", "--json", "--descriptors", addr)
			want = `{"key":"counter|a","version":2,"deleted":false,"type_url":"` + itemAddedURL + `","payload":{"product":"x","quantity":7}}` + "\n"
			if r.stdout != want {
				t.Errorf("value --json:\n%s\nwant:\n%s", r.stdout, want)
			}
			if r := mustRun(t, env, "value", "counter|gone"); r.stdout != "version: 2\n(deleted)\n" {
				t.Errorf("deleted value: %q", r.stdout)
			}
			if r := mustRun(t, env, "value", "counter|gone", "--json"); r.stdout != `{"key":"counter|gone","version":2,"deleted":true}`+"\n" {
				t.Errorf("deleted value --json: %q", r.stdout)
			}

			for _, args := range [][]string{
				{"events", "cart|bob"}, {"snapshot", "cart|alice2"}, {"value", "counter|never"},
			} {
				r := run(t, env, args...)
				var nf *NotFoundError
				if !errors.As(r.err, &nf) || nf.ID != args[1] {
					t.Errorf("%v: err %v, want a NotFoundError for %s", args, r.err, args[1])
				}
			}
		})
	}
}

func TestTypesFromDiscoveryAndFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	appendEvents(t, s, "cart|a", itemAdded(t, "pen", 3))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{StoreEnv: "pebble:" + dir}
	want := "SEQ  TYPE_URL                                     PAYLOAD\n" +
		`1    type.googleapis.com/storecli.test.ItemAdded  {"product":"pen","quantity":3}` + "\n"

	// A user function serves no reflection; its discovery answer has the
	// descriptors.
	if r := mustRun(t, env, "events", "cart|a", "--descriptors", functionServer(t)); r.stdout != want || r.stderr != "" {
		t.Errorf("from discovery: stdout\n%s\nstderr %q", r.stdout, r.stderr)
	}
	// --addr is the same flag, and CLOUDSTATE_ADDR its default.
	if r := mustRun(t, env, "events", "cart|a", "--addr", functionServer(t)); r.stdout != want {
		t.Errorf("with --addr: stdout\n%s", r.stdout)
	}
	envAddr := map[string]string{StoreEnv: "pebble:" + dir, "CLOUDSTATE_ADDR": reflectionServer(t, testFiles(t))}
	if r := mustRun(t, envAddr, "events", "cart|a"); r.stdout != want {
		t.Errorf("with CLOUDSTATE_ADDR: stdout\n%s", r.stdout)
	}

	// A descriptor set file without its imports (no --include_imports).
	b, err := proto.Marshal(&descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{testFileProto()}})
	if err != nil {
		t.Fatal(err)
	}
	setFile := filepath.Join(t.TempDir(), "set.pb")
	if err := os.WriteFile(setFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mustRun(t, env, "events", "cart|a", "--descriptors", setFile); r.stdout != want {
		t.Errorf("from a file: stdout\n%s\nstderr %q", r.stdout, r.stderr)
	}
}

func TestUnknownTypesPrintBase64(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ev := itemAdded(t, "pen", 3)
	appendEvents(t, s, "cart|a", ev)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{StoreEnv: "pebble:" + dir}
	b64 := "CgNwZW4QAw==" // product "pen", quantity 3

	r := mustRun(t, env, "events", "cart|a", "--descriptors", "none")
	if want := "1    " + itemAddedURL + "  base64:" + b64 + "\n"; !strings.HasSuffix(r.stdout, want) {
		t.Errorf("stdout:\n%s\nwant it to end with\n%s", r.stdout, want)
	}
	if !strings.Contains(r.stderr, "printed as base64 (--descriptors none)") || !strings.Contains(r.stderr, itemAddedURL) {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = mustRun(t, env, "events", "cart|a", "--descriptors", "none", "--json")
	if want := `{"seq":1,"type_url":"` + itemAddedURL + `","bytes":"` + b64 + `"}` + "\n"; r.stdout != want {
		t.Errorf("--json stdout %q, want %q", r.stdout, want)
	}

	// Nothing listens on the address: the note says so, the command
	// still succeeds.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	r = mustRun(t, env, "events", "cart|a", "--descriptors", closed)
	if !strings.Contains(r.stdout, "base64:"+b64) || !strings.Contains(r.stderr, "no descriptors from "+closed) {
		t.Errorf("unreachable server: stdout %q stderr %q", r.stdout, r.stderr)
	}

	// A server that knows other types says it does not know these.
	other := reflectionServer(t, new(protoregistry.Files))
	r = mustRun(t, env, "events", "cart|a", "--descriptors", other)
	if !strings.Contains(r.stdout, "base64:"+b64) || !strings.Contains(r.stderr, "does not know them") {
		t.Errorf("server without the types: stdout %q stderr %q", r.stdout, r.stderr)
	}
}

func TestPebbleInUseByAProxy(t *testing.T) {
	dir := t.TempDir()
	s, err := pebble.Open(dir) // stands in for the running proxy
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := run(t, nil, "events", "cart|a", "--store", "pebble:"+dir)
	if !errors.Is(r.err, pebble.ErrLocked) {
		t.Fatalf("err %v, want one wrapping pebble.ErrLocked", r.err)
	}
	for _, want := range []string{"Stop the proxy", "cp -r " + dir} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %q does not contain %q", r.err, want)
		}
	}
}

func TestStoreFlag(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nothing-here")
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"memory", nil, []string{"events", "a|b", "--store", "memory"}, "memory store lives inside a running proxy"},
		{"memory from env", map[string]string{StoreEnv: "memory"}, []string{"events", "a|b"}, "memory store lives inside a running proxy"},
		{"unsupported", nil, []string{"events", "a|b", "--store", "redis://x"}, "--store: \"redis://x\" is not a supported store"},
		{"no dir", nil, []string{"events", "a|b", "--store", "pebble:"}, "names no directory"},
		{"no host", nil, []string{"value", "a|b", "--store", "postgres:///db"}, "names no host"},
		{"missing dir", nil, []string{"events", "a|b", "--store", "pebble:" + missing}, "the directory does not exist"},
		{"default store", nil, []string{"events", "a|b"}, DefaultStore},
		{"no subcommand", nil, nil, "missing subcommand"},
		{"bad subcommand", nil, []string{"journal", "a|b"}, `unknown subcommand "journal"`},
		{"no id", nil, []string{"value"}, "value: missing <key>"},
		{"empty id", nil, []string{"events", ""}, "is empty"},
		{"extra", nil, []string{"events", "a|b", "c"}, "too many arguments"},
		{"after on value", nil, []string{"value", "a|b", "--after", "3"}, "--after applies to events only"},
		{"negative after", nil, []string{"events", "a|b", "--after", "-1"}, "must not be negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "default store" {
				// DefaultStore is relative to the working directory.
				t.Chdir(t.TempDir())
			}
			r := run(t, c.env, c.args...)
			if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("err %v, want it to contain %q", r.err, c.want)
			}
		})
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reading a missing Pebble directory created it (stat: %v)", err)
	}
	if r := run(t, nil, "--help"); !errors.Is(r.err, flag.ErrHelp) || !strings.Contains(r.stderr, "usage: cloudstate store events") {
		t.Errorf("--help: err %v, stderr %q", r.err, r.stderr)
	}
}

func TestNotFoundHintsAtTheIDForm(t *testing.T) {
	with := (&NotFoundError{What: "events", ID: "shopping-cart|alice"}).Error()
	without := (&NotFoundError{What: "events", ID: "alice"}).Error()
	if strings.Contains(with, "<persistence_id>|<entity id>") || !strings.Contains(without, "<persistence_id>|<entity id>") {
		t.Errorf("messages: %q, %q", with, without)
	}
}

func TestPrimitives(t *testing.T) {
	wrap := func(m proto.Message) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		kind  string
		value []byte
		want  string
	}{
		{"string", wrap(wrapperspb.String(`a "q"`)), `"a \"q\""`},
		{"string", nil, `""`},
		{"bytes", wrap(wrapperspb.Bytes([]byte{0, 1, 255})), `"AAH/"`},
		{"int32", wrap(wrapperspb.Int32(-5)), `-5`},
		{"int64", wrap(wrapperspb.Int64(1 << 40)), `1099511627776`},
		{"int64", nil, `0`},
		{"bool", wrap(wrapperspb.Bool(true)), `true`},
		{"float", wrap(wrapperspb.Float(1.5)), `1.5`},
		{"double", wrap(wrapperspb.Double(-0.25)), `-0.25`},
	}
	ts := &typeSource{}
	for _, c := range cases {
		r := ts.render(&anypb.Any{TypeUrl: primitivePrefix + c.kind, Value: c.value})
		if r.text() != c.want {
			t.Errorf("%s %x: %s, want %s", c.kind, c.value, r.text(), c.want)
		}
	}
	jsonPayload := &anypb.Any{TypeUrl: jsonPrefix + "Msg", Value: wrap(wrapperspb.Bytes([]byte(`{ "message": "hi" }`)))}
	if got := ts.render(jsonPayload).text(); got != `{"message":"hi"}` {
		t.Errorf("json payload: %s", got)
	}
	// Not what the prefix promises: shown as bytes.
	for _, a := range []*anypb.Any{
		{TypeUrl: primitivePrefix + "string", Value: wrap(wrapperspb.Int32(3))},
		{TypeUrl: primitivePrefix + "uuid", Value: nil},
		{TypeUrl: jsonPrefix + "Msg", Value: wrap(wrapperspb.Bytes([]byte("{no")))},
		{TypeUrl: primitivePrefix + "int32", Value: []byte{0x08}},
	} {
		if r := ts.render(a); r.json != nil {
			t.Errorf("%s %x rendered as %s, want base64", a.GetTypeUrl(), a.GetValue(), r.json)
		}
	}
}
