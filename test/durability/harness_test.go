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
	"bytes"
	"context"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// bins are the binaries TestMain built.
var bins struct {
	cloudstate, shoppingcart string
}

// repoRoot is the root of the repository (where the root go.mod is).
var repoRoot string

const rootModule = "github.com/cloudstate-go/cloudstate"

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "durability:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "cloudstate-durability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "durability:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/cloudstate", "./samples/shoppingcart")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "durability: go build: %v\n%s", err, out)
		return 1
	}
	bins.cloudstate = filepath.Join(dir, "cloudstate")
	bins.shoppingcart = filepath.Join(dir, "shoppingcart")
	return m.Run()
}

// findRepoRoot walks up from the working directory to the root module.
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

// eventually polls cond every 10ms until it returns nil, and fails the test
// with cond's last error if timeout passes first.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
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

// freePort returns a TCP port on loopback that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
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

// process is a child process started by a test.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *logBuffer
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// startProcess starts bin with args and extra environment entries in the
// repository root. Its output is shown when the test fails. At cleanup it
// gets SIGTERM, then SIGKILL after 10s.
func startProcess(t *testing.T, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	p := &process{name: name, logs: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = repoRoot
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(10 * time.Second)
		if t.Failed() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, p.pid(), tail(p.logs.String(), 60))
		}
	})
	return p
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits up to grace for the process to exit, then
// sends SIGKILL. It reports whether SIGTERM was enough.
func (p *process) stop(grace time.Duration) (graceful bool) {
	if p.exited() {
		return true
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startFunction starts the shopping-cart sample on a free port.
func startFunction(t *testing.T) (fn *process, port int) {
	t.Helper()
	port = freePort(t)
	fn = startProcess(t, "shoppingcart :"+strconv.Itoa(port),
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}, bins.shoppingcart)
	return fn, port
}

// proxyShutdownTimeout is the proxy's --graceful-termination-timeout here.
const proxyShutdownTimeout = 3 * time.Second

// proxy is a running cloudstate proxy process.
type proxy struct {
	*process
	addr string // 127.0.0.1:<http port>
}

// startProxy starts `cloudstate proxy` on httpPort (0 picks a free one) in
// front of the function on fnPort, keeping state in store.
func startProxy(t *testing.T, fnPort, httpPort int, store string) *proxy {
	t.Helper()
	if httpPort == 0 {
		httpPort = freePort(t)
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
	return &proxy{process: proc, addr: addr}
}

// stopAndCheck stops the proxy with SIGTERM and fails the test unless it
// exits with status 0 in time.
func (p *proxy) stopAndCheck(t *testing.T) {
	t.Helper()
	if !p.stop(proxyShutdownTimeout + 5*time.Second) {
		t.Errorf("proxy (pid %d) did not exit within its shutdown timeout after SIGTERM; killed", p.pid())
	} else if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("proxy (pid %d) exited with status %d after SIGTERM, want 0", p.pid(), code)
	}
}

// waitReady polls /ready until it answers 200.
func (p *proxy) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	client := http.Client{Timeout: time.Second}
	eventually(t, timeout, func() error {
		if p.exited() {
			return fmt.Errorf("proxy exited: %v", p.err)
		}
		resp, err := client.Get("http://" + p.addr + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/ready answered %d", resp.StatusCode)
		}
		return nil
	})
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
