package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
)

// presenceServer is a small in-memory Presence service standing in for the
// proxy: a user is online while at least one Connect call is open.
type presenceServer struct {
	pb.UnimplementedPresenceServer
	mu      sync.Mutex
	conns   map[string]int
	changed chan struct{} // closed and replaced on every change
}

func newPresenceServer() *presenceServer {
	return &presenceServer{conns: make(map[string]int), changed: make(chan struct{})}
}

func (s *presenceServer) add(name string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[name] += n
	close(s.changed)
	s.changed = make(chan struct{})
}

// state returns whether name is online and a channel closed at the next
// change.
func (s *presenceServer) state(name string) (bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns[name] > 0, s.changed
}

func (s *presenceServer) Connect(in *pb.User, stream grpc.ServerStreamingServer[emptypb.Empty]) error {
	s.add(in.GetName(), 1)
	defer s.add(in.GetName(), -1)
	<-stream.Context().Done()
	return stream.Context().Err()
}

func (s *presenceServer) Monitor(in *pb.User, stream grpc.ServerStreamingServer[pb.OnlineStatus]) error {
	sent := false
	last := false
	for {
		online, changed := s.state(in.GetName())
		if !sent || online != last {
			if err := stream.Send(&pb.OnlineStatus{Online: online}); err != nil {
				return err
			}
			sent, last = true, online
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

// startPresence serves s on addr ("127.0.0.1:0" for any port) until the
// returned stop is called (also at cleanup).
func startPresence(t *testing.T, s *presenceServer, addr string) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	pb.RegisterPresenceServer(srv, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// startGateway serves a gateway calling the Presence service at addr.
func startGateway(t *testing.T, addr string) (*Gateway, *httptest.Server) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	gw := NewGateway(pb.NewPresenceClient(conn), addr)
	gw.retry = 20 * time.Millisecond
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(func() {
		// Event streams first (they hold Monitor calls), then the gateway.
		srv.CloseClientConnections()
		srv.Close()
		gw.Close()
		conn.Close()
	})
	return gw, srv
}

// sse is an event stream read by the test.
type sse struct {
	events chan sseEvent
	cancel context.CancelFunc
}

type sseEvent struct {
	kind string
	data map[string]any
}

func (e sseEvent) String() string { return fmt.Sprintf("%s %v", e.kind, e.data) }

// openEvents opens GET /events for users and reads its events.
func openEvents(t *testing.T, base string, users ...string) *sse {
	t.Helper()
	q := url.Values{"user": users}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/events?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /events: %v", err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET /events: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	s := &sse{events: make(chan sseEvent, 100), cancel: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(s.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		var kind, data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				kind = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data = strings.TrimPrefix(line, "data: ")
			case line == "" && kind != "":
				ev := sseEvent{kind: kind}
				if err := json.Unmarshal([]byte(data), &ev.data); err != nil {
					ev.data = map[string]any{"undecodable": data}
				}
				select {
				case s.events <- ev:
				case <-ctx.Done():
					return
				}
				kind, data = "", ""
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s
}

// await reads events until one matches want, failing after 5s.
func (s *sse) await(t *testing.T, what string, want func(sseEvent) bool) sseEvent {
	t.Helper()
	return s.awaitAll(t, what, want)[0]
}

// awaitAll reads events until each of wants has matched one, in any
// order (a page's events about different things may interleave), failing
// after 5s. It returns the matching events in the order of wants.
func (s *sse) awaitAll(t *testing.T, what string, wants ...func(sseEvent) bool) []sseEvent {
	t.Helper()
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	got := make([]sseEvent, len(wants))
	matched := make([]bool, len(wants))
	left := len(wants)
	var seen []string
	for left > 0 {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("event stream ended before %s; saw %v", what, seen)
			}
			seen = append(seen, ev.String())
			for i, want := range wants {
				if !matched[i] && want(ev) {
					matched[i], got[i] = true, ev
					left--
					break
				}
			}
		case <-timer.C:
			t.Fatalf("no %s within 5s; saw %v", what, seen)
		}
	}
	return got
}

// eventually polls cond until it is true, failing after 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func isStatus(name string, online bool) func(sseEvent) bool {
	return func(ev sseEvent) bool {
		return ev.kind == "status" && ev.data["name"] == name && ev.data["online"] == online
	}
}

