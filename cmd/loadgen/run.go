package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// RunConfig is one closed-loop load run: Clients goroutines, each making
// sequential unary calls for Warmup+Duration.
type RunConfig struct {
	Target string // host:port
	Method string // /package.Service/Method
	// Clients is the number of concurrent callers; each waits for its
	// reply before sending the next call.
	Clients int
	// Conns is the number of gRPC connections the clients share; client i
	// uses connection i mod Conns.
	Conns    int
	Duration time.Duration
	Warmup   time.Duration
	// Carts is the number of entity keys the calls are spread over.
	Carts int
	// Random picks each call's cart at random; otherwise client i sends to
	// carts i, i+Clients, i+2*Clients, ... (mod Carts), so together the
	// clients go round the carts in order.
	Random bool
	// Payload names a payloadBuilder; PayloadSize pads it (0: natural size).
	Payload     string
	PayloadSize int
	// CallGrace is how long a call still in flight at the end may take
	// before it is cancelled and counted as an error.
	CallGrace time.Duration
	// OnWindow, if set, is called with true when the measured window
	// starts (warmup is over) and with false once every client has
	// stopped; the bench reads processes' CPU time there. The false call
	// happens only if the true one did.
	OnWindow func(begin bool)
}

func (c RunConfig) validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("--target is required"))
	}
	if c.Method == "" || c.Method[0] != '/' {
		errs = append(errs, fmt.Errorf("--method %q must look like /package.Service/Method", c.Method))
	}
	if c.Clients < 1 {
		errs = append(errs, fmt.Errorf("--clients %d must be at least 1", c.Clients))
	}
	if c.Conns < 1 {
		errs = append(errs, fmt.Errorf("--conns %d must be at least 1", c.Conns))
	}
	if c.Duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration %v must be positive", c.Duration))
	}
	if c.Warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup %v must not be negative", c.Warmup))
	}
	return errors.Join(errs...)
}

// dialConns opens n connections to target with the raw codec and waits
// until each is connected, so connection set-up is never measured.
func dialConns(ctx context.Context, target string, n int) ([]*grpc.ClientConn, error) {
	conns := make([]*grpc.ClientConn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for range n {
		c, err := grpc.NewClient(target,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(rawCodec{})),
		)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dial %s: %w", target, err)
		}
		conns = append(conns, c)
		if err := waitConnected(ctx, c, 5*time.Second); err != nil {
			closeAll()
			return nil, fmt.Errorf("connect to %s: %w", target, err)
		}
	}
	return conns, nil
}

// waitConnected waits until c is ready, or fails after timeout.
func waitConnected(ctx context.Context, c *grpc.ClientConn, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c.Connect()
	for {
		s := c.GetState()
		if s == connectivity.Ready {
			return nil
		}
		if !c.WaitForStateChange(ctx, s) {
			return fmt.Errorf("not connected after %v (last state %v)", timeout, s)
		}
	}
}

// clientStats is what one client goroutine recorded; only it writes them
// until the run's WaitGroup is done.
type clientStats struct {
	lat    []time.Duration
	errs   map[codes.Code]int64
	finish time.Time
}

