// Package e2e holds the black-box end-to-end tests of the proxy: the real
// cloudstate binary and real user-function binaries run as separate
// processes on loopback, and the tests call them over real gRPC and HTTP.
//
// TestMain builds every binary once. Set CLOUDSTATE_E2E_RACE=1 to build them
// with the race detector; a race report in any process's output then fails
// the test that ran it.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// bins are the paths of the binaries TestMain built; empty under -short.
var bins struct {
	cloudstate, shoppingcart, testfunction string
}

// repoRoot is the root of the repository (where the root go.mod is).
var repoRoot string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		// Tests skip themselves; building takes seconds.
		return m.Run()
	}
	built, err := testproc.BuildTemp("cloudstate-e2e-", buildFlags(),
		"./cmd/cloudstate", "./samples/shoppingcart", "./test/e2e/testfunction")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(built.Dir)
	repoRoot = built.Root
	bins.cloudstate = built.Paths["cloudstate"]
	bins.shoppingcart = built.Paths["shoppingcart"]
	bins.testfunction = built.Paths["testfunction"]
	return m.Run()
}

// raceEnabled reports whether the binaries are built with -race.
func raceEnabled() bool { return os.Getenv("CLOUDSTATE_E2E_RACE") == "1" }

// buildFlags are the go build flags of the binaries.
func buildFlags() []string {
	if raceEnabled() {
		return []string{"-race"}
	}
	return nil
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests run real processes; skipped with -short")
	}
}

// startProcess starts bin with args and extra environment entries, from dir
// (the repository root when dir is ""). Its output is shown when the test
// fails, and a race report in it fails the test. At cleanup the process
// gets SIGTERM, then SIGKILL if it has not exited after 10s.
func startProcess(t *testing.T, name, dir string, env []string, bin string, args ...string) *testproc.Process {
	t.Helper()
	requireBinaries(t)
	if dir == "" {
		dir = repoRoot
	}
	return testproc.Start(t, testproc.Spec{Name: name, Path: bin, Args: args, Dir: dir, Env: env, FailOnRace: true})
}

// startFunction starts a user function binary listening on 127.0.0.1:port.
func startFunction(t *testing.T, bin string, port int) *testproc.Process {
	t.Helper()
	return startProcess(t, filepath.Base(bin)+" :"+strconv.Itoa(port), "",
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}, bin)
}

// proxyShutdownTimeout is the proxy's --graceful-termination-timeout in
// these tests; stopping it may take that long plus a margin.
const proxyShutdownTimeout = 3 * time.Second

// proxy is a running cloudstate proxy process.
type proxy struct {
	*testproc.Process
	httpPort int
	// addr is the proxy's public address, 127.0.0.1:httpPort.
	addr string
	// checked is set once stopAndCheck has run.
	checked atomic.Bool
}

// startProxy starts `cloudstate proxy` in front of a function on fnPort,
// with quick discovery retries and debug logs; extra flags are appended.
// At cleanup it is stopped with SIGTERM and must exit 0 in time.
func startProxy(t *testing.T, fnPort int, extra ...string) *proxy {
	t.Helper()
	requireBinaries(t)
	httpPort := testproc.FreePort(t)
	args := []string{"proxy",
		"--http-host", "127.0.0.1",
		"--http-port", strconv.Itoa(httpPort),
		"--user-function-host", "127.0.0.1",
		"--user-function-port", strconv.Itoa(fnPort),
		"--discovery-backoff-min", "50ms",
		"--discovery-backoff-max", "200ms",
		"--graceful-termination-timeout", proxyShutdownTimeout.String(),
		"--log-level", "debug",
	}
	args = append(args, extra...)
	proc := startProcess(t, "cloudstate proxy :"+strconv.Itoa(httpPort), "", nil, bins.cloudstate, args...)
	p := &proxy{Process: proc, httpPort: httpPort, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}
	// Registered after startProcess's cleanup, so it runs before it: the
	// proxy is stopped and its exit checked before its output is shown.
	t.Cleanup(func() { p.stopAndCheck(t) })
	return p
}

// stopAndCheck sends SIGTERM and fails the test unless the proxy exits with
// status 0 within its shutdown timeout plus a margin. It returns how long
// the proxy took. Only the first call checks; later ones return 0.
func (p *proxy) stopAndCheck(t *testing.T) time.Duration {
	t.Helper()
	if !p.checked.CompareAndSwap(false, true) {
		return 0
	}
	grace := proxyShutdownTimeout + 5*time.Second
	start := time.Now()
	if !p.Stop(grace) {
		t.Errorf("proxy (pid %d) did not exit within %v of SIGTERM; killed", p.Pid(), grace)
	} else if code := p.ExitCode(); code != 0 {
		t.Errorf("proxy (pid %d) exited with status %d after SIGTERM, want 0", p.Pid(), code)
	}
	return time.Since(start)
}

// httpStatus is the status code of GET path on the proxy, or an error.
func (p *proxy) httpStatus(path string) (int, error) {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.addr + path)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitReady polls /ready until it answers 200.
func (p *proxy) waitReady(t *testing.T) {
	t.Helper()
	testproc.WaitOK(t, p.Process, "http://"+p.addr+"/ready", 15*time.Second, 2*time.Second)
}

// dial returns a gRPC client connection to the proxy, closed at cleanup.
func (p *proxy) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// stack is a user function with a ready proxy in front of it.
type stack struct {
	fn     *testproc.Process
	fnBin  string
	fnPort int
	proxy  *proxy
	conn   *grpc.ClientConn
}

// startStack starts the function bin and a proxy (with extra flags) and
// waits until the proxy is ready.
func startStack(t *testing.T, bin string, extra ...string) *stack {
	t.Helper()
	requireBinaries(t)
	s := &stack{fnBin: bin, fnPort: testproc.FreePort(t)}
	s.fn = startFunction(t, bin, s.fnPort)
	s.proxy = startProxy(t, s.fnPort, extra...)
	s.proxy.waitReady(t)
	s.conn = s.proxy.dial(t)
	return s
}

// callCtx is the context for one call in a test: it bounds the call to
// 10s so that a hung proxy fails the test instead of stalling it.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
