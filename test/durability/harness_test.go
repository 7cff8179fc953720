// Package durability holds the crash-safety tests of the durable stores with
// real processes: the cloudstate proxy and the shopping-cart sample run as
// separate binaries on loopback, clients write through the proxy while the
// proxy is killed or the database restarted, and afterwards the journal is
// read straight from the store and checked: every acknowledged write is
// there, nothing is duplicated, sequence numbers have no gaps.
//
// TestMain builds the binaries once. Under -short the tests that take
// longest (the database restart) are skipped; all of them skip when
// PostgreSQL is missing unless CLOUDSTATE_REQUIRE_SERVICES=1.
package durability

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// bins are the binaries TestMain built.
var bins struct {
	cloudstate, shoppingcart string
}

// repoRoot is the root of the repository (where the root go.mod is).
var repoRoot string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	built, err := testproc.BuildTemp("cloudstate-durability-", nil, "./cmd/cloudstate", "./samples/shoppingcart")
	if err != nil {
		fmt.Fprintln(os.Stderr, "durability:", err)
		return 1
	}
	defer os.RemoveAll(built.Dir)
	repoRoot = built.Root
	bins.cloudstate = built.Paths["cloudstate"]
	bins.shoppingcart = built.Paths["shoppingcart"]
	return m.Run()
}

// startProcess starts bin with args and extra environment entries in the
// repository root. The last 60 lines of its output are shown when the test
// fails. At cleanup it gets SIGTERM, then SIGKILL after 10s.
func startProcess(t *testing.T, name string, env []string, bin string, args ...string) *testproc.Process {
	t.Helper()
	return testproc.Start(t, testproc.Spec{Name: name, Path: bin, Args: args, Dir: repoRoot, Env: env, TailLines: 60})
}

// startFunction starts the shopping-cart sample on a free port.
func startFunction(t *testing.T) (fn *testproc.Process, port int) {
	t.Helper()
	port = testproc.FreePort(t)
	fn = startProcess(t, "shoppingcart :"+strconv.Itoa(port),
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}, bins.shoppingcart)
	return fn, port
}

// proxyShutdownTimeout is the proxy's --graceful-termination-timeout here.
const proxyShutdownTimeout = 3 * time.Second

// proxy is a running cloudstate proxy process.
type proxy struct {
	*testproc.Process
	addr string // 127.0.0.1:<http port>
}

// startProxy starts `cloudstate proxy` on httpPort (0 picks a free one) in
// front of the function on fnPort, keeping state in store.
func startProxy(t *testing.T, fnPort, httpPort int, store string) *proxy {
	t.Helper()
	if httpPort == 0 {
		httpPort = testproc.FreePort(t)
	}
	args := []string{"proxy",
		"--http-host", "127.0.0.1",
		"--http-port", strconv.Itoa(httpPort),
		"--user-function-host", "127.0.0.1",
		"--user-function-port", strconv.Itoa(fnPort),
		"--store", store,
		"--discovery-backoff-min", "50ms",
		"--discovery-backoff-max", "200ms",
		"--graceful-termination-timeout", proxyShutdownTimeout.String(),
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))
	proc := startProcess(t, "cloudstate proxy "+addr, nil, bins.cloudstate, args...)
	return &proxy{Process: proc, addr: addr}
}

// stopAndCheck stops the proxy with SIGTERM and fails the test unless it
// exits with status 0 in time.
func (p *proxy) stopAndCheck(t *testing.T) {
	t.Helper()
	if !p.Stop(proxyShutdownTimeout + 5*time.Second) {
		t.Errorf("proxy (pid %d) did not exit within its shutdown timeout after SIGTERM; killed", p.Pid())
	} else if code := p.ExitCode(); code != 0 {
		t.Errorf("proxy (pid %d) exited with status %d after SIGTERM, want 0", p.Pid(), code)
	}
}

// waitReady polls /ready until it answers 200.
func (p *proxy) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	testproc.WaitOK(t, p.Process, "http://"+p.addr+"/ready", timeout, time.Second)
}

// dial returns a client connection to addr that reconnects quickly after
// the server comes back (gRPC's default backoff grows to two minutes).
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, Jitter: 0.2, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// bounded returns a context for one step of a test that must not hang.
func bounded(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