// Run drives the load described by cfg and returns what it measured. It
// stops early, returning what it has, when ctx ends.
func Run(ctx context.Context, cfg RunConfig) (Result, error) {
	if cfg.Conns == 0 {
		cfg.Conns = 1
	}
	if cfg.Carts == 0 {
		cfg.Carts = 1
	}
	if cfg.CallGrace == 0 {
		cfg.CallGrace = 10 * time.Second
	}
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	reqs, err := buildPayloads(cfg.Payload, cfg.Carts, cfg.PayloadSize)
	if err != nil {
		return Result{}, err
	}
	conns, err := dialConns(ctx, cfg.Target, min(cfg.Conns, cfg.Clients))
	if err != nil {
		return Result{}, err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()

	start := time.Now()
	measureFrom := start.Add(cfg.Warmup)
	end := measureFrom.Add(cfg.Duration)
	callCtx, cancel := context.WithDeadline(ctx, end.Add(cfg.CallGrace))
	defer cancel()

	stats := make([]clientStats, cfg.Clients)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Go(func() {
			runClient(callCtx, conns[i%len(conns)], cfg, reqs, i, measureFrom, end, &stats[i])
		})
	}
	windowBegun := false
	var hook sync.WaitGroup
	if cfg.OnWindow != nil {
		hook.Go(func() {
			t := time.NewTimer(time.Until(measureFrom))
			defer t.Stop()
			select {
			case <-t.C:
				cfg.OnWindow(true)
				windowBegun = true
			case <-callCtx.Done():
			}
		})
	}
	wg.Wait()
	// The clients stop at end, after the timer has fired, unless the run
	// was interrupted, which also ends callCtx: the hook always returns.
	hook.Wait()
	if windowBegun {
		cfg.OnWindow(false)
	}

	r := Result{
		Target: cfg.Target, Method: cfg.Method, Payload: cfg.Payload,
		Clients: cfg.Clients, Conns: len(conns), Carts: cfg.Carts,
	}
	var lat []time.Duration
	last := measureFrom
	for i := range stats {
		lat = append(lat, stats[i].lat...)
		addErrors(&r, stats[i].errs)
		if stats[i].finish.After(last) {
			last = stats[i].finish
		}
	}
	r.Elapsed = last.Sub(measureFrom)
	summarize(&r, lat)
	if ctx.Err() != nil {
		return r, fmt.Errorf("run interrupted: %w", ctx.Err())
	}
	return r, nil
}

// runClient is one caller: sequential unary calls until end. Calls that
// start after measureFrom are recorded.
func runClient(ctx context.Context, conn *grpc.ClientConn, cfg RunConfig, reqs [][]byte, id int, measureFrom, end time.Time, st *clientStats) {
	st.errs = make(map[codes.Code]int64)
	// A guess at the calls one client makes, to avoid most regrowth.
	st.lat = make([]time.Duration, 0, 4096)
	var rng *rand.Rand
	if cfg.Random {
		rng = rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	}
	next := id % len(reqs)
	var reply rawMessage
	now := time.Now()
	for now.Before(end) && ctx.Err() == nil {
		var cart int
		if rng != nil {
			cart = rng.IntN(len(reqs))
		} else {
			cart = next
			next = (next + cfg.Clients) % len(reqs)
		}
		req := rawMessage(reqs[cart])
		t0 := now
		err := conn.Invoke(ctx, cfg.Method, &req, &reply)
		now = time.Now()
		if t0.Before(measureFrom) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil && status.Code(err) == codes.Canceled {
				break // interrupted: not the target's fault
			}
			st.errs[status.Code(err)]++
			continue
		}
		st.lat = append(st.lat, now.Sub(t0))
	}
	st.finish = now
}

// runCmd is "loadgen run".
func runCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg RunConfig
	fs.StringVar(&cfg.Target, "target", "", "host:port to call (required)")
	fs.StringVar(&cfg.Method, "method", "", "full method name, /package.Service/Method (required)")
	fs.IntVar(&cfg.Clients, "clients", 1, "concurrent callers, each making sequential calls")
	fs.IntVar(&cfg.Conns, "conns", 1, "gRPC connections the callers share (client i uses connection i mod conns)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "time before measuring starts")
	fs.IntVar(&cfg.Carts, "carts", 1000, "number of carts (entity keys cart-0 … cart-<K-1>) the calls go to")
	fs.BoolVar(&cfg.Random, "random", false, "pick each call's cart at random instead of round-robin")
	fs.StringVar(&cfg.Payload, "payload", "cart-add", fmt.Sprintf("request body: one of %v", payloadNames()))
	fs.IntVar(&cfg.PayloadSize, "payload-size", 0, "pad the request to this many bytes (0: natural size)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	r, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(r)
	}
	r.WriteText(stdout)
	return nil
}
