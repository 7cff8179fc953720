package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// The mux is tested on a loopback port in front of two servers that say
// who answered. Both serve test.Echo, four methods of
// google.protobuf.StringValue, one per stream shape:
//
//   - Unary answers "<server>: v".
//   - ClientStream answers "<server>: a+b+c" once the client is done.
//   - ServerStream answers "<server>: v-0", "v-1", "v-2".
//   - Bidi answers "<server>: v" for each message as it arrives.
//
// <server> is "grpc-go" for the gRPC server, "net/http" for connect-go
// handlers on an http.Server with HTTP/1 and unencrypted HTTP/2 (they speak
// Connect, gRPC-Web and gRPC). GET /proto answers the request's protocol.

const (
	byGRPC = "grpc-go: "
	byHTTP = "net/http: "
)

type muxServers struct {
	m    *mux
	addr string
	base string
	// served is closed when the mux's serve has returned.
	served chan struct{}
}

// startMux serves a mux as described above; tweak may change it before it
// starts (its timeouts).
func startMux(t *testing.T, tweak func(*mux)) *muxServers {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(l)
	if tweak != nil {
		tweak(m)
	}
	gs := grpc.NewServer(grpc.UnknownServiceHandler(grpcEcho))
	hs := &http.Server{Handler: httpEcho(), Protocols: httpProtocols()}

	s := &muxServers{m: m, addr: l.Addr().String(), served: make(chan struct{})}
	s.base = "http://" + s.addr
	grpcDone, httpDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.served)
		if err := m.serve(); err != nil {
			t.Errorf("mux serve: %v", err)
		}
	}()
	go func() {
		defer close(grpcDone)
		_ = gs.Serve(m.grpc)
	}()
	go func() {
		defer close(httpDone)
		_ = hs.Serve(m.http)
	}()
	t.Cleanup(func() {
		gs.Stop()
		_ = hs.Close()
		<-s.served
		<-grpcDone
		<-httpDone
	})
	return s
}

// grpcEcho serves test.Echo on grpc-go.
func grpcEcho(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	var got []string
	for {
		in := &wrapperspb.StringValue{}
		err := stream.RecvMsg(in)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		switch method {
		case "/test.Echo/Unary", "/test.Echo/Bidi":
			if err := stream.SendMsg(wrapperspb.String(byGRPC + in.Value)); err != nil {
				return err
			}
		case "/test.Echo/ServerStream":
			for i := range 3 {
				if err := stream.SendMsg(wrapperspb.String(fmt.Sprintf("%s%s-%d", byGRPC, in.Value, i))); err != nil {
					return err
				}
			}
		default:
			got = append(got, in.Value)
		}
	}
	if method == "/test.Echo/ClientStream" {
		return stream.SendMsg(wrapperspb.String(byGRPC + strings.Join(got, "+")))
	}
	return nil
}

// httpEcho serves test.Echo with connect-go, and GET /proto.
func httpEcho() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/test.Echo/Unary", connect.NewUnaryHandler("/test.Echo/Unary",
		func(_ context.Context, req *connect.Request[sv]) (*connect.Response[sv], error) {
			return connect.NewResponse(wrapperspb.String(byHTTP + req.Msg.Value)), nil
		}))
	mux.Handle("/test.Echo/ClientStream", connect.NewClientStreamHandler("/test.Echo/ClientStream",
		func(_ context.Context, s *connect.ClientStream[sv]) (*connect.Response[sv], error) {
			var got []string
			for s.Receive() {
				got = append(got, s.Msg().Value)
			}
			if err := s.Err(); err != nil {
				return nil, err
			}
			return connect.NewResponse(wrapperspb.String(byHTTP + strings.Join(got, "+"))), nil
		}))
	mux.Handle("/test.Echo/ServerStream", connect.NewServerStreamHandler("/test.Echo/ServerStream",
		func(_ context.Context, req *connect.Request[sv], s *connect.ServerStream[sv]) error {
			for i := range 3 {
				if err := s.Send(wrapperspb.String(fmt.Sprintf("%s%s-%d", byHTTP, req.Msg.Value, i))); err != nil {
					return err
				}
			}
			return nil
		}))
	mux.Handle("/test.Echo/Bidi", connect.NewBidiStreamHandler("/test.Echo/Bidi",
		func(_ context.Context, s *connect.BidiStream[sv, sv]) error {
			for {
				in, err := s.Receive()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := s.Send(wrapperspb.String(byHTTP + in.Value)); err != nil {
					return err
				}
			}
		}))
	mux.HandleFunc("GET /proto", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Proto)
	})
	return mux
}

