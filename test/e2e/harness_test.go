// Package e2e holds the black-box end-to-end tests of the proxy: the real
// cloudstate binary and real user-function binaries run as separate
// processes on loopback, and the tests call them over real gRPC and HTTP.
//
// TestMain builds every binary once. Set CLOUDSTATE_E2E_RACE=1 to build them
// with the race detector; a race report in any process's output then fails
// the test that ran it.
package e2e

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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// bins are the paths of the binaries TestMain built; empty under -short.
var bins struct {
	cloudstate, shoppingcart, testfunction string
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
		// Tests skip themselves; building takes seconds.
		return m.Run()
	}
	root, err := findRepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "cloudstate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := buildBinaries(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
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

// raceEnabled reports whether the binaries are built with -race.
func raceEnabled() bool { return os.Getenv("CLOUDSTATE_E2E_RACE") == "1" }

// buildBinaries builds the proxy, the shopping cart sample and the test
// function into dir with one go build.
func buildBinaries(dir string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled() {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/cloudstate", "./samples/shoppingcart", "./test/e2e/testfunction")
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	bins.cloudstate = filepath.Join(dir, "cloudstate")
	bins.shoppingcart = filepath.Join(dir, "shoppingcart")
	bins.testfunction = filepath.Join(dir, "testfunction")
	return nil
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end tests run real processes; skipped with -short")
	}
}

// eventually polls cond every 10ms until it returns nil, and fails the test
// with cond's last error when timeout passes first.
func eventually(t *testing.T, timeout time.Duration, cond func() error) {
	t.Helper()
	eventuallyEvery(t, timeout, 10*time.Millisecond, cond)
}

// eventuallyEvery is eventually with a chosen interval between polls. Tests
// that wait for an entity to go idle poll less often than its passivation
// timeout, because every poll is a command that keeps it alive.
func eventuallyEvery(t *testing.T, timeout, interval time.Duration, cond func() error) {
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
		time.Sleep(interval)
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

// startProcess starts bin with args and extra environment entries, from dir
// (the repository root when dir is ""). Its output goes to a buffer that
// is shown when the test fails. At cleanup the process gets SIGTERM, then
// SIGKILL if it has not exited after 10s.
func startProcess(t *testing.T, name, dir string, env []string, bin string, args ...string) *process {
	t.Helper()
	requireBinaries(t)
	if dir == "" {
		dir = repoRoot
	}
	p := &process{name: name, logs: &logBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// A grandchild holding the output pipe must not make Wait hang.
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			p.stop(10 * time.Second)
		}
		if strings.Contains(p.logs.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
		if t.Failed() {
			t.Logf("--- output of %s (pid %d) ---\n%s", name, p.cmd.Process.Pid, p.logs.String())
		}
	})
	return p
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

// exitCode is the exit status, or -1 if it was ended by a signal.
func (p *process) exitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// stop sends SIGTERM and waits up to grace for the process to exit; then it
// sends SIGKILL. It reports whether SIGTERM alone was enough.
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

// kill sends SIGKILL and waits for the process to be reaped.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startFunction starts a user function binary listening on 127.0.0.1:port.
func startFunction(t *testing.T, bin string, port int) *process {
	t.Helper()
	return startProcess(t, filepath.Base(bin)+" :"+strconv.Itoa(port), "",
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)}, bin)
}

// proxyShutdownTimeout is the proxy's --graceful-termination-timeout in
// these tests; stopping it may take that long plus a margin.
const proxyShutdownTimeout = 3 * time.Second

// proxy is a running cloudstate proxy process.
type proxy struct {
	*process
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
	httpPort := freePort(t)
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
	p := &proxy{process: proc, httpPort: httpPort, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(httpPort))}
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
	if !p.stop(grace) {
		t.Errorf("proxy (pid %d) did not exit within %v of SIGTERM; killed", p.pid(), grace)
	} else if code := p.exitCode(); code != 0 {
		t.Errorf("proxy (pid %d) exited with status %d after SIGTERM, want 0", p.pid(), code)
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
	eventually(t, 15*time.Second, func() error {
		if p.exited() {
			return fmt.Errorf("proxy exited: %v", p.err)
		}
		code, err := p.httpStatus("/ready")
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("/ready answered %d", code)
		}
		return nil
	})
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
	fn     *process
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
	s := &stack{fnBin: bin, fnPort: freePort(t)}
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
