package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// benchConfig is one "loadgen bench" run.
type benchConfig struct {
	Repo      string // repository root, where go build runs
	Duration  time.Duration
	Warmup    time.Duration
	Clients   []int
	Carts     int      // overrides every scenario's cart count when > 0
	Scenarios []string // names to run; empty runs all
	Out       string   // markdown file to write; empty writes none
	// Facts measures the proxy's start-to-ready time (StartRuns starts)
	// and its memory with RSSCarts active entities.
	Facts     bool
	StartRuns int
	RSSCarts  int
	// Rounds is how many times every scenario is measured at every
	// client count, interleaved; the report shows the median round.
	Rounds int
	// QuietWait, when positive, is how long to wait before each
	// measurement for the machine to go quiet (see waitQuiet).
	QuietWait time.Duration
}

// bench runs the side-by-side measurement, owning every process it starts.
type bench struct {
	cfg      benchConfig
	progress io.Writer
	procs    procSet
	binDir   string
	self     string // this executable, run again as the echo server
	proxyBin string
	fnBins   map[string]string // function package → built binary
}

// Grace periods for stopping children: a loaded proxy finishes calls in
// flight before it exits.
const stopGrace = 15 * time.Second

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := benchConfig{Facts: true}
	clients := fs.String("clients", "1,32", "comma-separated client counts to measure each scenario at")
	names := fs.String("scenarios", "", "comma-separated scenario names to run (default all: "+strings.Join(scenarioNames(), ",")+")")
	skipFacts := fs.Bool("skip-facts", false, "skip the proxy's start-to-ready and memory measurements")
	fs.StringVar(&cfg.Repo, "repo", ".", "repository root (where ./cmd/cloudstate is)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured time per scenario and client count")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured time before each measurement")
	fs.IntVar(&cfg.Carts, "carts", 0, "carts per scenario (default: each scenario's own, 1000)")
	fs.StringVar(&cfg.Out, "out", "bench/results.md", "markdown file to write the results to (empty: stdout only)")
	fs.IntVar(&cfg.StartRuns, "start-runs", 5, "proxy starts for the start-to-ready measurement")
	fs.IntVar(&cfg.RSSCarts, "rss-carts", 10000, "distinct carts made active before reading the proxy's memory")
	fs.IntVar(&cfg.Rounds, "rounds", 3, "rounds of measurements; each round runs every scenario at every client count, and the report shows the median")
	fs.DurationVar(&cfg.QuietWait, "quiet-wait", 0, "before each measurement, wait up to this long for the machine's other processes to use under 0.2 cores (0: don't wait)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if cfg.Clients, err = parseInts(*clients); err != nil {
		return fmt.Errorf("--clients: %w", err)
	}
	if *names != "" {
		cfg.Scenarios = strings.Split(*names, ",")
	}
	cfg.Facts = !*skipFacts
	rep, err := runBench(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if cfg.Out != "" {
		if err := os.MkdirAll(filepath.Dir(cfg.Out), 0o755); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		if err := os.WriteFile(cfg.Out, []byte(md), 0o644); err != nil {
			return fmt.Errorf("write results: %w", err)
		}
		fmt.Fprintf(stderr, "results written to %s\n", cfg.Out)
	}
	return nil
}

func scenarioNames() []string {
	var n []string
	for _, s := range scenarios {
		n = append(n, s.name)
	}
	return n
}

// parseInts parses "1,32" into [1 32]; every number must be positive.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// selectScenarios returns the scenarios named (all when names is empty),
// in table order, and checks that each one's stack and payload exist.
func selectScenarios(names []string) ([]scenario, error) {
	var out []scenario
	for _, s := range scenarios {
		if len(names) == 0 || slices.Contains(names, s.name) {
			out = append(out, s)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(scenarios, func(s scenario) bool { return s.name == n }) {
			return nil, fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(scenarioNames(), ", "))
		}
	}
	for _, s := range out {
		if _, ok := findStack(s.stack); !ok {
			return nil, fmt.Errorf("scenario %s: unknown stack %q", s.name, s.stack)
		}
		if _, ok := payloads[s.payload]; !ok {
			return nil, fmt.Errorf("scenario %s: unknown payload %q", s.name, s.payload)
		}
	}
	return out, nil
}