// http1Client returns an HTTP client that speaks only HTTP/1.1.
func http1Client(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetHTTP1(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

type sv = wrapperspb.StringValue

// echoClients are the four test.Echo methods through one connect-go client
// configuration.
type echoClients struct {
	unary, client, server, bidi *connect.Client[sv, sv]
}

func newEchoClients(hc *http.Client, base string, opts ...connect.ClientOption) echoClients {
	return echoClients{
		unary:  connect.NewClient[sv, sv](hc, base+"/test.Echo/Unary", opts...),
		client: connect.NewClient[sv, sv](hc, base+"/test.Echo/ClientStream", opts...),
		server: connect.NewClient[sv, sv](hc, base+"/test.Echo/ServerStream", opts...),
		bidi:   connect.NewClient[sv, sv](hc, base+"/test.Echo/Bidi", opts...),
	}
}

func checkUnary(t *testing.T, c echoClients, by string) {
	t.Helper()
	resp, err := c.unary.CallUnary(context.Background(), connect.NewRequest(wrapperspb.String("u")))
	if err != nil {
		t.Fatalf("unary: %v", err)
	}
	if got, want := resp.Msg.Value, by+"u"; got != want {
		t.Fatalf("unary answered %q, want %q", got, want)
	}
}

func checkClientStream(t *testing.T, c echoClients, by string) {
	t.Helper()
	stream := c.client.CallClientStream(context.Background())
	for _, v := range []string{"a", "b", "c"} {
		if err := stream.Send(wrapperspb.String(v)); err != nil {
			t.Fatalf("client stream send: %v", err)
		}
	}
	resp, err := stream.CloseAndReceive()
	if err != nil {
		t.Fatalf("client stream: %v", err)
	}
	if got, want := resp.Msg.Value, by+"a+b+c"; got != want {
		t.Fatalf("client stream answered %q, want %q", got, want)
	}
}

func checkServerStream(t *testing.T, c echoClients, by string) {
	t.Helper()
	stream, err := c.server.CallServerStream(context.Background(), connect.NewRequest(wrapperspb.String("s")))
	if err != nil {
		t.Fatalf("server stream: %v", err)
	}
	defer stream.Close()
	var got []string
	for stream.Receive() {
		got = append(got, stream.Msg().Value)
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("server stream: %v", err)
	}
	want := []string{by + "s-0", by + "s-1", by + "s-2"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("server stream answered %q, want %q", got, want)
	}
}

// checkBidi waits for each answer before sending the next message: it
// passes only if both directions are open at once.
func checkBidi(t *testing.T, c echoClients, by string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream := c.bidi.CallBidiStream(ctx)
	for _, v := range []string{"one", "two", "three"} {
		if err := stream.Send(wrapperspb.String(v)); err != nil {
			t.Fatalf("bidi send %q: %v", v, err)
		}
		got, err := stream.Receive()
		if err != nil {
			t.Fatalf("bidi receive after %q: %v", v, err)
		}
		if got.Value != by+v {
			t.Fatalf("bidi answered %q, want %q", got.Value, by+v)
		}
	}
	if err := stream.CloseRequest(); err != nil {
		t.Fatalf("bidi close request: %v", err)
	}
	if _, err := stream.Receive(); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v, want io.EOF", err)
	}
	if err := stream.CloseResponse(); err != nil {
		t.Fatalf("bidi close response: %v", err)
	}
}

// TestMuxH2CProtocols: over h2c, Connect and gRPC-Web reach net/http in
// all four stream shapes, and gRPC (from grpc-go's client or connect-go's)
// reaches grpc-go.
func TestMuxH2CProtocols(t *testing.T) {
	s := startMux(t, nil)
	for _, tc := range []struct {
		name string
		opts []connect.ClientOption
		by   string
	}{
		{"Connect", nil, byHTTP},
		{"Connect JSON", []connect.ClientOption{connect.WithProtoJSON()}, byHTTP},
		{"gRPC-Web", []connect.ClientOption{connect.WithGRPCWeb()}, byHTTP},
		{"gRPC from connect-go", []connect.ClientOption{connect.WithGRPC()}, byGRPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newEchoClients(testproc.H2CClient(t), s.base, tc.opts...)
			checkUnary(t, c, tc.by)
			checkClientStream(t, c, tc.by)
			checkServerStream(t, c, tc.by)
			checkBidi(t, c, tc.by)
		})
	}
	t.Run("gRPC from grpc-go", func(t *testing.T) {
		conn := dialGRPC(t, s.addr)
		checkGRPCUnary(t, conn)
		stream, err := conn.NewStream(context.Background(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/test.Echo/Bidi")
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"x", "y"} {
			if err := stream.SendMsg(wrapperspb.String(v)); err != nil {
				t.Fatal(err)
			}
			got := &sv{}
			if err := stream.RecvMsg(got); err != nil {
				t.Fatal(err)
			}
			if got.Value != byGRPC+v {
				t.Fatalf("bidi answered %q, want %q", got.Value, byGRPC+v)
			}
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if err := stream.RecvMsg(&sv{}); !errors.Is(err, io.EOF) {
			t.Fatalf("bidi end: %v, want io.EOF", err)
		}
	})
	t.Run("GET over h2c", func(t *testing.T) {
		if got := get(t, testproc.H2CClient(t), s.base+"/proto"); got != "HTTP/2.0" {
			t.Fatalf("GET /proto over h2c answered %q, want HTTP/2.0", got)
		}
	})
}

// TestMuxHTTP1: HTTP/1.1 connections still reach net/http.
func TestMuxHTTP1(t *testing.T) {
	s := startMux(t, nil)
	hc := http1Client(t)
	if got := get(t, hc, s.base+"/proto"); got != "HTTP/1.1" {
		t.Fatalf("GET /proto answered %q, want HTTP/1.1", got)
	}
	for _, opts := range [][]connect.ClientOption{nil, {connect.WithGRPCWeb()}} {
		c := newEchoClients(hc, s.base, opts...)
		checkUnary(t, c, byHTTP)
		checkClientStream(t, c, byHTTP)
		checkServerStream(t, c, byHTTP)
	}
}

func get(t *testing.T, hc *http.Client, url string) string {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func checkGRPCUnary(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := &sv{}
	if err := conn.Invoke(ctx, "/test.Echo/Unary", wrapperspb.String("g"), got); err != nil {
		t.Fatalf("gRPC unary: %v", err)
	}
	if got.Value != byGRPC+"g" {
		t.Fatalf("gRPC unary answered %q, want %q", got.Value, byGRPC+"g")
	}
}

// sniffing reports how many connections the mux is still classifying.
func (m *mux) sniffing() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.classifying)
}

// waitFor polls cond every 5ms until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMuxIdleGRPCClient: a gRPC client that connects and sends nothing is
// ready at once (the sniffer's SETTINGS), goes to grpc-go when the sniff
// times out, and its later calls work.
func TestMuxIdleGRPCClient(t *testing.T) {
	s := startMux(t, func(m *mux) { m.h2cTimeout = 200 * time.Millisecond })
	conn := dialGRPC(t, s.addr)
	conn.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for st := conn.GetState(); st != connectivity.Ready; st = conn.GetState() {
		if !conn.WaitForStateChange(ctx, st) {
			t.Fatalf("gRPC client not ready: still %v; it waits for the server's SETTINGS", st)
		}
	}
	if n := s.m.sniffing(); n != 1 {
		t.Fatalf("%d connections being classified, want the idle one", n)
	}
	waitFor(t, 5*time.Second, "idle connection handed over", func() bool { return s.m.sniffing() == 0 })
	checkGRPCUnary(t, conn)
	if st := conn.GetState(); st != connectivity.Ready {
		t.Fatalf("gRPC client %v after the call, want READY on the same connection", st)
	}
}

// rawH2 is a client connection written and read frame by frame.
type rawH2 struct {
	c  net.Conn
	fr *http2.Framer
}

// dialRaw connects and sends the preface and an empty SETTINGS frame.
func dialRaw(t *testing.T, addr string) *rawH2 {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawH2{c: c, fr: http2.NewFramer(c, c)}
	r.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := io.WriteString(c, clientPreface); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return r
}

// next reads the next frame, failing after timeout.
func (r *rawH2) next(t *testing.T, timeout time.Duration) http2.Frame {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	f, err := r.fr.ReadFrame()
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	return f
}

// expectSettings reads the next frame, which must be a SETTINGS frame.
func (r *rawH2) expectSettings(t *testing.T, timeout time.Duration) *http2.SettingsFrame {
	t.Helper()
	f := r.next(t, timeout)
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("got %v, want SETTINGS", f.Header())
	}
	return sf
}

