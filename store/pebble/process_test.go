package pebble_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/store"
	"github.com/cloudstate-go/cloudstate/store/pebble"
)

// The tests in this file run a second process: the test binary itself,
// started again with helperEnv naming what it should do (the usual Go
// pattern for tests that need a process to crash or to hold a lock).
const (
	helperEnv    = "CLOUDSTATE_PEBBLE_HELPER"
	helperDirEnv = "CLOUDSTATE_PEBBLE_HELPER_DIR"
)

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(helperEnv)
	if mode == "" {
		t.Skip("helper process of TestCrash and TestLockedByAnotherProcess; runs only when they start it")
	}
	dir := os.Getenv(helperDirEnv)
	var err error
	switch mode {
	case "write":
		err = helperWrite(dir)
	case "hold":
		err = helperHold(dir)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Crash test workload: journal writers append batches of 1 to 3 events to
// their own entity, the even-numbered ones each with a snapshot at the last
// event in the same write; value writers overwrite their own key, each value
// naming its version.
const (
	crashJournals = 8
	crashValues   = 4
	// crashAcks is how many acknowledged writes the parent waits for
	// before it kills the writer.
	crashAcks = 2000
)

// helperWrite writes forever and prints one line per acknowledged write:
// "event <writer> <last seq>" or "value <writer> <version>". Each line is
// printed only after the write returned, so a printed line is a promise
// that the write is durable.
func helperWrite(dir string) error {
	s, err := pebble.Open(dir)
	if err != nil {
		return err
	}
	ctx := context.Background()
	var out sync.Mutex
	ack := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		// One write per line, unbuffered: a line is in the pipe before
		// the next write starts.
		fmt.Fprintf(os.Stdout, format, args...)
	}
	errs := make(chan error, crashJournals+crashValues)
	for w := range crashJournals {
		go func() {
			pid := fmt.Sprintf("crash|%d", w)
			for seq := int64(1); ; {
				n := int64(1 + (seq+int64(w))%3)
				evs := make([]store.Event, n)
				for i := range evs {
					evs[i] = store.Event{Seq: seq + int64(i), Payload: crashEvent(pid, seq+int64(i))}
				}
				var err error
				if w%2 == 0 {
					last := seq + n - 1
					err = s.AppendWithSnapshot(ctx, pid, evs, store.Snapshot{Seq: last, Payload: crashSnapshot(pid, last)})
				} else {
					err = s.Append(ctx, pid, evs)
				}
				if err != nil {
					errs <- err
					return
				}
				seq += n
				ack("event %d %d\n", w, seq-1)
			}
		}()
	}
	for w := range crashValues {
		go func() {
			key := fmt.Sprintf("crash-value|%d", w)
			for version := int64(0); ; {
				v, err := s.PutValue(ctx, key, version, crashValue(version+1))
				if err != nil {
					errs <- err
					return
				}
				version = v
				ack("value %d %d\n", w, version)
			}
		}()
	}
	return <-errs
}

func crashEvent(pid string, seq int64) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/crash.Event", Value: fmt.Appendf(nil, "%s/%d", pid, seq)}
}

func crashSnapshot(pid string, seq int64) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/crash.State", Value: fmt.Appendf(nil, "%s up to %d", pid, seq)}
}

func crashValue(version int64) *anypb.Any {
	return &anypb.Any{TypeUrl: "type.googleapis.com/crash.Value", Value: fmt.Appendf(nil, "version %d", version)}
}

