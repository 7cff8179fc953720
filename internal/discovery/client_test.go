package discovery

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cloudstate-go/cloudstate/protocol"
)

// userFunction is a small EntityDiscovery implementation standing in for a
// user function.
type userFunction struct {
	protocol.UnimplementedEntityDiscoveryServer
	spec *protocol.EntitySpec
	// failures is how many discover calls fail with UNAVAILABLE before it answers.
	failures int
	// hangFirst makes the first discover call block until its deadline.
	hangFirst bool

	mu      sync.Mutex
	infos   []*protocol.ProxyInfo
	reports []string
}

func (u *userFunction) Discover(ctx context.Context, info *protocol.ProxyInfo) (*protocol.EntitySpec, error) {
	u.mu.Lock()
	u.infos = append(u.infos, info)
	n := len(u.infos)
	u.mu.Unlock()
	if u.hangFirst && n == 1 {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	if n <= u.failures {
		return nil, status.Error(codes.Unavailable, "still starting")
	}
	return u.spec, nil
}

func (u *userFunction) ReportError(_ context.Context, e *protocol.UserFunctionError) (*emptypb.Empty, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.reports = append(u.reports, e.GetMessage())
	return &emptypb.Empty{}, nil
}

func (u *userFunction) calls() (infos []*protocol.ProxyInfo, reports []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.infos), slices.Clone(u.reports)
}

// serve runs uf on lis until the test ends.
func serve(t *testing.T, lis net.Listener, uf *userFunction) {
	t.Helper()
	srv := grpc.NewServer()
	protocol.RegisterEntityDiscoveryServer(srv, uf)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
}