func isConnection(name string, connected bool) func(sseEvent) bool {
	return func(ev sseEvent) bool {
		return ev.kind == "connection" && ev.data["name"] == name && ev.data["connected"] == connected
	}
}

// post sends {"name": name} to path and decodes the JSON answer.
func post(t *testing.T, base, path, name string) (int, map[string]any) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name})
	resp, err := http.Post(base+path, "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("POST %s: decode answer: %v", path, err)
	}
	return resp.StatusCode, out
}

func TestConnectAndDisconnectShowLive(t *testing.T) {
	ps := newPresenceServer()
	addr, _ := startPresence(t, ps, "127.0.0.1:0")
	_, srv := startGateway(t, addr)

	events := openEvents(t, srv.URL, "alice", "bob")
	hello := events.await(t, "hello", func(ev sseEvent) bool { return ev.kind == "hello" })
	if hello.data["proxy"] != addr {
		t.Errorf("hello names proxy %v, want %s", hello.data["proxy"], addr)
	}
	events.await(t, "alice offline", isStatus("alice", false))

	code, got := post(t, srv.URL, "/connect", "alice")
	if code != http.StatusOK || got["connected"] != true {
		t.Fatalf("POST /connect = %d %v, want 200 connected", code, got)
	}
	events.awaitAll(t, "alice's connection and presence", isConnection("alice", true), isStatus("alice", true))

	// Connecting again is not a second Connect call.
	if code, _ := post(t, srv.URL, "/connect", "alice"); code != http.StatusOK {
		t.Fatalf("second POST /connect = %d", code)
	}
	if online, _ := ps.state("alice"); !online {
		t.Fatal("alice is not online on the server")
	}
	ps.mu.Lock()
	n := ps.conns["alice"]
	ps.mu.Unlock()
	if n != 1 {
		t.Fatalf("alice has %d Connect calls open, want 1", n)
	}

	code, got = post(t, srv.URL, "/disconnect", "alice")
	if code != http.StatusOK || got["connected"] != false {
		t.Fatalf("POST /disconnect = %d %v, want 200 not connected", code, got)
	}
	events.awaitAll(t, "alice's disconnection and absence", isConnection("alice", false), isStatus("alice", false))

	// A second page sees the state of the first page's users at once.
	post(t, srv.URL, "/connect", "bob")
	other := openEvents(t, srv.URL, "bob")
	other.awaitAll(t, "bob's connection and presence", isConnection("bob", true), isStatus("bob", true))
}

func TestCloseEndsConnectCalls(t *testing.T) {
	ps := newPresenceServer()
	addr, _ := startPresence(t, ps, "127.0.0.1:0")
	gw, srv := startGateway(t, addr)
	if code, got := post(t, srv.URL, "/connect", "carol"); code != http.StatusOK {
		t.Fatalf("POST /connect = %d %v", code, got)
	}
	gw.Close()
	eventually(t, "carol goes offline once the gateway closed", func() bool {
		online, _ := ps.state("carol")
		return !online
	})
	if code, got := post(t, srv.URL, "/connect", "carol"); code != http.StatusBadGateway {
		t.Fatalf("POST /connect after Close = %d %v, want 502", code, got)
	}
}

