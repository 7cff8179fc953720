package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/store"
)

// TestRecoversFromTerminatedConnections kills the store's server processes
// (pg_terminate_backend, as a database restart or failover would) while
// writers and readers run. Every call must succeed or fail with
// ErrUnavailable, histories must stay whole, and the store must work again
// afterwards without being reopened.
func TestRecoversFromTerminatedConnections(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	appName := "cloudstate_recovery_" + hex.EncodeToString(suffix[:])
	s := openDSN(t, testenv.WithParam(dsn, "application_name", appName), WithRetryTimeout(3*time.Second))
	admin := connect(t, dsn)
	ctx := t.Context()

	const writers = 16
	var unavailable, succeeded atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pidOf := func(w int) string { return "recover|" + strconv.Itoa(w) }
	for w := range writers {
		wg.Go(func() {
			pid := pidOf(w)
			key := "recover-value|" + strconv.Itoa(w)
			next := int64(1)
			version := int64(0)
			for {
				select {
				case <-stop:
					return
				default:
				}
				err := s.Append(ctx, pid, []store.Event{ev(next, fmt.Sprint("e", next))})
				if err == nil {
					next++
					succeeded.Add(1)
				}
				if err == nil {
					var v int64
					v, err = s.PutValue(ctx, key, version, &anypb.Any{TypeUrl: "t", Value: []byte(strconv.FormatInt(next, 10))})
					if err == nil {
						version = v
					}
				}
				if err == nil {
					continue
				}
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("writer %d: %v, want success or ErrUnavailable", w, err)
					return
				}
				unavailable.Add(1)
				// The outcome is unknown: reload, as an entity would.
				for {
					h, herr := s.HighestSeq(ctx, pid)
					got, gerr := s.GetValue(ctx, key)
					if herr == nil && gerr == nil {
						next, version = h+1, got.Version
						break
					}
					for _, e := range []error{herr, gerr} {
						if e != nil && !errors.Is(e, ErrUnavailable) {
							t.Errorf("writer %d reloading: %v", w, e)
							return
						}
					}
				}
			}
		})
	}

	killed := 0
	for round := range 5 {
		target := succeeded.Load() + 50
		eventually(t, 20*time.Second, fmt.Sprintf("writes before round %d", round), func() bool { return succeeded.Load() >= target })
		var n int
		err := admin.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1`, appName).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		killed += n
	}
	target := succeeded.Load() + 50
	eventually(t, 20*time.Second, "writes after the last round", func() bool { return succeeded.Load() >= target })
	close(stop)
	wg.Wait()
	t.Logf("terminated %d connections; %d appends succeeded, %d calls failed with ErrUnavailable; stats %+v",
		killed, succeeded.Load(), unavailable.Load(), s.Stats())
	if killed == 0 {
		t.Fatal("no connection was terminated; the test proved nothing")
	}

	for w := range writers {
		pid := pidOf(w)
		h, err := s.HighestSeq(ctx, pid)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]string, h)
		for i := range want {
			want[i] = fmt.Sprint("e", i+1)
		}
		checkSeqs(t, s, pid, want...)
		if err := s.Append(ctx, pid, []store.Event{ev(h+1, "after")}); err != nil {
			t.Fatalf("Append after the terminations: %v", err)
		}
	}
}

// tcpProxy forwards loopback connections to the database, and can be
// stopped (every connection cut, nothing listening) and started again on the
// same port: a database outage as the client sees it.
type tcpProxy struct {
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *tcpProxy {
	p := &tcpProxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	p.start(t)
	t.Cleanup(p.stop)
	return p
}

func (p *tcpProxy) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p.mu.Lock()
	p.ln = ln
	p.addr = ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			if !p.track(c, up) {
				return
			}
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				p.wg.Go(func() {
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
}

// track registers a connection pair unless the proxy was stopped meanwhile.
func (p *tcpProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *tcpProxy) stop() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *tcpProxy) port() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, port, _ := net.SplitHostPort(p.addr)
	n, _ := strconv.Atoi(port)
	return uint16(n)
}

// TestOutage cuts the network to the database: calls fail with
// ErrUnavailable once the retry timeout has passed, a call made during the
// outage succeeds if the database returns within its retry timeout, and the
// store serves again once it is back, without being reopened.
func TestOutage(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := startProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	viaProxy := func(c *pgxpool.Config) {
		c.ConnConfig.Host = "127.0.0.1"
		c.ConnConfig.Port = proxy.port()
		c.ConnConfig.Fallbacks = nil
		c.ConnConfig.ConnectTimeout = 2 * time.Second
		// Check every connection before use, so that the connections
		// the outage cut are found dead before a write is sent on them.
		c.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	}
	const shortRetry = 300 * time.Millisecond
	fast := openDSN(t, dsn, WithPoolConfig(viaProxy), WithRetryTimeout(shortRetry))
	patient := openDSN(t, dsn, WithPoolConfig(viaProxy), WithRetryTimeout(20*time.Second))
	ctx := t.Context()
	if err := fast.Append(ctx, "outage|1", []store.Event{ev(1, "before")}); err != nil {
		t.Fatal(err)
	}

	proxy.stop()
	start := time.Now()
	if _, err := fast.HighestSeq(ctx, "outage|1"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("HighestSeq during the outage: %v, want ErrUnavailable", err)
	}
	if err := fast.Append(ctx, "outage|1", []store.Event{ev(2, "during")}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Append during the outage: %v, want ErrUnavailable", err)
	}
	if _, err := fast.PutValue(ctx, "outage|v", 0, &anypb.Any{TypeUrl: "t"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PutValue during the outage: %v, want ErrUnavailable", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("three calls during the outage took %v with a retry timeout of %v", took, shortRetry)
	}

	// A patient write waits through the outage.
	failedBefore := patient.Stats().Failed
	done := make(chan error, 1)
	go func() { done <- patient.Append(ctx, "outage|2", []store.Event{ev(1, "waited")}) }()
	eventually(t, 10*time.Second, "the patient write to be attempted and fail", func() bool {
		return patient.Stats().Failed > failedBefore
	})
	proxy.start(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Append across the outage: %v, want success", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Append across the outage did not return")
	}

	// The fast store recovers too, without reopening.
	eventually(t, 10*time.Second, "the fast store to serve again", func() bool {
		_, err := fast.HighestSeq(ctx, "outage|1")
		return err == nil
	})
	if err := fast.Append(ctx, "outage|1", []store.Event{ev(2, "after")}); err != nil {
		t.Fatal(err)
	}
	checkSeqs(t, fast, "outage|1", "before", "after")
	checkSeqs(t, fast, "outage|2", "waited")
}