// helperHold opens dir, says "open <pid>", and keeps the store open until
// its stdin closes.
func helperHold(dir string) error {
	s, err := pebble.Open(dir)
	if err != nil {
		return err
	}
	fmt.Printf("open %d\n", os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// helper is a running helper process and the lines of its stdout.
type helper struct {
	cmd   *exec.Cmd
	lines chan string
	stdin io.WriteCloser
}

// startHelper starts the test binary as a helper in mode on dir. It is
// killed, if still running, when the test ends.
func startHelper(t *testing.T, mode, dir string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode, helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{cmd: cmd, lines: make(chan string, 1024), stdin: stdin}
	// The reader ends when the process's stdout closes, that is when it
	// exits or is killed.
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return h
}

// next returns the next line of the helper's stdout, failing the test if
// none comes in time or the helper exits.
func (h *helper) next(t *testing.T) string {
	t.Helper()
	select {
	case line, ok := <-h.lines:
		if !ok {
			t.Fatalf("helper exited early: %v", h.cmd.Wait())
		}
		return line
	case <-time.After(30 * time.Second):
		t.Fatal("no output from the helper in 30s")
		return ""
	}
}

// TestCrash kills a process that is writing to a store (SIGKILL, so no
// Close and no deferred code runs) and checks, after reopening the
// directory, that every write the process acknowledged is there: each
// journal contiguous and at least as long as acknowledged, with the right
// payload at every seq; each value at least at its acknowledged version and
// holding the payload written for the version it has.
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a writer process")
	}
	dir := t.TempDir()
	h := startHelper(t, "write", dir)

	ackedSeq := make([]int64, crashJournals)
	ackedVersion := make([]int64, crashValues)
	record := func(line string) {
		var kind string
		var w int
		var n int64
		if _, err := fmt.Sscanf(line, "%s %d %d", &kind, &w, &n); err != nil {
			t.Fatalf("helper printed %q: %v", line, err)
		}
		acked := ackedSeq
		if kind == "value" {
			acked = ackedVersion
		}
		if w < 0 || w >= len(acked) || n <= acked[w] {
			t.Fatalf("helper printed %q after acknowledging %d: acknowledged twice or out of order", line, acked[w])
		}
		acked[w] = n
	}
	for range crashAcks {
		record(h.next(t))
	}
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Lines printed before the kill are acknowledgements too.
	for line := range h.lines {
		record(line)
	}
	err := h.cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("writer process ended with %v, want killed by SIGKILL", err)
	}
	t.Logf("killed the writer after acknowledged seqs %v and versions %v", ackedSeq, ackedVersion)

	s := openAt(t, dir)
	ctx := context.Background()
	for w, acked := range ackedSeq {
		pid := fmt.Sprintf("crash|%d", w)
		next := int64(1)
		err := s.Replay(ctx, pid, 0, func(e store.Event) error {
			if e.Seq != next {
				return fmt.Errorf("seq %d follows seq %d", e.Seq, next-1)
			}
			if want := crashEvent(pid, e.Seq); string(e.Payload.GetValue()) != string(want.Value) {
				return fmt.Errorf("seq %d holds %q, want %q", e.Seq, e.Payload.GetValue(), want.Value)
			}
			next++
			return nil
		})
		if err != nil {
			t.Errorf("journal %s: %v", pid, err)
			continue
		}
		if got := next - 1; got < acked {
			t.Errorf("journal %s ends at seq %d, but seq %d was acknowledged", pid, got, acked)
		}
		if h, err := s.HighestSeq(ctx, pid); err != nil || h != next-1 {
			t.Errorf("HighestSeq(%s) = %d, %v; replay ended at %d", pid, h, err, next-1)
		}
		if w%2 != 0 || acked == 0 {
			continue
		}
		// The snapshot went with the events: at least as far as the
		// acknowledged append, and never past the journal's end.
		snap, ok, err := s.LatestSnapshot(ctx, pid)
		switch {
		case err != nil || !ok:
			t.Errorf("LatestSnapshot(%s) = ok %v, %v; seq %d was acknowledged with a snapshot", pid, ok, err, acked)
		case snap.Seq < acked || snap.Seq > next-1:
			t.Errorf("snapshot of %s is at seq %d; acknowledged %d, journal ends at %d", pid, snap.Seq, acked, next-1)
		case string(snap.Payload.GetValue()) != string(crashSnapshot(pid, snap.Seq).Value):
			t.Errorf("snapshot of %s at seq %d holds %q", pid, snap.Seq, snap.Payload.GetValue())
		}
	}
	for w, acked := range ackedVersion {
		key := fmt.Sprintf("crash-value|%d", w)
		v, err := s.GetValue(ctx, key)
		if err != nil {
			t.Errorf("GetValue(%s): %v", key, err)
			continue
		}
		if v.Version < acked {
			t.Errorf("value %s is at version %d, but version %d was acknowledged", key, v.Version, acked)
		}
		if want := crashValue(v.Version); string(v.Payload.GetValue()) != string(want.Value) {
			t.Errorf("value %s at version %d holds %q, want %q", key, v.Version, v.Payload.GetValue(), want.Value)
		}
	}
	// The recovered store takes writes where the history ends.
	if err := s.Append(ctx, "crash|0", []store.Event{{Seq: 1, Payload: crashEvent("crash|0", 1)}}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Append of seq 1 after recovery: %v, want store.ErrConflict", err)
	}
}

// TestLockedByAnotherProcess opens a directory that another process has
// open: Open must fail at once with an error that names the other process.
func TestLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, "hold", dir)
	line := h.next(t)
	pid, err := strconv.Atoi(strings.TrimPrefix(line, "open "))
	if err != nil || pid != h.cmd.Process.Pid {
		t.Fatalf("helper printed %q, want %q", line, fmt.Sprint("open ", h.cmd.Process.Pid))
	}

	s, err := pebble.Open(dir)
	if err == nil {
		s.Close()
		t.Fatal("Open of a directory another process holds succeeded")
	}
	checkLockedError(t, err, dir, pid)

	// Once the other process closes the store and exits, the directory is
	// free.
	if err := h.stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("holder process: %v", err)
	}
	openAt(t, dir)
}
