package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTailBuffer(t *testing.T) {
	tb := newTailBuffer(64)
	for i := range 20 {
		fmt.Fprintf(tb, "line %02d\n", i)
	}
	got := tb.lastLines(3)
	if got != "line 17\nline 18\nline 19" {
		t.Errorf("last lines = %q", got)
	}
	if len(tb.buf) > 64 {
		t.Errorf("kept %d bytes, max 64", len(tb.buf))
	}
	if !strings.HasPrefix(string(tb.buf), "line ") {
		t.Errorf("kept a partial line first: %q", tb.buf)
	}
	if _, ok := tb.findLine("line 00"); ok {
		t.Error("found a dropped line")
	}
	if l, ok := tb.findLine("line 19"); !ok || l != "line 19" {
		t.Errorf("findLine = %q, %v", l, ok)
	}
}

func TestParseSinceStart(t *testing.T) {
	for line, want := range map[string]time.Duration{
		`time=2026-01-01T00:00:00Z level=INFO msg="cloudstate proxy ready" services=[a.B] since_start=12.3ms`: 12300 * time.Microsecond,
		`{"msg":"cloudstate proxy ready","since_start":"850µs"}`:                                              850 * time.Microsecond,
		`msg="cloudstate proxy ready" since_start=1.2s other=x`:                                               1200 * time.Millisecond,
	} {
		got, err := parseSinceStart(line)
		if err != nil || got != want {
			t.Errorf("parseSinceStart(%q) = %v, %v; want %v", line, got, err, want)
		}
	}
	if _, err := parseSinceStart(`msg="cloudstate proxy ready"`); err == nil {
		t.Error("a line without since_start parsed")
	}
}

func TestRSSOfSelf(t *testing.T) {
	kb, err := rssKB(os.Getpid(), "VmRSS")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if kb < 1000 {
		t.Errorf("VmRSS %d kB is implausibly small for a Go test", kb)
	}
	if _, err := rssKB(os.Getpid(), "NoSuchField"); err == nil {
		t.Error("a missing field was read")
	}
}

func TestFreePortIsListenable(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatalf("port %d not free: %v", port, err)
	}
	l.Close()
}

// startSleeper starts a real child that runs until stopped.
func startSleeper(t *testing.T, ps *procSet) *child {
	t.Helper()
	c, err := ps.start("sleeper", "sleep", []string{"60"}, nil)
	if err != nil {
		t.Skipf("cannot run sleep: %v", err)
	}
	t.Cleanup(func() { c.stop(time.Second) })
	return c
}

func TestChildStopAndFailure(t *testing.T) {
	var ps procSet
	c := startSleeper(t, &ps)
	fmt.Fprintln(c.log, "hello from the child")
	if c.exited() {
		t.Fatal("sleeper exited at once")
	}
	start := time.Now()
	ps.stopAll(5 * time.Second)
	if !c.exited() {
		t.Fatal("still running after stopAll")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("SIGTERM took %v", took)
	}
	err := c.failure("never ready")
	for _, want := range []string{"sleeper", "never ready", fmt.Sprint(c.pid()), "exited", "hello from the child"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("failure %q does not mention %q", err, want)
		}
	}
}

func TestWaitReadyPolls(t *testing.T) {
	var ps procSet
	c := startSleeper(t, &ps)
	var calls atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 5 {
			http.Error(w, "not ready: warming up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})}
	go srv.Serve(l)
	defer srv.Close()
	url := "http://" + l.Addr().String() + "/ready"

	at, err := waitReady(context.Background(), c, url, time.Millisecond, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 5 || at.IsZero() {
		t.Errorf("ready after %d polls at %v, want 5", n, at)
	}

	// A child that has exited is reported with its output, at once.
	c.stop(time.Second)
	calls.Store(-1000)
	_, err = waitReady(context.Background(), c, url, time.Millisecond, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("waitReady on an exited child = %v", err)
	}
}