// runBench builds what it needs, runs every selected scenario and the
// proxy's facts, and stops every process it started, also on error or
// interrupt.
func runBench(ctx context.Context, cfg benchConfig, progress io.Writer) (*report, error) {
	sel, err := selectScenarios(cfg.Scenarios)
	if err != nil {
		return nil, err
	}
	if cfg.Rounds < 1 {
		return nil, fmt.Errorf("--rounds %d must be at least 1", cfg.Rounds)
	}
	if _, err := os.Stat(filepath.Join(cfg.Repo, "cmd", "cloudstate")); err != nil {
		return nil, fmt.Errorf("run bench from the repository root, or pass --repo: %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find the loadgen executable (to run the echo server): %w", err)
	}
	binDir, err := os.MkdirTemp("", "loadgen-bench-")
	if err != nil {
		return nil, fmt.Errorf("make a directory for binaries: %w", err)
	}
	defer os.RemoveAll(binDir)
	b := &bench{cfg: cfg, progress: progress, self: self, binDir: binDir, fnBins: map[string]string{}}
	defer b.procs.stopAll(stopGrace)

	if err := b.build(ctx, sel); err != nil {
		return nil, err
	}
	rep := &report{meta: b.meta(), rounds: cfg.Rounds}
	if err := b.load(ctx, sel, rep); err != nil {
		return nil, err
	}
	if cfg.Facts {
		if err := b.facts(ctx, rep); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// stackUp is a running stack: where its calls go and which processes
// serve them.
type stackUp struct {
	addr     string
	servers  []watched
	children []*child // newest last
}

// stop stops the stack's processes, newest first.
func (u *stackUp) stop() {
	for i := len(u.children) - 1; i >= 0; i-- {
		u.children[i].stop(stopGrace)
	}
}

// load starts every stack the scenarios need, all at once, and measures
// the scenarios in rounds: each round runs every scenario at every client
// count. Interleaving the floor with the proxied scenarios, rather than
// running each many times in a row, means a slow spell of the machine
// hits both sides of a ratio alike. Idle stacks cost next to nothing.
func (b *bench) load(ctx context.Context, sel []scenario, rep *report) error {
	ups := map[string]*stackUp{}
	defer func() {
		for _, u := range ups {
			u.stop()
		}
	}()
	for _, st := range stacks {
		if !slices.ContainsFunc(sel, func(s scenario) bool { return s.stack == st.name }) {
			continue
		}
		u, err := b.up(ctx, st)
		if err != nil {
			return err
		}
		ups[st.name] = u
	}
	for round := 1; round <= b.cfg.Rounds; round++ {
		for _, s := range sel {
			for _, n := range b.cfg.Clients {
				row, err := b.measure(ctx, ups[s.stack], s, n)
				if err != nil {
					return fmt.Errorf("round %d, scenario %s with %d clients: %w", round, s.name, n, err)
				}
				row.round = round
				b.logf("round %d  %-6s %3d clients: %8.0f ops/s  p50 %s  p99 %s  errors %s  CPU/call %s  cores busy %s",
					round, s.name, n, row.r.OpsPerSec(), fmtDur(row.r.P50), fmtDur(row.r.P99), errorsText(row.r.Errors), row.cpuText(), row.coresBusy())
				rep.loads = append(rep.loads, row)
			}
		}
	}
	return nil
}

// up starts st: the echo server, or its user function and a proxy in
// front of it.
func (b *bench) up(ctx context.Context, st stack) (*stackUp, error) {
	if st.function == "" {
		echo, addr, err := b.startEcho(ctx)
		if err != nil {
			return nil, err
		}
		return &stackUp{addr: addr, servers: []watched{{"echo server", echo.pid()}}, children: []*child{echo}}, nil
	}
	fn, fnPort, err := b.startFunction(ctx, st)
	if err != nil {
		return nil, err
	}
	proxy, addr, _, err := b.startProxy(ctx, st, fnPort)
	if err != nil {
		fn.stop(stopGrace)
		return nil, err
	}
	return &stackUp{
		addr:     addr,
		servers:  []watched{{"proxy", proxy.pid()}, {"function", fn.pid()}},
		children: []*child{fn, proxy},
	}, nil
}

// facts measures the proxy's start-to-ready time and memory on a fresh
// user function, after every load stack has stopped.
func (b *bench) facts(ctx context.Context, rep *report) error {
	st, _ := findStack(cartStack)
	fn, fnPort, err := b.startFunction(ctx, st)
	if err != nil {
		return err
	}
	defer fn.stop(stopGrace)
	if err := b.startFacts(ctx, st, fnPort, rep); err != nil {
		return err
	}
	return b.memoryFacts(ctx, st, fnPort, fn, rep)
}

// build compiles the proxy and every user function the run needs.
func (b *bench) build(ctx context.Context, sel []scenario) error {
	need := map[string]bool{}
	for _, s := range sel {
		st, _ := findStack(s.stack)
		if st.function != "" {
			need[st.function] = true
		}
	}
	if b.cfg.Facts {
		st, _ := findStack(cartStack)
		need[st.function] = true
	}
	if len(need) == 0 {
		return nil
	}
	b.proxyBin = filepath.Join(b.binDir, "cloudstate")
	b.logf("building ./cmd/cloudstate")
	if err := goBuild(ctx, b.cfg.Repo, "./cmd/cloudstate", b.proxyBin); err != nil {
		return err
	}
	for pkg := range need {
		out := filepath.Join(b.binDir, "fn-"+strings.NewReplacer("/", "_", ".", "_").Replace(pkg))
		b.logf("building %s", pkg)
		if err := goBuild(ctx, b.cfg.Repo, pkg, out); err != nil {
			return err
		}
		b.fnBins[pkg] = out
	}
	return nil
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

// measure runs scenario s with n clients against u, and reads the CPU
// time u's servers and this client used in the measured window.
func (b *bench) measure(ctx context.Context, u *stackUp, s scenario, n int) (loadRow, error) {
	carts := s.carts
	if b.cfg.Carts > 0 {
		carts = b.cfg.Carts
	}
	if err := b.waitQuiet(ctx); err != nil {
		return loadRow{}, err
	}
	for _, c := range u.children {
		if c.exited() {
			return loadRow{}, c.failure("exited during the run")
		}
	}
	meter := &cpuMeter{procs: append(slices.Clone(u.servers), watched{"client", os.Getpid()})}
	r, err := Run(ctx, RunConfig{
		Target: u.addr, Method: s.method, Clients: n, Conns: 1,
		Duration: b.cfg.Duration, Warmup: b.cfg.Warmup,
		Carts: carts, Payload: s.payload,
		OnWindow: meter.mark,
	})
	if err != nil {
		return loadRow{}, err
	}
	cpu, err := meter.result(r.Ops + r.ErrorCount())
	if err != nil {
		return loadRow{}, err
	}
	return loadRow{sc: s, r: r, cpu: cpu, others: meter.others()}, nil
}

// quietCores is the CPU, in cores, the rest of the machine may use for it
// to count as quiet.
const quietCores = 0.2

// waitQuiet waits, up to QuietWait, until the machine has used less than
// quietCores over a whole second. Nothing of the bench's is under load
// while it waits, so what it sees is other work sharing the machine. If
// the machine stays busy it says so and goes on: the row's "others" column
// will show the noise.
func (b *bench) waitQuiet(ctx context.Context) error {
	if b.cfg.QuietWait <= 0 {
		return nil
	}
	deadline := time.Now().Add(b.cfg.QuietWait)
	prev, err := systemBusy()
	if err != nil {
		return err
	}
	prevAt := time.Now()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		now, err := systemBusy()
		if err != nil {
			return err
		}
		at := time.Now()
		cores := (now - prev).Seconds() / at.Sub(prevAt).Seconds()
		if cores < quietCores {
			return nil
		}
		if at.After(deadline) {
			b.logf("the machine is still busy (%.2f cores) after %v; measuring anyway", cores, b.cfg.QuietWait)
			return nil
		}
		prev, prevAt = now, at
	}
}

// startEcho runs this executable as the echo server on a free port.
func (b *bench) startEcho(ctx context.Context) (*child, string, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	c, err := b.procs.start("echo server", b.self, []string{"echo-server", "--listen", addr}, nil)
	if err != nil {
		return nil, "", err
	}
	if err := waitTCP(ctx, c, addr, 10*time.Second); err != nil {
		c.stop(stopGrace)
		return nil, "", err
	}
	return c, addr, nil
}

// startFunction runs st's user function on a free port.
func (b *bench) startFunction(ctx context.Context, st stack) (*child, int, error) {
	port, err := freePort()
	if err != nil {
		return nil, 0, err
	}
	c, err := b.procs.start("user function "+st.function, b.fnBins[st.function], nil,
		[]string{"HOST=127.0.0.1", "PORT=" + strconv.Itoa(port)})
	if err != nil {
		return nil, 0, err
	}
	if err := waitTCP(ctx, c, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 10*time.Second); err != nil {
		c.stop(stopGrace)
		return nil, 0, err
	}
	return c, port, nil
}

// startProxy runs a proxy in front of the function on fnPort and waits,
// polling /ready every millisecond, until it is ready. It returns the
// proxy's gRPC address and the time from process start to ready.
func (b *bench) startProxy(ctx context.Context, st stack, fnPort int, extra ...string) (*child, string, time.Duration, error) {
	port, err := freePort()
	if err != nil {
		return nil, "", 0, err
	}
	args := []string{"proxy",
		"--http-host", "127.0.0.1", "--http-port", strconv.Itoa(port),
		"--user-function-host", "127.0.0.1", "--user-function-port", strconv.Itoa(fnPort),
	}
	args = append(append(args, st.proxyFlags...), extra...)
	c, err := b.procs.start("proxy", b.proxyBin, args, nil)
	if err != nil {
		return nil, "", 0, err
	}
	readyAt, err := waitReady(ctx, c, fmt.Sprintf("http://127.0.0.1:%d/ready", port), time.Millisecond, 30*time.Second)
	if err != nil {
		c.stop(stopGrace)
		return nil, "", 0, err
	}
	return c, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), readyAt.Sub(c.started), nil
}

// startFacts starts the proxy StartRuns times with the function already up
// and records the time to ready, as polled and as the proxy logs it.
func (b *bench) startFacts(ctx context.Context, st stack, fnPort int, rep *report) error {
	for i := range b.cfg.StartRuns {
		if err := b.waitQuiet(ctx); err != nil {
			return err
		}
		p, _, polled, err := b.startProxy(ctx, st, fnPort)
		if err != nil {
			return fmt.Errorf("start-to-ready run %d: %w", i+1, err)
		}
		logged, err := waitSinceStart(ctx, p)
		p.stop(stopGrace)
		if err != nil {
			return fmt.Errorf("start-to-ready run %d: %w", i+1, err)
		}
		b.logf("start %d: ready after %s (proxy says since_start=%s)", i+1, fmtDur(polled), logged)
		rep.starts = append(rep.starts, startRun{polled: polled, logged: logged})
	}
	return nil
}

// idleSettle is how long a fresh proxy is left alone before its idle
// memory is read, so start-up garbage does not count as idle memory.
const idleSettle = time.Second

// memoryFacts reads a fresh proxy's memory at idle, and again once
// RSSCarts distinct carts have each received one AddItem and are all still
// active.
func (b *bench) memoryFacts(ctx context.Context, st stack, fnPort int, fn *child, rep *report) error {
	p, addr, _, err := b.startProxy(ctx, st, fnPort, "--passivation-timeout", "10m")
	if err != nil {
		return fmt.Errorf("memory run: %w", err)
	}
	defer p.stop(stopGrace)
	t := time.NewTimer(idleSettle)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
	}
	m := &rep.memory
	m.carts = b.cfg.RSSCarts
	if m.idleKB, err = rssKB(p.pid(), "VmRSS"); err != nil {
		return err
	}
	reqs, err := buildPayloads("cart-add", b.cfg.RSSCarts, 0)
	if err != nil {
		return err
	}
	took, err := touchCarts(ctx, addr, cartAddMethod, reqs, 16)
	if err != nil {
		return p.failure(fmt.Sprintf("making %d carts active: %v", len(reqs), err))
	}
	m.touchTook = took
	if m.loadedKB, err = rssKB(p.pid(), "VmRSS"); err != nil {
		return err
	}
	if m.peakKB, err = rssKB(p.pid(), "VmHWM"); err != nil {
		return err
	}
	if m.functionKB, err = rssKB(fn.pid(), "VmRSS"); err != nil {
		return err
	}
	b.logf("memory: idle %s, with %d active carts %s (peak %s); function %s",
		fmtKB(m.idleKB), m.carts, fmtKB(m.loadedKB), fmtKB(m.peakKB), fmtKB(m.functionKB))
	return nil
}

