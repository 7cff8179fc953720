package call

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// testDiscovery answers discover with a spec built from the request, so the
// test can see that JSON input, metadata and output all went through.
type testDiscovery struct {
	protocol.UnimplementedEntityDiscoveryServer
}

func (testDiscovery) Discover(ctx context.Context, info *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	if info.GetProxyName() == "fail" {
		return nil, status.Error(codes.FailedPrecondition, "discovery refused")
	}
	md, _ := metadata.FromIncomingContext(ctx)
	spec := &protocol.EntitySpec{ServiceInfo: &protocol.ServiceInfo{
		ServiceName:          info.GetProxyName(),
		ServiceVersion:       strings.Join(md.Get("x-version"), ","),
		ProtocolMajorVersion: info.GetProtocolMajorVersion(),
	}}
	for _, t := range info.GetSupportedEntityTypes() {
		spec.Entities = append(spec.Entities, &protocol.Entity{EntityType: t})
	}
	return spec, nil
}

// testAction serves the three streaming shapes of ActionProtocol;
// handleUnary stays unimplemented.
type testAction struct {
	protocol.UnimplementedActionProtocolServer
}

func (testAction) HandleStreamedOut(cmd *protocol.ActionCommand, stream protocol.ActionProtocol_HandleStreamedOutServer) error {
	switch cmd.GetName() {
	case "hang":
		<-stream.Context().Done()
		return stream.Context().Err()
	case "boom":
		if err := stream.Send(failure(1, "first")); err != nil {
			return err
		}
		return status.Error(codes.Aborted, "boom after one")
	}
	fromReflection, err := anypb.New(&protocol.ProxyInfo{ProxyName: cmd.GetName()})
	if err != nil {
		return err
	}
	linkedOnly, err := anypb.New(wrapperspb.String("wrapped"))
	if err != nil {
		return err
	}
	for _, resp := range []*protocol.ActionResponse{
		{Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: fromReflection}}},
		{Response: &protocol.ActionResponse_Reply{Reply: &protocol.Reply{Payload: linkedOnly}}},
		failure(3, cmd.GetName()),
	} {
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	return nil
}

func (testAction) HandleStreamedIn(stream protocol.ActionProtocol_HandleStreamedInServer) error {
	var names []string
	for {
		cmd, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(failure(int64(len(names)), strings.Join(names, ",")))
		}
		if err != nil {
			return err
		}
		names = append(names, cmd.GetName())
	}
}

func (testAction) HandleStreamed(stream protocol.ActionProtocol_HandleStreamedServer) error {
	for i := int64(1); ; i++ {
		cmd, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(failure(i, "echo "+cmd.GetName())); err != nil {
			return err
		}
	}
}

func failure(id int64, description string) *protocol.ActionResponse {
	return &protocol.ActionResponse{Response: &protocol.ActionResponse_Failure{
		Failure: &protocol.Failure{CommandId: id, Description: description},
	}}
}

