// Package crdte2e holds the end-to-end tests of CRDT entities: the real
// cloudstate proxy, the presence and likes samples, the presence gateway
// and a CRDT test function (testfunction/) run as separate processes on
// loopback; the tests call them over real gRPC and HTTP, and drive the
// presence web page in headless Chromium.
//
// TestMain builds every binary once; -short skips everything here. Set
// CLOUDSTATE_E2E_RACE=1 to build them with the race detector; a race
// report in any process's output then fails the test that ran it.
package crdte2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// bins are the paths of the binaries TestMain built; empty under -short.
var bins struct {
	cloudstate, presence, likes, gateway, testfunction string
}

// repoRoot is the root of the repository (where the root go.mod is).
var repoRoot string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	var flags []string
	if raceEnabled() {
		flags = append(flags, "-race")
	}
	built, err := testproc.BuildTemp("cloudstate-crdt-", flags, "./cmd/cloudstate", "./samples/presence", "./samples/likes",
		"./samples/presence/gateway", "./test/crdt/testfunction")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/crdt:", err)
		return 1
	}
	defer os.RemoveAll(built.Dir)
	repoRoot = built.Root
	bins.cloudstate = built.Paths["cloudstate"]
	bins.presence = built.Paths["presence"]
	bins.likes = built.Paths["likes"]
	bins.gateway = built.Paths["gateway"]
	bins.testfunction = built.Paths["testfunction"]
	return m.Run()
}

func raceEnabled() bool { return os.Getenv("CLOUDSTATE_E2E_RACE") == "1" }

func requireBinaries(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests run real processes; skipped with -short")
	}
}

// startProcess starts bin with args and extra environment entries from the
// repository root. Its output is shown when the test fails, and a race
// report in it fails the test. At cleanup it gets SIGTERM, then SIGKILL if
// it has not exited after 10s.
func startProcess(t testing.TB, name string, env []string, bin string, args ...string) *testproc.Process {
	t.Helper()
	requireBinaries(t)
	return testproc.Start(t, testproc.Spec{Name: name, Path: bin, Args: args, Dir: repoRoot, Env: env, FailOnRace: true})
}

// startFunction starts a user function binary listening on 127.0.0.1:port.
func startFunction(t testing.TB, bin string, port int) *testproc.Process {
	t.Helper()
	return startProcess(t, filepath.Base(bin)+" :"+strconv.Itoa(port),
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}, bin)
}

// proxyShutdownTimeout is the proxy's --graceful-termination-timeout in
// these tests.
const proxyShutdownTimeout = 3 * time.Second

// proxy is a running cloudstate proxy process.
type proxy struct {
	*testproc.Process
	// addr is the proxy's public address, 127.0.0.1:port.
	addr    string
	checked atomic.Bool
}

// startProxy starts `cloudstate proxy` in front of a function on fnPort,
// with quick discovery retries; extra flags are appended. At cleanup it is
// stopped with SIGTERM and must exit 0 in time.
func startProxy(t testing.TB, fnPort int, extra ...string) *proxy {
	t.Helper()
	requireBinaries(t)
	port := testproc.FreePort(t)
	args := []string{"proxy",
		"--http-host", "127.0.0.1",
		"--http-port", strconv.Itoa(port),
		"--user-function-host", "127.0.0.1",
		"--user-function-port", strconv.Itoa(fnPort),
		"--discovery-backoff-min", "50ms",
		"--discovery-backoff-max", "200ms",
		"--graceful-termination-timeout", proxyShutdownTimeout.String(),
		"--log-level", "debug",
	}
	args = append(args, extra...)
	proc := startProcess(t, "cloudstate proxy :"+strconv.Itoa(port), nil, bins.cloudstate, args...)
	p := &proxy{Process: proc, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	// Registered after startProcess's cleanup, so it runs before it.
	t.Cleanup(func() { p.stopAndCheck(t) })
	return p
}

// stopAndCheck sends SIGTERM and fails the test unless the proxy exits with
// status 0 within its shutdown timeout plus a margin. It returns how long
// the proxy took. Only the first call checks; later ones return 0.
func (p *proxy) stopAndCheck(t testing.TB) time.Duration {
	t.Helper()
	if !p.checked.CompareAndSwap(false, true) {
		return 0
	}
	grace := proxyShutdownTimeout + 5*time.Second
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.Done():
	case <-timer.C:
	}
	if !p.Exited() {
		// SIGQUIT makes the Go runtime print every goroutine's stack to
		// the output shown below, then exit.
		p.Signal(syscall.SIGQUIT)
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			p.Stop(0)
		}
		t.Errorf("proxy (pid %d) did not exit within %v of SIGTERM; its goroutines are in its output", p.Pid(), grace)
	} else if code := p.ExitCode(); code != 0 {
		t.Errorf("proxy (pid %d) exited with status %d after SIGTERM, want 0", p.Pid(), code)
	}
	return time.Since(start)
}