// touchCarts sends each request once, from workers concurrent callers,
// and fails if any call fails.
func touchCarts(ctx context.Context, addr, method string, reqs [][]byte, workers int) (time.Duration, error) {
	conns, err := dialConns(ctx, addr, 1)
	if err != nil {
		return 0, err
	}
	defer conns[0].Close()
	var (
		next     atomic.Int64
		mu       sync.Mutex
		failures = map[codes.Code]int64{}
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			var reply rawMessage
			for {
				i := int(next.Add(1) - 1)
				if i >= len(reqs) || ctx.Err() != nil {
					return
				}
				req := rawMessage(reqs[i])
				if err := conns[0].Invoke(ctx, method, &req, &reply); err != nil {
					mu.Lock()
					failures[status.Code(err)]++
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: %w", cartID(i), err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if ctx.Err() != nil {
		return took, ctx.Err()
	}
	if firstErr != nil {
		var r Result
		addErrors(&r, failures)
		return took, fmt.Errorf("failed calls %s; first: %w", errorsText(r.Errors), firstErr)
	}
	return took, nil
}

// meta describes the machine and the run, for the results header.
func (b *bench) meta() [][2]string {
	commit := "unknown"
	cmd := exec.Command("git", "describe", "--always", "--dirty")
	cmd.Dir = b.cfg.Repo
	if out, err := cmd.Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	cpu := "unknown"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return [][2]string{
		{"started", time.Now().UTC().Format("2006-01-02 15:04 UTC")},
		{"commit", commit},
		{"go", runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH},
		{"cpu", fmt.Sprintf("%s, %d logical cores (client, proxy and function share them)", cpu, runtime.NumCPU())},
		{"load", fmt.Sprintf("%v measured after %v warmup per row, %d round(s) interleaved; closed loop, every client on one connection", b.cfg.Duration, b.cfg.Warmup, b.cfg.Rounds)},
	}
}