// startServer serves the test services on a real socket. register adds
// the reflection service(s).
func startServer(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	protocol.RegisterEntityDiscoveryServer(srv, testDiscovery{})
	protocol.RegisterActionProtocolServer(srv, testAction{})
	register(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// stockServer serves grpc-go's own reflection (v1 and v1alpha).
func stockServer(t *testing.T) string {
	return startServer(t, func(s *grpc.Server) { reflection.Register(s) })
}

type result struct {
	stdout, stderr string
	err            error
}

func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := Run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	return result{stdout.String(), stderr.String(), err}
}

// values decodes the printed responses, failing unless each is followed by
// a newline.
func values(t *testing.T, out string) []map[string]any {
	t.Helper()
	if out != "" && !strings.HasSuffix(out, "}\n") {
		t.Errorf("output does not end with a newline: %q", out)
	}
	dec := json.NewDecoder(strings.NewReader(out))
	var all []map[string]any
	for {
		var v map[string]any
		err := dec.Decode(&v)
		if err == io.EOF {
			return all
		}
		if err != nil {
			t.Fatalf("output is not a JSON sequence: %v\n%s", err, out)
		}
		all = append(all, v)
	}
}

// at walks a decoded JSON value by object keys.
func at(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestUnaryWithShortNameHeadersAndDefaults(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "", "EntityDiscovery/discover",
		`{"proxyName":"p","protocolMajorVersion":1,"supportedEntityTypes":["a","b"]}`,
		"--addr", addr, "-H", "x-version: 7", "-H", "X-Other:x")
	if r.err != nil {
		t.Fatalf("run: %v\nstderr: %s", r.err, r.stderr)
	}
	vs := values(t, r.stdout)
	if len(vs) != 1 {
		t.Fatalf("got %d responses, want 1:\n%s", len(vs), r.stdout)
	}
	v := vs[0]
	if got := at(v, "serviceInfo", "serviceName"); got != "p" {
		t.Errorf("serviceName = %v, want p", got)
	}
	if got := at(v, "serviceInfo", "serviceVersion"); got != "7" {
		t.Errorf("serviceVersion (from -H) = %v, want 7", got)
	}
	if got := at(v, "entities"); len(got.([]any)) != 2 {
		t.Errorf("entities = %v, want 2", got)
	}
	// EmitUnpopulated: default values are printed.
	if got, ok := at(v, "serviceInfo").(map[string]any)["serviceRuntime"]; !ok || got != "" {
		t.Errorf("serviceRuntime = %v (present %v), want an empty string", got, ok)
	}
	if got, ok := v["proto"]; !ok || got != "" {
		t.Errorf("proto = %v (present %v), want an empty string", got, ok)
	}
	if !strings.Contains(r.stdout, "\n  \"") {
		t.Errorf("output is not indented over several lines:\n%s", r.stdout)
	}
}

func TestMethodAndServiceSpellings(t *testing.T) {
	addr := stockServer(t)
	for _, target := range []string{
		"cloudstate.EntityDiscovery/discover",
		"/cloudstate.EntityDiscovery/discover",
		"EntityDiscovery/Discover",
	} {
		r := run(t, "", "--addr", addr, target, `{"proxyName":"x"}`)
		if r.err != nil {
			t.Errorf("%s: %v", target, r.err)
			continue
		}
		if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "serviceInfo", "serviceName") != "x" {
			t.Errorf("%s: output %s", target, r.stdout)
		}
	}
}

func TestRequestFromStdin(t *testing.T) {
	addr := stockServer(t)
	for _, args := range [][]string{
		{"--addr", addr, "EntityDiscovery/discover"},
		{"--addr", addr, "EntityDiscovery/discover", "-"},
	} {
		r := run(t, "{\n  \"proxyName\": \"from-stdin\"\n}\n", args...)
		if r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
		if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "serviceInfo", "serviceName") != "from-stdin" {
			t.Errorf("%v: output %s", args, r.stdout)
		}
	}
}

func TestAddrFromEnvironment(t *testing.T) {
	addr := stockServer(t)
	t.Setenv(AddrEnv, addr)
	r := run(t, "", "EntityDiscovery/discover", `{"proxyName":"env"}`)
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "serviceInfo", "serviceName") != "env" {
		t.Errorf("output %s", r.stdout)
	}
}

func TestNameErrors(t *testing.T) {
	addr := stockServer(t)
	cases := []struct {
		target string
		want   []string
	}{
		{"ServerReflection/ServerReflectionInfo", []string{"ambiguous", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}},
		{"Nope/discover", []string{`unknown service "Nope"`, "cloudstate.EntityDiscovery", "cloudstate.action.ActionProtocol"}},
		{"Discovery/discover", []string{`unknown service "Discovery"`}},
		{"EntityDiscovery/nope", []string{`no method "nope"`, "discover", "reportError"}},
		{"EntityDiscovery", []string{"want <service>/<method>"}},
		{"EntityDiscovery/", []string{"want <service>/<method>"}},
	}
	for _, c := range cases {
		r := run(t, "", "--addr", addr, c.target, "{}")
		if r.err == nil {
			t.Errorf("%s: no error, output %s", c.target, r.stdout)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.target, r.err, w)
			}
		}
		if r.stdout != "" {
			t.Errorf("%s: printed %q", c.target, r.stdout)
		}
	}
}