// waitReady polls /ready until it answers 200.
func (p *proxy) waitReady(t testing.TB) {
	t.Helper()
	testproc.WaitOK(t, p.Process, "http://"+p.addr+"/ready", 20*time.Second, 2*time.Second)
}

// dial returns a gRPC client connection to addr, closed at cleanup.
func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stack is a user function with a ready proxy in front of it.
type stack struct {
	fn    *testproc.Process
	proxy *proxy
	conn  *grpc.ClientConn
}

// startStack starts the function bin and a proxy (with extra flags) and
// waits until the proxy is ready.
func startStack(t testing.TB, bin string, extra ...string) *stack {
	t.Helper()
	requireBinaries(t)
	fnPort := testproc.FreePort(t)
	s := &stack{fn: startFunction(t, bin, fnPort)}
	s.proxy = startProxy(t, fnPort, extra...)
	s.proxy.waitReady(t)
	s.conn = dial(t, s.proxy.addr)
	return s
}

// callCtx bounds one call in a test to 10s, so that a hung proxy fails the
// test instead of stalling it.
func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// wantStatus fails the test unless err is a gRPC status with code and a
// message containing msg.
func wantStatus(t testing.TB, what string, err error, code codes.Code, msg string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Fatalf("%s: got %v, want %s containing %q", what, err, code, msg)
	}
}

// recvResult is one message (or the end) of a server stream, read in the
// background so tests can wait for it with a deadline.
type recvResult[T any] struct {
	msg T
	err error
}

// streamReader reads a server stream into a channel until it ends. The
// goroutine ends with the stream; cancel the call's context to end it.
func streamReader[T any](recv func() (T, error)) <-chan recvResult[T] {
	ch := make(chan recvResult[T], 64)
	go func() {
		defer close(ch)
		for {
			m, err := recv()
			ch <- recvResult[T]{m, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

// next waits up to timeout for the next result of a stream read by
// streamReader.
func next[T any](t testing.TB, what string, ch <-chan recvResult[T], timeout time.Duration) recvResult[T] {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("%s: the stream was already over", what)
		}
		return r
	case <-timer.C:
		t.Fatalf("%s: nothing within %v", what, timeout)
	}
	panic("unreachable")
}

// nextMsg is next for a message: an error fails the test.
func nextMsg[T any](t testing.TB, what string, ch <-chan recvResult[T]) T {
	t.Helper()
	r := next(t, what, ch, 10*time.Second)
	if r.err != nil {
		t.Fatalf("%s: the stream ended: %v", what, r.err)
	}
	return r.msg
}

// quiet fails the test if ch delivers anything within d: it checks that
// nothing is sent, so it has to wait.
func quiet[T any](t testing.TB, what string, ch <-chan recvResult[T], d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-ch:
			if !ok {
				ch = nil // over, so nothing more can come: wait out d
				continue
			}
			t.Fatalf("%s: got %v (err %v), want nothing", what, r.msg, r.err)
		case <-timer.C:
			return
		}
	}
}

// contextWithCancel is callCtx with its cancel function, for tests that
// cancel a call on purpose.
func contextWithCancel(t testing.TB) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx, cancel
}