// startUserFunction serves uf on a fresh loopback port and returns its address.
func startUserFunction(t *testing.T, uf *userFunction) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	serve(t, lis, uf)
	return lis.Addr().String()
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func fastClient(conn grpc.ClientConnInterface, logs *logRecorder, opts ...ClientOption) *Client {
	build := BuildOptions{SupportedTypes: allTypes, CompatibilityCheck: true}
	opts = append([]ClientOption{
		WithBackoff(5*time.Millisecond, 40*time.Millisecond, 0.2),
		WithLogger(slog.New(logs)),
		WithProxyVersion("1.2.3"),
	}, opts...)
	return NewClient(conn, build, opts...)
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDiscoverSendsProxyInfo(t *testing.T) {
	uf := &userFunction{spec: cartSpec(t)}
	conn := dial(t, startUserFunction(t, uf))
	logs := newLogRecorder()

	model, err := fastClient(conn, logs).Discover(testContext(t))
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if model.Services["com.example.cart.ShoppingCart"] == nil {
		t.Errorf("model lacks the cart service: %v", model.ServiceNames)
	}
	infos, reports := uf.calls()
	want := &protocol.ProxyInfo{
		ProtocolMajorVersion: 0,
		ProtocolMinorVersion: 2,
		ProxyName:            "cloudstate-go",
		ProxyVersion:         "1.2.3",
		SupportedEntityTypes: allTypes,
	}
	if len(infos) != 1 || !proto.Equal(infos[0], want) {
		t.Errorf("discover received %v, want exactly [%v]", infos, want)
	}
	if len(reports) != 0 {
		t.Errorf("reportError called with %q on a valid spec", reports)
	}
}

func TestDiscoverWaitsForTheUserFunctionToListen(t *testing.T) {
	// Reserve an address, then leave it closed so that the first attempts
	// are refused.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()

	uf := &userFunction{spec: cartSpec(t)}
	logs := newLogRecorder()
	client := fastClient(dial(t, addr), logs)
	ctx := testContext(t)

	type result struct {
		model *Model
		err   error
	}
	done := make(chan result, 1)
	go func() {
		m, err := client.Discover(ctx)
		done <- result{m, err}
	}()

	// The first failed attempt is logged; only then does the function start.
	select {
	case level := <-logs.notify:
		if level != slog.LevelInfo {
			t.Fatalf("first log record has level %v, want INFO", level)
		}
	case <-ctx.Done():
		t.Fatalf("no failed attempt was logged")
	}
	late, err := listenWithin(ctx, addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	serve(t, late, uf)

	select {
	case r := <-done:
		if r.err != nil {
			t.Fatalf("Discover: %v", r.err)
		}
		if r.model.Services["com.example.cart.ShoppingCart"] == nil {
			t.Errorf("model lacks the cart service")
		}
	case <-ctx.Done():
		t.Fatalf("Discover did not return after the user function started")
	}
	if infos, _ := uf.calls(); len(infos) != 1 {
		t.Errorf("the user function saw %d discover calls, want 1", len(infos))
	}
	if n := logs.count(slog.LevelInfo); n != 1 {
		t.Errorf("logged %d INFO lines for the failed attempts, want 1 (throttled)", n)
	}
}

// listenWithin listens on addr, retrying while the port is still in use
// until ctx ends.
func listenWithin(ctx context.Context, addr string) (net.Listener, error) {
	for {
		lis, err := net.Listen("tcp", addr)
		if err == nil || ctx.Err() != nil {
			return lis, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestDiscoverRetriesErrorStatuses(t *testing.T) {
	uf := &userFunction{spec: cartSpec(t), failures: 3}
	logs := newLogRecorder()
	model, err := fastClient(dial(t, startUserFunction(t, uf)), logs).Discover(testContext(t))
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if model == nil {
		t.Fatalf("nil model")
	}
	if infos, _ := uf.calls(); len(infos) != 4 {
		t.Errorf("discover called %d times, want 4 (3 failures, then success)", len(infos))
	}
	if n := logs.count(slog.LevelInfo); n != 1 {
		t.Errorf("logged %d INFO lines for 3 quick failures, want 1", n)
	}
}

func TestDiscoverAttemptTimeout(t *testing.T) {
	uf := &userFunction{spec: cartSpec(t), hangFirst: true}
	logs := newLogRecorder()
	client := fastClient(dial(t, startUserFunction(t, uf)), logs, WithAttemptTimeout(100*time.Millisecond))
	if _, err := client.Discover(testContext(t)); err != nil {
		t.Fatalf("Discover: %v", err)
	}
	if infos, _ := uf.calls(); len(infos) != 2 {
		t.Errorf("discover called %d times, want 2 (one timed out)", len(infos))
	}
}

func TestDiscoverReportsAnInvalidSpecOnce(t *testing.T) {
	spec := cartSpec(t)
	spec.ServiceInfo = serviceInfo(0, 1)
	uf := &userFunction{spec: spec}
	logs := newLogRecorder()

	_, err := fastClient(dial(t, startUserFunction(t, uf)), logs).Discover(testContext(t))
	if !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("Discover error = %v, want ErrInvalidSpec", err)
	}
	const want = "Incompatible protocol version 0.1, only 0.2 is supported"
	if err.Error() != want {
		t.Errorf("error = %q, want %q", err, want)
	}
	infos, reports := uf.calls()
	if len(infos) != 1 {
		t.Errorf("discover called %d times, want 1 (no retry)", len(infos))
	}
	if !slices.Equal(reports, []string{want}) {
		t.Errorf("reportError received %q, want exactly [%q]", reports, want)
	}
	if n := logs.count(slog.LevelError); n != 1 {
		t.Errorf("logged %d ERROR lines, want 1", n)
	}
}

func TestDiscoverStopsWhenContextEnds(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = fastClient(dial(t, addr), newLogRecorder()).Discover(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Discover error = %v, want one wrapping context.DeadlineExceeded", err)
	}
}

func TestReportError(t *testing.T) {
	uf := &userFunction{}
	client := fastClient(dial(t, startUserFunction(t, uf)), newLogRecorder())
	if err := client.ReportError(testContext(t), "Service [x.Y] unknown"); err != nil {
		t.Fatalf("ReportError: %v", err)
	}
	if _, reports := uf.calls(); !slices.Equal(reports, []string{"Service [x.Y] unknown"}) {
		t.Errorf("reportError received %q", reports)
	}
}

func TestBackoff(t *testing.T) {
	c := NewClient(nil, BuildOptions{}, WithBackoff(time.Second, 10*time.Second, 0))
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := c.backoff(i + 1); got != w {
			t.Errorf("backoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	c = NewClient(nil, BuildOptions{})
	for attempt := 1; attempt < 50; attempt++ {
		base := min(time.Second<<min(attempt-1, 10), 10*time.Second)
		if got := c.backoff(attempt); got < base || got > base+base/5 {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", attempt, got, base, base+base/5)
		}
	}
}