// TestProxyDown: with nothing listening at the proxy address, the page is
// told why each user's presence is unknown and why a connect failed; once
// the proxy is up, the gateway recovers without the page doing anything.
func TestProxyDown(t *testing.T) {
	ps := newPresenceServer()
	addr, stop := startPresence(t, ps, "127.0.0.1:0")
	stop()
	_, srv := startGateway(t, addr)

	events := openEvents(t, srv.URL, "dave")
	problem := events.await(t, "a problem for dave", func(ev sseEvent) bool { return ev.kind == "problem" })
	if msg, _ := problem.data["error"].(string); !strings.Contains(msg, "unavailable") || !strings.Contains(msg, addr) {
		t.Errorf("problem = %q, want it to say the proxy at %s is unavailable", msg, addr)
	}

	// The Connect call fails at once or right after: either way the
	// page learns why.
	code, got := post(t, srv.URL, "/connect", "dave")
	switch {
	case code == http.StatusBadGateway:
		if msg, _ := got["error"].(string); !strings.Contains(msg, "unavailable") {
			t.Errorf("POST /connect error = %q, want it to say the proxy is unavailable", msg)
		}
	case code == http.StatusOK:
		ev := events.await(t, "dave's failed connection", func(ev sseEvent) bool {
			return ev.kind == "connection" && ev.data["error"] != nil
		})
		if msg, _ := ev.data["error"].(string); !strings.Contains(msg, "unavailable") {
			t.Errorf("connection error = %q, want it to say the proxy is unavailable", msg)
		}
	default:
		t.Fatalf("POST /connect = %d %v", code, got)
	}

	// The proxy comes up on the same address.
	startPresence(t, ps, addr)
	events.await(t, "dave offline once the proxy is up", isStatus("dave", false))
	if code, got := post(t, srv.URL, "/connect", "dave"); code != http.StatusOK || got["connected"] != true {
		t.Fatalf("POST /connect with the proxy up = %d %v", code, got)
	}
	events.await(t, "dave online", isStatus("dave", true))
}

// TestProxyGoesAway: a Connect call that the proxy ends is reported, and
// the Monitor is retried.
func TestProxyGoesAway(t *testing.T) {
	ps := newPresenceServer()
	addr, stop := startPresence(t, ps, "127.0.0.1:0")
	_, srv := startGateway(t, addr)
	events := openEvents(t, srv.URL, "erin")
	post(t, srv.URL, "/connect", "erin")
	events.await(t, "erin online", isStatus("erin", true))

	stop()
	got := events.awaitAll(t, "erin's lost connection and unknown presence", func(ev sseEvent) bool {
		return ev.kind == "connection" && ev.data["connected"] == false && ev.data["error"] != nil
	}, func(ev sseEvent) bool { return ev.kind == "problem" && ev.data["name"] == "erin" })
	if msg, _ := got[0].data["error"].(string); !strings.HasPrefix(msg, "disconnected: ") {
		t.Errorf("connection error = %q, want a disconnection", msg)
	}
}

func TestPageAndBadRequests(t *testing.T) {
	ps := newPresenceServer()
	addr, _ := startPresence(t, ps, "127.0.0.1:0")
	_, srv := startGateway(t, addr)

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "new EventSource(") {
		t.Fatalf("GET / = %s, want the page", resp.Status)
	}

	for _, tc := range []struct {
		name, method, path, ctype, body string
		want                            int
	}{
		{"no name", "POST", "/connect", "application/json", `{"name":"  "}`, http.StatusBadRequest},
		{"long name", "POST", "/connect", "application/json", `{"name":"` + strings.Repeat("x", 65) + `"}`, http.StatusBadRequest},
		{"bad JSON", "POST", "/disconnect", "application/json", `{"name":`, http.StatusBadRequest},
		{"form post", "POST", "/connect", "application/x-www-form-urlencoded", `name=alice`, http.StatusUnsupportedMediaType},
		{"GET connect", "GET", "/connect", "", "", http.StatusMethodNotAllowed},
		{"events without a name", "GET", "/events?user=", "", "", http.StatusBadRequest},
		{"unknown path", "GET", "/nope", "", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
			}
		})
	}
	if online, _ := ps.state("alice"); online {
		t.Fatal("a rejected request connected alice")
	}
}
