// Package testproc runs the real binaries of the repository as child
// processes for the end-to-end tests: it builds them, starts them with
// their output captured, and ends them by pid at cleanup, showing their
// output when the test failed. It also has the small helpers those tests
// share (a free port, polling until a condition holds).
//
// It is only imported by tests.
package testproc

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RootModule is the module path of the repository's root go.mod.
const RootModule = "github.com/cloudstate-go/cloudstate"

// RepoRoot walks up from the working directory to the directory of the
// root module's go.mod. Tests run in their package's directory, so this
// finds the repository from any of them.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find the repository root: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module "+RootModule+"\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module " + RootModule + " above the working directory")
		}
		dir = parent
	}
}

// Build builds the main packages pkgs (paths relative to repoRoot, such as
// "./cmd/cloudstate") into dir with one go build, which shares the work
// common to them, adding flags (such as -race) to the command. It returns
// each binary's path by its name, the last element of its package path.
func Build(repoRoot, dir string, flags []string, pkgs ...string) (map[string]string, error) {
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, flags...)
	args = append(args, pkgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	bins := make(map[string]string, len(pkgs))
	for _, pkg := range pkgs {
		name := filepath.Base(pkg)
		bins[name] = filepath.Join(dir, name)
	}
	return bins, nil
}

// Built is what BuildTemp built.
type Built struct {
	// Root is the repository root the binaries were built from.
	Root string
	// Dir is the temporary directory holding them; the caller removes it.
	Dir string
	// Paths are the binaries' paths by name, as Build returns them.
	Paths map[string]string
}

// BuildTemp finds the repository root with RepoRoot, makes a temporary
// directory named from pattern (as os.MkdirTemp does) and builds pkgs into
// it with Build; it is what a TestMain does before running the tests. On
// an error nothing is left behind.
func BuildTemp(pattern string, flags []string, pkgs ...string) (Built, error) {
	root, err := RepoRoot()
	if err != nil {
		return Built{}, err
	}
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return Built{}, fmt.Errorf("make a directory for the test binaries: %w", err)
	}
	paths, err := Build(root, dir, flags, pkgs...)
	if err != nil {
		os.RemoveAll(dir)
		return Built{}, err
	}
	return Built{Root: root, Dir: dir, Paths: paths}, nil
}

// FreePort returns a TCP port on loopback that was free a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// H2CClient returns an HTTP client that speaks only HTTP/2 with prior
// knowledge over cleartext TCP (h2c), as gRPC clients do; its idle
// connections close when tb ends.
func H2CClient(tb testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	tb.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// Eventually polls cond every 10ms until it returns nil, and fails tb with
// cond's last error when timeout passes first.
func Eventually(tb testing.TB, timeout time.Duration, cond func() error) {
	tb.Helper()
	EventuallyEvery(tb, timeout, 10*time.Millisecond, cond)
}

// EventuallyEvery is Eventually with a chosen interval between polls, for
// conditions whose every check has an effect, such as a command that keeps
// an entity from going idle.
func EventuallyEvery(tb testing.TB, timeout, interval time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

// WaitOK polls GET url every 10ms until it answers 200 OK, each GET taking
// up to perGet (0: no limit). It fails tb with the last error when timeout
// passes first, and at once when p (unless nil) has exited, since then the
// answer can never come.
func WaitOK(tb testing.TB, p *Process, url string, timeout, perGet time.Duration) {
	tb.Helper()
	client := http.Client{Timeout: perGet}
	Eventually(tb, timeout, func() error {
		if p != nil && p.Exited() {
			tb.Fatalf("%s exited before GET %s answered 200: %v", p.Name(), url, p.Wait())
		}
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s answered %s", url, resp.Status)
		}
		return nil
	})
}

// LogBuffer collects output, such as a process's or a logger's; it is safe
// for concurrent use. The zero value is an empty buffer.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Tail returns the last n lines of s, after a line that says how many came
// before them.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d lines before)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// DefaultStopGrace is how long the cleanup of a process waits after
// SIGTERM before it sends SIGKILL, unless Spec.StopGrace says otherwise.
const DefaultStopGrace = 10 * time.Second

// Spec is a process for Start.
type Spec struct {
	// Name names the process in failures and in the output shown.
	Name string
	// Path is the binary; Args are its arguments.
	Path string
	Args []string
	// Dir is the working directory; "" is the test's.
	Dir string
	// Env entries are added to the test's environment.
	Env []string
	// TailLines, when above 0, shows only the last lines of the output
	// when the test failed (long-running load writes a lot).
	TailLines int
	// FailOnRace fails the test when the output has a race detector
	// report, for binaries built with -race.
	FailOnRace bool
	// StopGrace is how long cleanup waits after SIGTERM before SIGKILL;
	// 0 is DefaultStopGrace.
	StopGrace time.Duration
}

// Process is a child process started by Start.
type Process struct {
	name string
	cmd  *exec.Cmd
	logs *LogBuffer
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // cmd.Wait's result; read only after done is closed
}

// Start starts the process spec describes, with stdout and stderr going to
// one buffer. At tb's cleanup, unless it has exited, the process gets
// SIGTERM and then, if it has not exited after spec.StopGrace, SIGKILL;
// then its output is shown if tb failed.
func Start(tb testing.TB, spec Spec) *Process {
	tb.Helper()
	p := &Process{name: spec.Name, logs: &LogBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(spec.Path, spec.Args...)
	p.cmd.Dir = spec.Dir
	p.cmd.Env = append(os.Environ(), spec.Env...)
	p.cmd.Stdout = p.logs
	p.cmd.Stderr = p.logs
	// A grandchild holding the output pipe must not make Wait hang.
	p.cmd.WaitDelay = 2 * time.Second
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", spec.Name, err)
	}
	// Ends when the process exits; cleanup makes sure it does.
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	grace := spec.StopGrace
	if grace == 0 {
		grace = DefaultStopGrace
	}
	tb.Cleanup(func() {
		p.Stop(grace)
		out := p.logs.String()
		if spec.FailOnRace && strings.Contains(out, "WARNING: DATA RACE") {
			tb.Errorf("%s reported a data race", spec.Name)
		}
		if tb.Failed() {
			if spec.TailLines > 0 {
				out = Tail(out, spec.TailLines)
			}
			tb.Logf("--- output of %s (pid %d) ---\n%s", spec.Name, p.Pid(), out)
		}
	})
	return p
}

// Name is the process's name from its Spec.
func (p *Process) Name() string { return p.name }

// Pid is the process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process wrote so far, stdout and stderr
// interleaved.
func (p *Process) Output() string { return p.logs.String() }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to exit and returns what exec.Cmd.Wait
// returned.
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// ExitCode waits for the process to exit and returns its exit status, or
// -1 if a signal ended it.
func (p *Process) ExitCode() int {
	<-p.done
	return p.cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process; it does nothing once the process has
// been reaped, so it never reaches another process that got the pid.
func (p *Process) Signal(sig os.Signal) {
	_ = p.cmd.Process.Signal(sig)
}

// Stop sends SIGTERM and waits up to grace for the process to exit; then
// it sends SIGKILL and waits for that. It reports whether SIGTERM was
// enough (true as well when the process had already exited).
func (p *Process) Stop(grace time.Duration) (graceful bool) {
	if p.Exited() {
		return true
	}
	p.Signal(syscall.SIGTERM)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-p.done:
		return true
	case <-timer.C:
		p.Kill()
		return false
	}
}

// Kill sends SIGKILL and waits until the process is reaped.
func (p *Process) Kill() {
	p.Signal(syscall.SIGKILL)
	<-p.done
}
