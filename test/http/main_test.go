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
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bins struct {
	cloudstate, shoppingcart, cartactions string
}

// repoRoot is the root of the repository (where the root go.mod is).
var repoRoot string

const rootModule = "github.com/cloudstate-go/cloudstate"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		return m.Run()
	}
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/http:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "cloudstate-http-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test/http:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/cloudstate", "./samples/shoppingcart", "./samples/cartactions")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "test/http: go build: %v\n%s", err, out)
		return 1
	}
	bins.cloudstate = filepath.Join(dir, "cloudstate")
	bins.shoppingcart = filepath.Join(dir, "shoppingcart")
	bins.cartactions = filepath.Join(dir, "cartactions")
	return m.Run()
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module "+rootModule+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module " + rootModule + " above the working directory")
		}
		dir = parent
	}
}

// eventually polls cond every 10ms until it returns nil, failing with its
// last error when timeout passes first.
func eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// logBuffer collects a process's output; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs bin with args and extra environment; at cleanup it gets
// SIGTERM (SIGKILL after 10s) and its output is shown if the test failed.
func start(t testing.TB, name string, env []string, bin string, args ...string) {
	t.Helper()
	logs := &logBuffer{}
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, cmd.Process.Pid, logs.String())
		}
	})
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
	fnPort, httpPort := freePort(t), freePort(t)
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
	start(t, "cloudstate proxy", nil, bins.cloudstate, args...)
	s := &stack{addr: "127.0.0.1:" + strconv.Itoa(httpPort)}
	s.base = "http://" + s.addr
	eventually(t, 20*time.Second, func() error {
		resp, err := http.Get(s.base + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready: %s", resp.Status)
		}
		return nil
	})
	return s
}