func TestBadRequestJSON(t *testing.T) {
	addr := stockServer(t)
	cases := []struct {
		name, arg, stdin string
		want             []string
	}{
		{"syntax", `{"proxyName": }`, "", []string{"not valid JSON"}},
		{"unknown field", `{"nope": 1}`, "", []string{"cloudstate.ProxyInfo", "nope"}},
		{"wrong type", `{"protocolMajorVersion": "x"}`, "", []string{"cloudstate.ProxyInfo", "protocolMajorVersion"}},
		{"empty stdin", "-", "", []string{"no request JSON", "cloudstate.ProxyInfo"}},
		{"two values", `{} {}`, "", []string{"takes one request message"}},
	}
	for _, c := range cases {
		r := run(t, c.stdin, "--addr", addr, "EntityDiscovery/discover", c.arg)
		if r.err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		var se *StatusError
		if errors.As(r.err, &se) {
			t.Errorf("%s: reached the server: %v", c.name, r.err)
		}
		for _, w := range c.want {
			if !strings.Contains(r.err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, r.err, w)
			}
		}
	}
}

func TestErrorStatus(t *testing.T) {
	addr := stockServer(t)
	cases := []struct {
		target, json string
		code         codes.Code
		line         string
	}{
		{"EntityDiscovery/discover", `{"proxyName":"fail"}`, codes.FailedPrecondition, "ERROR: FAILED_PRECONDITION: discovery refused\n"},
		{"ActionProtocol/handleUnary", `{}`, codes.Unimplemented, "ERROR: UNIMPLEMENTED: method HandleUnary not implemented\n"},
	}
	for _, c := range cases {
		r := run(t, "", "--addr", addr, c.target, c.json)
		var se *StatusError
		if !errors.As(r.err, &se) {
			t.Fatalf("%s: error %v, want a *StatusError", c.target, r.err)
		}
		if status.Code(r.err) != c.code {
			t.Errorf("%s: code %v, want %v", c.target, status.Code(r.err), c.code)
		}
		if r.stderr != c.line {
			t.Errorf("%s: stderr %q, want %q", c.target, r.stderr, c.line)
		}
		if r.err.Error()+"\n" != c.line {
			t.Errorf("%s: error %q, want the printed line", c.target, r.err)
		}
		if r.stdout != "" {
			t.Errorf("%s: stdout %q, want nothing", c.target, r.stdout)
		}
	}
}

func TestTimeout(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "", "--addr", addr, "--timeout", "300ms", "ActionProtocol/handleStreamedOut", `{"name":"hang"}`)
	if status.Code(r.err) != codes.DeadlineExceeded || !strings.HasPrefix(r.stderr, "ERROR: DEADLINE_EXCEEDED: ") {
		t.Errorf("err %v, stderr %q; want DEADLINE_EXCEEDED", r.err, r.stderr)
	}
}

