package testproc

import (
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// helperBin is testdata/helper, built by TestMain with BuildTemp.
var helperBin string

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	built, err := BuildTemp("cloudstate-testproc-", nil, "./internal/testproc/testdata/helper")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testproc:", err)
		return 1
	}
	defer os.RemoveAll(built.Dir)
	helperBin = built.Paths["helper"]
	return m.Run()
}

// fakeTB stands in for a test whose failures and cleanups are the subject
// of a test: it records them instead of acting on the real test.
type fakeTB struct {
	testing.TB // the real test, for Helper and the rest

	mu       sync.Mutex
	failed   bool
	logs     []string
	cleanups []func()
}

func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}

func (f *fakeTB) Failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

func (f *fakeTB) Errorf(format string, args ...any) {
	f.Logf(format, args...)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failed = true
}

// Fatalf ends the goroutine, as testing.T's does; run fn with do.
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.Errorf(format, args...)
	runtime.Goexit()
}

// do runs fn on its own goroutine, so that Fatalf can end it, and waits.
func (f *fakeTB) do(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	<-done
}

// cleanup runs the registered cleanups, the last first, as testing does.
func (f *fakeTB) cleanup() {
	f.mu.Lock()
	fns := f.cleanups
	f.cleanups = nil
	f.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

func (f *fakeTB) text() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.logs, "\n")
}

// startHelper starts testdata/helper with args under tb.
func startHelper(tb testing.TB, spec Spec, args ...string) *Process {
	spec.Path = helperBin
	spec.Args = args
	if spec.Name == "" {
		spec.Name = "helper " + strings.Join(args, " ")
	}
	return Start(tb, spec)
}

// waitFor waits until p has written want.
func waitFor(t *testing.T, p *Process, want string) {
	t.Helper()
	Eventually(t, 10*time.Second, func() error {
		if !strings.Contains(p.Output(), want) {
			return fmt.Errorf("%s has not written %q; output: %q", p.Name(), want, p.Output())
		}
		return nil
	})
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if want := filepath.Join(root, "internal", "testproc"); wd != want {
		t.Errorf("RepoRoot() = %s, but the test runs in %s", root, wd)
	}
}

func TestBuildTemp(t *testing.T) {
	if got := filepath.Dir(helperBin); filepath.Dir(got) != os.TempDir() || !strings.HasPrefix(filepath.Base(got), "cloudstate-testproc-") {
		t.Errorf("helper built in %s, want a new directory cloudstate-testproc-* in %s", got, os.TempDir())
	}
	if _, err := os.Stat(helperBin); err != nil {
		t.Errorf("the helper binary: %v", err)
	}
	_, err := BuildTemp("cloudstate-testproc-fail-", nil, "./internal/testproc/testdata/nosuchpackage")
	if err == nil {
		t.Fatal("BuildTemp of a missing package succeeded")
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "cloudstate-testproc-fail-*"))
	if len(left) > 0 {
		t.Errorf("BuildTemp left %v behind after failing", left)
	}
}

func TestBuildFails(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, err = Build(root, t.TempDir(), []string{"-trimpath"}, "./internal/testproc/testdata/nosuchpackage")
	if err == nil {
		t.Fatal("Build of a missing package succeeded")
	}
	for _, want := range []string{"go build -o ", " -trimpath ./internal/testproc/testdata/nosuchpackage", "nosuchpackage"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Build error %q does not say %q", err, want)
		}
	}
}

func TestOutputEnvAndDir(t *testing.T) {
	dir := t.TempDir()
	f := &fakeTB{TB: t}
	p := startHelper(f, Spec{Dir: dir, Env: []string{"TESTPROC_WORD=hello"}}, "print", "3")
	if code := p.ExitCode(); code != 3 {
		t.Errorf("exit status %d, want 3", code)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("Wait() = %v, want exit status 3", err)
	}
	out := p.Output()
	for _, want := range []string{"to stdout hello\n", "to stderr\n", "in " + dir + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output %q lacks %q", out, want)
		}
	}
	f.cleanup()
	if f.Failed() || f.text() != "" {
		t.Errorf("a passing test's cleanup failed it or logged: %q", f.text())
	}
}

