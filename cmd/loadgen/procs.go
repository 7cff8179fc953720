package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// procSet owns every child process the bench starts. Children are stopped
// by the pid this process started, never by name.
type procSet struct {
	mu       sync.Mutex
	children []*child
}

// child is one started process and the tail of its output.
type child struct {
	name    string
	cmd     *exec.Cmd
	started time.Time // just before the process was started
	log     *tailBuffer
	done    chan struct{} // closed once the process has exited
	waitErr error         // how it exited; set before done is closed
}

// start runs path with args and env (added to this process's
// environment), capturing stdout and stderr together.
func (ps *procSet) start(name, path string, args, env []string) (*child, error) {
	c := &child{name: name, log: newTailBuffer(64 << 10), done: make(chan struct{})}
	c.cmd = exec.Command(path, args...)
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout = c.log
	c.cmd.Stderr = c.log
	c.cmd.SysProcAttr = childProcAttr()
	c.started = time.Now()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, path, err)
	}
	ps.mu.Lock()
	ps.children = append(ps.children, c)
	ps.mu.Unlock()
	// This goroutine ends when the process does; stop makes sure of that.
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end with SIGTERM and kills it after grace. It
// returns once the process has exited; stopping twice is harmless.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// failure describes why a child is not usable, with its last log lines.
func (c *child) failure(what string) error {
	state := "still running"
	if c.exited() {
		state = fmt.Sprintf("exited: %v", c.waitErr)
		if c.waitErr == nil {
			state = "exited with status 0"
		}
	}
	return fmt.Errorf("%s: %s (pid %d, %s); its last output:\n%s", c.name, what, c.pid(), state, indent(c.log.lastLines(20)))
}

// stopAll stops every child still running, newest first: a proxy stops
// before the user function behind it, so it does not log errors about the
// function vanishing.
func (ps *procSet) stopAll(grace time.Duration) {
	ps.mu.Lock()
	children := append([]*child(nil), ps.children...)
	ps.mu.Unlock()
	for i := len(children) - 1; i >= 0; i-- {
		children[i].stop(grace)
	}
}

// tailBuffer is an io.Writer keeping the last max bytes written, safe for
// the two writers (stdout and stderr) a child has.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

// Write keeps p, dropping the oldest whole lines when over max.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		cut := over
		if i := bytes.IndexByte(t.buf[over:], '\n'); i >= 0 {
			cut = over + i + 1
		}
		t.buf = append(t.buf[:0], t.buf[cut:]...)
	}
	return len(p), nil
}

// lastLines returns up to n of the last lines written.
func (t *tailBuffer) lastLines(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// findLine returns the first kept line containing s.
func (t *tailBuffer) findLine(s string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sc := bufio.NewScanner(bytes.NewReader(t.buf))
	sc.Buffer(nil, len(t.buf)+1)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return sc.Text(), true
		}
	}
	return "", false
}

func indent(s string) string {
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago: the
// kernel picks it for a listener that is closed at once.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// poll calls try every interval until it reports done, returns an error,
// ctx ends or timeout passes.
func poll(ctx context.Context, interval, timeout time.Duration, try func() (done bool, err error)) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := try()
		if err != nil || done {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up after %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

var errExited = errors.New("the process exited")

// waitTCP waits until c accepts TCP connections on addr.
func waitTCP(ctx context.Context, c *child, addr string, timeout time.Duration) error {
	err := poll(ctx, 5*time.Millisecond, timeout, func() (bool, error) {
		if c.exited() {
			return false, errExited
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false, nil
		}
		conn.Close()
		return true, nil
	})
	if err != nil {
		return c.failure(fmt.Sprintf("not listening on %s: %v", addr, err))
	}
	return nil
}

// waitReady polls url every interval until it answers 200, and returns
// when that answer came.
func waitReady(ctx context.Context, c *child, url string, interval, timeout time.Duration) (time.Time, error) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Second}
	var readyAt time.Time
	last := "no answer yet"
	err := poll(ctx, interval, timeout, func() (bool, error) {
		if c.exited() {
			return false, errExited
		}
		resp, err := client.Get(url)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		body := make([]byte, 512)
		n, _ := resp.Body.Read(body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			readyAt = time.Now()
			return true, nil
		}
		last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body[:n])))
		return false, nil
	})
	if err != nil {
		return time.Time{}, c.failure(fmt.Sprintf("never ready at %s (%v; last answer: %s)", url, err, last))
	}
	return readyAt, nil
}

// sinceStartRE finds the proxy's own start-to-ready time in its ready log
// line, in the text (since_start=12.3ms) or JSON ("since_start":"12.3ms")
// log format.
var sinceStartRE = regexp.MustCompile(`since_start"?[=:]"?([0-9.]+[a-zµ]+)`)

// parseSinceStart extracts since_start from a "cloudstate proxy ready" line.
func parseSinceStart(line string) (time.Duration, error) {
	m := sinceStartRE.FindStringSubmatch(line)
	if m == nil {
		return 0, fmt.Errorf("no since_start in %q", line)
	}
	d, err := time.ParseDuration(m[1])
	if err != nil {
		return 0, fmt.Errorf("since_start in %q: %w", line, err)
	}
	return d, nil
}

// readyLine is what the proxy logs once it is ready.
const readyLine = "cloudstate proxy ready"

// waitSinceStart waits for the proxy's ready log line, which it writes
// just after /ready turns 200, and parses its since_start.
func waitSinceStart(ctx context.Context, c *child) (time.Duration, error) {
	var line string
	err := poll(ctx, time.Millisecond, 5*time.Second, func() (bool, error) {
		l, ok := c.log.findLine(readyLine)
		line = l
		return ok, nil
	})
	if err != nil {
		return 0, c.failure(fmt.Sprintf("no %q log line (%v)", readyLine, err))
	}
	return parseSinceStart(line)
}

// rssKB reads a field such as VmRSS or VmHWM, in kB, from /proc/<pid>/status.
func rssKB(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read memory of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, field+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("pid %d: unexpected %s line %q", pid, field, line)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("pid %d: %s line %q: %w", pid, field, line, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("pid %d: no %s in /proc/%d/status", pid, field, pid)
}

// goBuild builds pkg (relative to the module in dir) into out.
func goBuild(ctx context.Context, dir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = dir
	b, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("go build %s failed: %w\n%s", pkg, err, indent(strings.TrimSpace(string(b))))
	}
	return nil
}