func TestServerStreaming(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "", "--addr", addr, "ActionProtocol/handleStreamedOut", `{"name":"n"}`)
	if r.err != nil {
		t.Fatalf("run: %v\nstderr: %s", r.err, r.stderr)
	}
	vs := values(t, r.stdout)
	if len(vs) != 3 {
		t.Fatalf("got %d responses, want 3:\n%s", len(vs), r.stdout)
	}
	// An Any whose type came through reflection.
	if got := at(vs[0], "reply", "payload", "@type"); got != "type.googleapis.com/cloudstate.ProxyInfo" {
		t.Errorf("first payload type = %v", got)
	}
	if got := at(vs[0], "reply", "payload", "proxyName"); got != "n" {
		t.Errorf("first payload proxyName = %v", got)
	}
	// An Any whose type is only linked into the binary.
	if got := at(vs[1], "reply", "payload", "value"); got != "wrapped" {
		t.Errorf("second payload value = %v", got)
	}
	// int64 is printed as a string by protojson.
	if got := at(vs[2], "failure", "commandId"); got != "3" {
		t.Errorf("third commandId = %v, want \"3\"", got)
	}
	if got := at(vs[2], "sideEffects"); got == nil {
		t.Errorf("sideEffects missing despite EmitUnpopulated:\n%s", r.stdout)
	}
}

func TestServerStreamingErrorAfterMessages(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "", "--addr", addr, "ActionProtocol/handleStreamedOut", `{"name":"boom"}`)
	if status.Code(r.err) != codes.Aborted {
		t.Fatalf("err = %v, want ABORTED", r.err)
	}
	if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "failure", "description") != "first" {
		t.Errorf("stdout = %q, want the one message sent before the error", r.stdout)
	}
	if r.stderr != "ERROR: ABORTED: boom after one\n" {
		t.Errorf("stderr = %q", r.stderr)
	}
}

func TestClientStreamingFromStdin(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "{\"name\":\"a\"}\n\n{\"name\":\"b\"}\n{\"name\":\"c\"}", "--addr", addr, "ActionProtocol/handleStreamedIn")
	if r.err != nil {
		t.Fatalf("run: %v\nstderr: %s", r.err, r.stderr)
	}
	vs := values(t, r.stdout)
	if len(vs) != 1 || at(vs[0], "failure", "description") != "a,b,c" || at(vs[0], "failure", "commandId") != "3" {
		t.Errorf("output = %s", r.stdout)
	}

	// No input at all is a stream of zero messages.
	r = run(t, "", "--addr", addr, "ActionProtocol/handleStreamedIn")
	if r.err != nil {
		t.Fatalf("empty stream: %v", r.err)
	}
	if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "failure", "commandId") != "0" {
		t.Errorf("empty stream output = %s", r.stdout)
	}
}

func TestBidiStreaming(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "{\"name\":\"a\"}\n{\"name\":\"b\"}\n{\"name\":\"c\"}\n", "--addr", addr, "ActionProtocol/handleStreamed")
	if r.err != nil {
		t.Fatalf("run: %v\nstderr: %s", r.err, r.stderr)
	}
	vs := values(t, r.stdout)
	if len(vs) != 3 {
		t.Fatalf("got %d responses, want 3:\n%s", len(vs), r.stdout)
	}
	for i, name := range []string{"a", "b", "c"} {
		if got := at(vs[i], "failure", "description"); got != "echo "+name {
			t.Errorf("response %d = %v, want echo %s", i, got, name)
		}
	}

	// Bad JSON on the second line cancels the call and says which line.
	r = run(t, "{\"name\":\"a\"}\n{\"nme\":\"b\"}\n", "--addr", addr, "ActionProtocol/handleStreamed")
	if r.err == nil || !strings.Contains(r.err.Error(), "request JSON 2") || !strings.Contains(r.err.Error(), "nme") {
		t.Errorf("err = %v, want one naming request JSON 2 and the field", r.err)
	}
	var se *StatusError
	if errors.As(r.err, &se) {
		t.Errorf("bad input reported as a server status: %v", r.err)
	}
}

