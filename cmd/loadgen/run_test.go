package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// startEchoServer serves the echo service on a free loopback port for the
// length of the test.
func startEchoServer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveEcho(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo server: %v", err)
		}
	})
	return l.Addr().String()
}

func TestEchoReturnsRequestBytes(t *testing.T) {
	addr := startEchoServer(t)
	conns, err := dialConns(context.Background(), addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer conns[0].Close()
	reqs, err := buildPayloads("echo", 3, 300)
	if err != nil {
		t.Fatal(err)
	}
	var reply rawMessage
	for i, b := range reqs {
		req := rawMessage(b)
		if err := conns[0].Invoke(context.Background(), echoMethod, &req, &reply); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if string(reply) != string(b) {
			t.Fatalf("call %d: reply %q, want the request %q", i, reply, b)
		}
	}
}

func TestRunAgainstEcho(t *testing.T) {
	addr := startEchoServer(t)
	for _, tc := range []struct {
		name           string
		clients, conns int
		random         bool
	}{
		{"one client", 1, 1, false},
		{"eight clients, two connections, random carts", 8, 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Run(context.Background(), RunConfig{
				Target: addr, Method: echoMethod, Clients: tc.clients, Conns: tc.conns,
				Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond,
				Carts: 10, Random: tc.random, Payload: "echo",
			})
			if err != nil {
				t.Fatal(err)
			}
			if r.Ops == 0 || r.OpsPerSec() <= 0 {
				t.Errorf("no calls measured: %+v", r)
			}
			if len(r.Errors) != 0 {
				t.Errorf("errors: %s", errorsText(r.Errors))
			}
			if r.Conns != tc.conns || r.Clients != tc.clients {
				t.Errorf("clients/conns = %d/%d, want %d/%d", r.Clients, r.Conns, tc.clients, tc.conns)
			}
			if r.Elapsed < 200*time.Millisecond || r.Elapsed > 2*time.Second {
				t.Errorf("measured window %v, want about 200ms", r.Elapsed)
			}
			if !(r.Min > 0 && r.Min <= r.P50 && r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.Max) {
				t.Errorf("percentiles out of order: %+v", r)
			}
		})
	}
}

func TestRunCountsErrorsByCode(t *testing.T) {
	addr := startEchoServer(t)
	r, err := Run(context.Background(), RunConfig{
		Target: addr, Method: "/cloudstate.bench.Echo/Missing", Clients: 2,
		Duration: 100 * time.Millisecond, Payload: "echo",
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops != 0 || r.Errors["Unimplemented"] == 0 || len(r.Errors) != 1 {
		t.Errorf("ops %d, errors %s; want only Unimplemented errors", r.Ops, errorsText(r.Errors))
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	addr := startEchoServer(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	r, err := Run(ctx, RunConfig{
		Target: addr, Method: echoMethod, Clients: 4,
		Duration: time.Minute, Payload: "echo",
	})
	if err == nil {
		t.Fatal("an interrupted run reported no error")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run took %v to stop after cancel", took)
	}
	if len(r.Errors) != 0 {
		t.Errorf("cancellation counted as errors: %s", errorsText(r.Errors))
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	_, err := Run(context.Background(), RunConfig{Method: "Echo", Clients: 0, Duration: 0})
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"--target", "--method", "--clients", "--duration"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