func TestOutputShownWhenFailed(t *testing.T) {
	f := &fakeTB{TB: t}
	p := startHelper(f, Spec{Name: "the helper"}, "print", "0")
	p.Wait()
	f.Errorf("the test failed")
	f.cleanup()
	want := fmt.Sprintf("--- output of the helper (pid %d) ---\n%s", p.Pid(), p.Output())
	if got := f.text(); !strings.Contains(got, want) {
		t.Errorf("logged %q, want it to contain %q", got, want)
	}

	f = &fakeTB{TB: t}
	p = startHelper(f, Spec{Name: "the helper", TailLines: 1}, "print", "0")
	p.Wait()
	f.Errorf("the test failed")
	f.cleanup()
	lines := strings.Split(strings.TrimSpace(p.Output()), "\n")
	want = fmt.Sprintf("--- output of the helper (pid %d) ---\n... (%d lines before)\n%s", p.Pid(), len(lines)-1, lines[len(lines)-1])
	if got := f.text(); !strings.HasSuffix(got, want) {
		t.Errorf("logged %q, want it to end with %q", got, want)
	}
}

func TestFailOnRace(t *testing.T) {
	for _, on := range []bool{false, true} {
		f := &fakeTB{TB: t}
		p := startHelper(f, Spec{Name: "racer", FailOnRace: on, Env: []string{"TESTPROC_WORD=WARNING: DATA RACE"}}, "print", "0")
		p.Wait()
		f.cleanup()
		if f.Failed() != on {
			t.Errorf("FailOnRace %v: test failed %v, logged %q", on, f.Failed(), f.text())
		}
		if on && !strings.Contains(f.text(), "racer reported a data race") {
			t.Errorf("FailOnRace: logged %q", f.text())
		}
	}
}

func TestStartMissingBinary(t *testing.T) {
	f := &fakeTB{TB: t}
	f.do(func() {
		Start(f, Spec{Name: "nothing", Path: filepath.Join(t.TempDir(), "missing")})
		t.Error("Start of a missing binary returned")
	})
	if !f.Failed() || !strings.HasPrefix(f.text(), "start nothing: ") {
		t.Errorf("Start of a missing binary logged %q", f.text())
	}
}

// TestCleanupSIGTERM: cleanup ends a process that handles SIGTERM with
// SIGTERM alone.
func TestCleanupSIGTERM(t *testing.T) {
	f := &fakeTB{TB: t}
	p := startHelper(f, Spec{}, "term")
	waitFor(t, p, "ready")
	if p.Exited() {
		t.Fatal("exited before it was stopped")
	}
	start := time.Now()
	f.cleanup()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cleanup took %v", d)
	}
	if !p.Exited() || p.ExitCode() != 0 || !strings.Contains(p.Output(), "got SIGTERM") {
		t.Errorf("after cleanup: exited %v, status %d, output %q", p.Exited(), p.ExitCode(), p.Output())
	}
}

// TestCleanupKillsAfterGrace: cleanup sends SIGKILL to a process that is
// still there StopGrace after SIGTERM.
func TestCleanupKillsAfterGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	f := &fakeTB{TB: t}
	p := startHelper(f, Spec{StopGrace: grace}, "ignore")
	waitFor(t, p, "ready")
	start := time.Now()
	f.cleanup()
	if d := time.Since(start); d < grace || d > grace+5*time.Second {
		t.Errorf("cleanup took %v, want %v and a little", d, grace)
	}
	wantKilled(t, p)
}

// wantKilled fails the test unless SIGKILL ended p.
func wantKilled(t *testing.T, p *Process) {
	t.Helper()
	p.Wait()
	if ws := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("%s ended with %v, want SIGKILL", p.Name(), p.cmd.ProcessState)
	}
	if code := p.ExitCode(); code != -1 {
		t.Errorf("ExitCode() = %d after SIGKILL, want -1", code)
	}
}