func TestList(t *testing.T) {
	addr := stockServer(t)
	r := run(t, "", "--addr", addr, "--list")
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	for _, want := range []string{
		"cloudstate.EntityDiscovery\n  discover(cloudstate.ProxyInfo) → cloudstate.EntitySpec\n  reportError(cloudstate.UserFunctionError) → google.protobuf.Empty\n",
		"cloudstate.action.ActionProtocol\n" +
			"  handleUnary(cloudstate.action.ActionCommand) → cloudstate.action.ActionResponse\n" +
			"  handleStreamedIn(stream cloudstate.action.ActionCommand) → cloudstate.action.ActionResponse\n" +
			"  handleStreamedOut(cloudstate.action.ActionCommand) → stream cloudstate.action.ActionResponse\n" +
			"  handleStreamed(stream cloudstate.action.ActionCommand) → stream cloudstate.action.ActionResponse\n",
		"grpc.reflection.v1.ServerReflection\n",
		"grpc.reflection.v1alpha.ServerReflection\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--list output lacks %q:\n%s", want, r.stdout)
		}
	}
	if i, j := strings.Index(r.stdout, "cloudstate.EntityDiscovery"), strings.Index(r.stdout, "cloudstate.action."); i > j {
		t.Errorf("services are not sorted:\n%s", r.stdout)
	}

	r = run(t, "", "--list", "--addr", addr, "ActionProtocol")
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	if !strings.HasPrefix(r.stdout, "cloudstate.action.ActionProtocol\n") || strings.Contains(r.stdout, "EntityDiscovery") {
		t.Errorf("--list ActionProtocol output:\n%s", r.stdout)
	}
}

func TestFallsBackToReflectionV1(t *testing.T) {
	addr := startServer(t, func(s *grpc.Server) {
		rpb.RegisterServerReflectionServer(s, reflection.NewServerV1(reflection.ServerOptions{Services: s}))
	})
	r := run(t, "", "--addr", addr, "EntityDiscovery/discover", `{"proxyName":"v1"}`)
	if r.err != nil {
		t.Fatalf("run: %v", r.err)
	}
	if vs := values(t, r.stdout); len(vs) != 1 || at(vs[0], "serviceInfo", "serviceName") != "v1" {
		t.Errorf("output %s", r.stdout)
	}
	r = run(t, "", "--addr", addr, "--list")
	if r.err != nil || !strings.Contains(r.stdout, "grpc.reflection.v1.ServerReflection\n") || strings.Contains(r.stdout, "v1alpha") {
		t.Errorf("--list over v1: err %v, output:\n%s", r.err, r.stdout)
	}
}

func TestNoReflection(t *testing.T) {
	addr := startServer(t, func(*grpc.Server) {})
	r := run(t, "", "--addr", addr, "EntityDiscovery/discover", `{}`)
	if r.err == nil || !strings.Contains(r.err.Error(), "server reflection at "+addr) || status.Code(r.err) != codes.Unimplemented {
		t.Errorf("err = %v, want an UNIMPLEMENTED reflection error naming the address", r.err)
	}
}

func TestUnreachableServer(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r := run(t, "", "--addr", addr, "--timeout", "5s", "EntityDiscovery/discover", `{}`)
	if r.err == nil || !strings.Contains(r.err.Error(), addr) {
		t.Errorf("err = %v, want one naming %s", r.err, addr)
	}
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{nil, "missing <service>/<method>"},
		{[]string{"a/b", "{}", "extra"}, "too many arguments"},
		{[]string{"-H", "novalue", "a/b"}, "want key:value"},
		{[]string{"--timeout", "soon", "a/b"}, "invalid value"},
	}
	for _, c := range cases {
		r := run(t, "", c.args...)
		if r.err == nil || !strings.Contains(r.err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.args, r.err, c.want)
		}
	}
	r := run(t, "", "-h")
	if !errors.Is(r.err, flag.ErrHelp) || !strings.Contains(r.stderr, "usage: cloudstate call") {
		t.Errorf("-h: err %v, stderr %q", r.err, r.stderr)
	}
}

func TestParseArgsAfterTerminator(t *testing.T) {
	opts, err := parseArgs([]string{"--addr", "h:1", "--", "a/b", "-"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintln(opts.addr, opts.target, opts.hasJSON); got != "h:1 a/b false\n" {
		t.Errorf("parsed %s", got)
	}
}