// writeRequest sends a request on stream 1 with the given headers and one
// enveloped message body.
func (r *rawH2) writeRequest(t *testing.T, headers [][2]string, body []byte) {
	t.Helper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, h := range headers {
		if err := enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteData(1, true, body); err != nil {
		t.Fatal(err)
	}
}

// readResponse reads frames until stream 1 ends, answering the server's
// SETTINGS, and returns the response's headers and body. A GOAWAY fails.
func (r *rawH2) readResponse(t *testing.T) (map[string]string, []byte) {
	t.Helper()
	headers := map[string]string{}
	var body []byte
	for {
		f := r.next(t, 5*time.Second)
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := r.fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: %s", f.ErrCode, f.DebugData())
		case *http2.RSTStreamFrame:
			t.Fatalf("RST_STREAM %v", f.ErrCode)
		case *http2.MetaHeadersFrame:
			for _, h := range f.Fields {
				headers[h.Name] = h.Value
			}
			if f.StreamEnded() {
				return headers, body
			}
		case *http2.DataFrame:
			body = append(body, f.Data()...)
			if f.StreamEnded() {
				return headers, body
			}
		}
	}
}

// connectUnary is the header list of a Connect unary call of
// test.Echo/Unary in binary proto.
func connectUnary(addr string) [][2]string {
	return [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":authority", addr}, {":path", "/test.Echo/Unary"},
		{"content-type", "application/proto"}, {"connect-protocol-version", "1"},
	}
}