func TestStopAndKill(t *testing.T) {
	p := startHelper(t, Spec{}, "term")
	waitFor(t, p, "ready")
	if !p.Stop(5 * time.Second) {
		t.Error("Stop of a process that exits on SIGTERM reported SIGKILL")
	}
	if !p.Stop(0) {
		t.Error("Stop of an exited process reported SIGKILL")
	}

	p = startHelper(t, Spec{}, "ignore")
	waitFor(t, p, "ready")
	start := time.Now()
	if p.Stop(200 * time.Millisecond) {
		t.Error("Stop of a process that ignores SIGTERM reported SIGTERM enough")
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Stop returned after %v, before its grace", d)
	}
	wantKilled(t, p)

	p = startHelper(t, Spec{}, "term")
	waitFor(t, p, "ready")
	p.Kill()
	if !p.Exited() {
		t.Error("not exited after Kill returned")
	}
	wantKilled(t, p)
	select {
	case <-p.Done():
	default:
		t.Error("Done not closed after Kill")
	}
	p.Signal(syscall.SIGTERM) // reaped: must not reach anything
}

func TestFreePort(t *testing.T) {
	port := FreePort(t)
	if port <= 0 || port > 65535 {
		t.Fatalf("FreePort() = %d", port)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on the free port %d: %v", port, err)
	}
	l.Close()
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, 5*time.Second, func() error {
		if calls++; calls < 3 {
			return fmt.Errorf("call %d", calls)
		}
		return nil
	})
	if calls != 3 {
		t.Errorf("cond called %d times, want 3", calls)
	}
}

func TestEventuallyTimesOut(t *testing.T) {
	const timeout, interval = 200 * time.Millisecond, 30 * time.Millisecond
	f := &fakeTB{TB: t}
	calls := 0
	start := time.Now()
	f.do(func() {
		EventuallyEvery(f, timeout, interval, func() error {
			calls++
			return fmt.Errorf("call %d", calls)
		})
		t.Error("EventuallyEvery returned although cond never held")
	})
	d := time.Since(start)
	if d < timeout || d > timeout+2*time.Second {
		t.Errorf("gave up after %v, want %v and a little", d, timeout)
	}
	// The first call is at once, then one every interval (and a bit).
	if max := int(timeout/interval) + 3; calls < 2 || calls > max {
		t.Errorf("cond called %d times in %v every %v, want 2 to %d", calls, timeout, interval, max)
	}
	if want := fmt.Sprintf("condition not met within %v: call %d", timeout, calls); f.text() != want || !f.Failed() {
		t.Errorf("failed %v with %q, want %q", f.Failed(), f.text(), want)
	}
}

func TestWaitOK(t *testing.T) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	p := startHelper(t, Spec{}, "serve", addr, "3")
	WaitOK(t, p, "http://"+addr+"/ready", 10*time.Second, 2*time.Second)
}

func TestWaitOKProcessExited(t *testing.T) {
	f := &fakeTB{TB: t}
	p := startHelper(f, Spec{Name: "quitter"}, "print", "1")
	start := time.Now()
	f.do(func() {
		WaitOK(f, p, "http://127.0.0.1:1/ready", 10*time.Second, time.Second)
	})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("WaitOK waited %v for a process that had exited", d)
	}
	if !strings.HasPrefix(f.text(), "quitter exited before GET http://127.0.0.1:1/ready answered 200: exit status 1") {
		t.Errorf("WaitOK failed with %q", f.text())
	}
	f.cleanup()
}

func TestWaitOKTimesOut(t *testing.T) {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
	p := startHelper(t, Spec{}, "serve", addr, "1000000")
	f := &fakeTB{TB: t}
	f.do(func() {
		WaitOK(f, p, "http://"+addr+"/ready", 300*time.Millisecond, 0)
	})
	if want := "condition not met within 300ms: GET http://" + addr + "/ready answered 503 Service Unavailable"; f.text() != want {
		t.Errorf("WaitOK failed with %q, want %q", f.text(), want)
	}
}

func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "0123456789")
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 4*100*10 {
		t.Errorf("%d bytes in the buffer, want %d", got, 4*100*10)
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "... (1 lines before)\nb\nc"},
		{"a\nb\n", 2, "a\nb"},
		{"a", 5, "a"},
	} {
		if got := Tail(tc.in, tc.n); got != tc.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
