// Package http holds the black-box tests of the proxy's HTTP side with the
// real binaries: the cloudstate proxy and the shopping-cart sample run as
// separate processes on loopback, and the tests call them with HTTP/JSON
// (from Go and with the curl commands of the sample's README), Connect,
// gRPC-Web (from Go and from a headless Chromium page) and native gRPC.
// The cart-actions sample serves a server-streaming method over HTTP/JSON.
//
// TestMain builds the binaries once; -short skips everything here.
package httpe2e

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

var bins struct {
	cloudstate, shoppingcart, cartactions string
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
	built, err := testproc.BuildTemp("cloudstate-http-", nil, "./cmd/cloudstate", "./samples/shoppingcart", "./samples/cartactions")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/http:", err)
		return 1
	}
	defer os.RemoveAll(built.Dir)
	repoRoot = built.Root
	bins.cloudstate = built.Paths["cloudstate"]
	bins.shoppingcart = built.Paths["shoppingcart"]
	bins.cartactions = built.Paths["cartactions"]
	return m.Run()
}

// start runs bin with args and extra environment in the repository root;
// at cleanup it gets SIGTERM (SIGKILL after 10s) and its output is shown
// if the test failed.
func start(t testing.TB, name string, env []string, bin string, args ...string) *testproc.Process {
	t.Helper()
	return testproc.Start(t, testproc.Spec{Name: name, Path: bin, Args: args, Dir: repoRoot, Env: env})
}

// stack is a sample with a proxy in front of it.
type stack struct {
	// addr is the proxy's public address, 127.0.0.1:port.
	addr string
	// base is http://addr.
	base string
}

// startStack starts the shopping-cart sample and a proxy (in-memory store,
// extra flags appended) and waits until the proxy is ready.
func startStack(t testing.TB, extra ...string) *stack {
	t.Helper()
	return startSample(t, "shoppingcart", bins.shoppingcart, extra...)
}

// startSample starts the sample program bin and a proxy in front of it, as
// startStack does.
func startSample(t testing.TB, name, bin string, extra ...string) *stack {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the real binaries; skipped with -short")
	}
	fnPort, httpPort := testproc.FreePort(t), testproc.FreePort(t)
	start(t, name, []string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(fnPort)}, bin)
	args := append([]string{"proxy",
		"--http-host", "127.0.0.1",
		"--http-port", strconv.Itoa(httpPort),
		"--user-function-port", strconv.Itoa(fnPort),
		"--discovery-backoff-min", "50ms",
		"--discovery-backoff-max", "200ms",
		"--graceful-termination-timeout", "3s",
		"--log-level", "warn",
	}, extra...)
	proxy := start(t, "cloudstate proxy", nil, bins.cloudstate, args...)
	s := &stack{addr: "127.0.0.1:" + strconv.Itoa(httpPort)}
	s.base = "http://" + s.addr
	testproc.WaitOK(t, proxy, s.base+"/ready", 20*time.Second, 0)
	return s
}