// TestMuxSettingsAck: the client's acknowledgement of the sniffer's
// SETTINGS never reaches net/http's HTTP/2 server, whether it comes before
// the first request or after the connection was handed over.
func TestMuxSettingsAck(t *testing.T) {
	s := startMux(t, nil)
	body, err := proto.Marshal(wrapperspb.String("raw"))
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, r *rawH2) {
		t.Helper()
		headers, got := r.readResponse(t)
		if headers[":status"] != "200" {
			t.Fatalf("status %q, headers %v, body %q", headers[":status"], headers, got)
		}
		msg := &sv{}
		if err := proto.Unmarshal(got, msg); err != nil {
			t.Fatalf("body %q: %v", got, err)
		}
		if msg.Value != byHTTP+"raw" {
			t.Fatalf("answered %q", msg.Value)
		}
		// The connection is still usable: a PING is answered.
		if err := r.fr.WritePing(false, [8]byte{1}); err != nil {
			t.Fatal(err)
		}
		for {
			f := r.next(t, 5*time.Second)
			if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
				return
			}
			if g, ok := f.(*http2.GoAwayFrame); ok {
				t.Fatalf("GOAWAY %v: %s", g.ErrCode, g.DebugData())
			}
		}
	}
	t.Run("ack before the request", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		if sf := r.expectSettings(t, 5*time.Second); sf.IsAck() || sf.NumSettings() != 0 {
			t.Fatalf("first frame %v, want the sniffer's empty SETTINGS", sf)
		}
		if err := r.fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
		r.writeRequest(t, connectUnary(s.addr), body)
		check(t, r)
	})
	t.Run("ack after the request", func(t *testing.T) {
		r := dialRaw(t, s.addr)
		r.writeRequest(t, connectUnary(s.addr), body)
		r.expectSettings(t, 5*time.Second)
		// Wait until the connection has been handed over, so that the ACK
		// goes through h2cConn rather than the sniffer.
		waitFor(t, 5*time.Second, "connection handed over", func() bool { return s.m.sniffing() == 0 })
		if err := r.fr.WriteSettingsAck(); err != nil {
			t.Fatal(err)
		}
		check(t, r)
	})
}

// TestMuxIdlePing: a PING before any request ends the sniff at once (an
// idle client keeping its connection alive is a gRPC client), and grpc-go
// answers it.
func TestMuxIdlePing(t *testing.T) {
	s := startMux(t, func(m *mux) { m.h2cTimeout = time.Minute })
	r := dialRaw(t, s.addr)
	r.expectSettings(t, 5*time.Second)
	if err := r.fr.WritePing(false, [8]byte{'k', 'e', 'e', 'p'}); err != nil {
		t.Fatal(err)
	}
	for {
		f := r.next(t, 5*time.Second)
		if p, ok := f.(*http2.PingFrame); ok {
			if !p.IsAck() || p.Data != [8]byte{'k', 'e', 'e', 'p'} {
				t.Fatalf("PING %v, want the ACK of ours", p)
			}
			break
		}
	}
	if n := s.m.sniffing(); n != 0 {
		t.Fatalf("%d connections still being classified", n)
	}
}

// TestMuxGarbage: bytes after the preface that are not HTTP/2 frames get
// the connection closed cleanly (by grpc-go, as before the mux sniffed),
// and the port keeps serving.
func TestMuxGarbage(t *testing.T) {
	s := startMux(t, func(m *mux) { m.h2cTimeout = time.Minute })
	afterPreface := func(b ...byte) []byte { return append([]byte(clientPreface), b...) }
	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"not a frame", afterPreface([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")...)},
		{"huge frame", afterPreface(0xff, 0xff, 0xff, frameSettings, 0, 0, 0, 0, 0)},
		{"first frame not SETTINGS", afterPreface(0, 0, 4, frameData, 0, 0, 0, 0, 1, 'd', 'a', 't', 'a')},
		{"bad HPACK", afterPreface(0, 0, 0, frameSettings, 0, 0, 0, 0, 0, 0, 0, 2, frameHeaders, flagEndHeaders, 0, 0, 0, 1, 0xff, 0xff)},
		{"bad preface", []byte("PRI * HTTP/1.1\r\n\r\nxx\r\n\r\nyyyyyyyyyyyyyyyyyyyyyyyy")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			// Whatever the server says, the connection must end well before
			// any timeout of the mux.
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
				t.Fatalf("connection not closed: %v", err)
			}
			checkGRPCUnary(t, dialGRPC(t, s.addr))
			if got := get(t, testproc.H2CClient(t), s.base+"/proto"); got != "HTTP/2.0" {
				t.Fatalf("GET /proto over h2c answered %q", got)
			}
		})
	}
}

// isReset reports whether err is the peer resetting the connection (the
// server closed it with unread bytes).
func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// TestMuxCloseWhileSniffing: closing the mux closes connections still
// being classified, and serve returns without waiting for their sniff.
func TestMuxCloseWhileSniffing(t *testing.T) {
	s := startMux(t, func(m *mux) { m.h2cTimeout = time.Minute; m.sniffTimeout = time.Minute })
	idle := dialRaw(t, s.addr)
	idle.expectSettings(t, 5*time.Second)
	silent, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	waitFor(t, 5*time.Second, "both connections being classified", func() bool { return s.m.sniffing() == 2 })
	_ = s.m.grpc.Close()
	select {
	case <-s.served:
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not return after close")
	}
	for _, c := range []net.Conn{idle.c, silent} {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !isReset(err) {
			t.Fatalf("connection not closed: %v", err)
		}
	}
}
