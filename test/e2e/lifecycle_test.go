package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction/e2epb"
)

// wantHTTP fails unless GET path on the proxy answers code.
func wantHTTP(t *testing.T, p *proxy, path string, code int) {
	t.Helper()
	got, err := p.httpStatus(path)
	if err != nil || got != code {
		t.Fatalf("GET %s = %d, %v; want %d", path, got, err, code)
	}
}

// TestReadinessBeforeDiscovery starts the proxy before its function: it is
// live but not ready and refuses user calls with UNAVAILABLE; once the
// function is up, it becomes ready and serves.
func TestReadinessBeforeDiscovery(t *testing.T) {
	t.Parallel()
	fnPort := testproc.FreePort(t)
	p := startProxy(t, fnPort)
	testproc.Eventually(t, 10*time.Second, func() error {
		if p.Exited() {
			t.Fatalf("proxy exited: %v", p.Wait())
		}
		_, err := p.httpStatus("/live")
		return err
	})
	cart := newCartClient(t, p.dial(t))
	// Several discovery retries (50-200 ms apart) happen meanwhile; the
	// proxy must stay not ready through all of them.
	for range 5 {
		wantHTTP(t, p, "/ready", http.StatusServiceUnavailable)
		wantHTTP(t, p, "/live", http.StatusOK)
		wantHTTP(t, p, "/alive", http.StatusOK)
		_, err := cart.c.AddItem(callCtx(t), &pb.AddLineItem{UserId: "u", ProductId: "p", Quantity: 1})
		wantStatus(t, err, codes.Unavailable, "")
	}

	startFunction(t, bins.shoppingcart, fnPort)
	p.waitReady(t)
	wantHTTP(t, p, "/live", http.StatusOK)
	wantHTTP(t, p, "/alive", http.StatusOK)
	cart.add("u", "p", 1)
	wantCart(t, cart.get("u"), item("p", 1))
}

// TestFunctionRestart kills the function with SIGKILL mid-run and starts it
// again on the same port. The same proxy process must notice (not ready,
// calls fail with UNAVAILABLE), recover by itself, and serve the carts with
// their state from its store.
func TestFunctionRestart(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)
	cart := newCartClient(t, s.conn)
	pid := s.proxy.Pid()

	const carts = 5
	for i := range carts {
		for j := range i + 1 {
			cart.add(fmt.Sprintf("r%d", i), fmt.Sprintf("p%d", j), int32(i+1))
		}
	}

	s.fn.Kill()
	testproc.Eventually(t, 10*time.Second, func() error {
		code, err := s.proxy.httpStatus("/ready")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable {
			return fmt.Errorf("/ready = %d after the function died, want 503", code)
		}
		return nil
	})
	wantHTTP(t, s.proxy, "/live", http.StatusOK)
	wantHTTP(t, s.proxy, "/alive", http.StatusOK)
	// While the function is down, calls fail at once with a clear status:
	// UNAVAILABLE. A cart whose stream broke may first fail one command the
	// way ES-6 says (the entity had not noticed yet); the next is UNAVAILABLE.
	for _, user := range []string{"r0", "r4", "fresh"} {
		start := time.Now()
		_, err := cart.c.GetCart(callCtx(t), &pb.GetShoppingCart{UserId: user})
		if st := status.Convert(err); user != "fresh" && st.Code() == codes.Unknown &&
			(st.Message() == "Unexpected entity termination" || st.Message() == "Entity terminated") {
			t.Logf("GetCart(%s) right after the function died: %v", user, err)
			_, err = cart.c.GetCart(callCtx(t), &pb.GetShoppingCart{UserId: user})
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("GetCart(%s) while the function is down: %v, want UNAVAILABLE", user, err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("GetCart(%s) took %v to fail while the function is down", user, d)
		}
	}

	s.fn = startFunction(t, bins.shoppingcart, s.fnPort)
	s.proxy.waitReady(t)
	if s.proxy.Exited() || s.proxy.Pid() != pid {
		t.Fatalf("the proxy restarted (pid %d, exited %v); it must recover on its own", s.proxy.Pid(), s.proxy.Exited())
	}
	for i := range carts {
		var want []*pb.LineItem
		for j := range i + 1 {
			want = append(want, item(fmt.Sprintf("p%d", j), int32(i+1)))
		}
		wantCart(t, cart.get(fmt.Sprintf("r%d", i)), want...)
	}
	cart.add("r0", "p0", 1)
	wantCart(t, cart.get("r0"), item("p0", 2))
}

// TestReflection lists services with the v1alpha reflection client and
// fetches the cart's descriptor.
func TestReflection(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)
	stream, err := rpb.NewServerReflectionClient(s.conn).ServerReflectionInfo(callCtx(t))
	if err != nil {
		t.Fatalf("open reflection stream: %v", err)
	}
	ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
		t.Helper()
		if err := stream.Send(req); err != nil {
			t.Fatalf("send reflection request: %v", err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("receive reflection response: %v", err)
		}
		return resp
	}

	resp := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}})
	var names []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		names = append(names, svc.GetName())
	}
	want := []string{"grpc.reflection.v1alpha.ServerReflection", "com.example.shoppingcart.ShoppingCart"}
	if !slices.Equal(names, want) {
		t.Errorf("list_services = %q, want %q", names, want)
	}

	resp = ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{
		FileContainingSymbol: "com.example.shoppingcart.ShoppingCart"}})
	found := false
	for _, b := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
		var fd descriptorpb.FileDescriptorProto
		if err := proto.Unmarshal(b, &fd); err != nil {
			t.Fatalf("file descriptor: %v", err)
		}
		for _, svc := range fd.GetService() {
			if fd.GetPackage()+"."+svc.GetName() == "com.example.shoppingcart.ShoppingCart" && len(svc.GetMethod()) == 3 {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("file_containing_symbol did not return the ShoppingCart service with its 3 methods: %v", resp)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWithCallsInFlight sends SIGTERM while clients keep calling:
// the proxy exits 0 within its shutdown timeout, and every call ends with a
// reply or UNAVAILABLE; none hangs. The proxy keeps its state in Pebble, so
// a second proxy on the same store shows that every acknowledged call was
// durable (and nothing was applied that was never sent).
func TestShutdownWithCallsInFlight(t *testing.T) {
	t.Parallel()
	store := "pebble:" + t.TempDir()
	s := startStack(t, bins.shoppingcart, "--store", store)
	client := pb.NewShoppingCartClient(s.conn)

	const workers, users = 20, 5
	var acked, attempted [users]atomic.Int32
	var ok atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			u := w % users
			for {
				ctx, cancel := context.WithTimeout(context.Background(), proxyShutdownTimeout+5*time.Second)
				attempted[u].Add(1)
				_, err := client.AddItem(ctx, &pb.AddLineItem{UserId: fmt.Sprintf("s%d", u), ProductId: "p", Name: "P", Quantity: 1})
				cancel()
				if err == nil {
					acked[u].Add(1)
					ok.Add(1)
					continue
				}
				if status.Code(err) != codes.Unavailable {
					errs <- fmt.Errorf("worker %d: %w", w, err)
				}
				return
			}
		})
	}
	testproc.Eventually(t, 10*time.Second, func() error {
		if ok.Load() < 100 {
			return fmt.Errorf("only %d calls done", ok.Load())
		}
		return nil
	})

	took := s.proxy.stopAndCheck(t)
	if took > proxyShutdownTimeout+time.Second {
		t.Errorf("proxy took %v to stop, more than its shutdown timeout %v", took, proxyShutdownTimeout)
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(proxyShutdownTimeout + 10*time.Second):
		t.Fatal("callers still waiting after the proxy exited")
	}
	close(errs)
	for err := range errs {
		t.Errorf("call during shutdown: %v (want a reply or UNAVAILABLE)", err)
	}
	t.Logf("%d calls succeeded; proxy stopped %v after SIGTERM", ok.Load(), took.Round(time.Millisecond))

	again := startProxy(t, s.fnPort, "--store", store)
	again.waitReady(t)
	cart := newCartClient(t, again.dial(t))
	for u := range users {
		q := items(cart.get(fmt.Sprintf("s%d", u)))["p"]
		if q < acked[u].Load() || q > attempted[u].Load() {
			t.Errorf("cart s%d holds %d after the restart; %d calls were acknowledged and %d attempted",
				u, q, acked[u].Load(), attempted[u].Load())
		}
	}
}

// runCall runs `cloudstate call --addr <proxy> args...` and returns its
// stdout, stderr and exit status.
func runCall(t *testing.T, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.cloudstate, append([]string{"call", "--addr", addr}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run cloudstate call: %v", err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// TestCallCommand runs `cloudstate call` as the README shows it.
func TestCallCommand(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.shoppingcart)

	stdout, stderr, code := runCall(t, s.proxy.addr, "ShoppingCart/AddItem",
		`{"user_id":"alice","product_id":"apple","name":"Apple","quantity":2}`)
	if code != 0 {
		t.Fatalf("call AddItem exited %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if strings.TrimSpace(stdout) != "{}" {
		t.Errorf("call AddItem printed %q, want {}", stdout)
	}

	stdout, stderr, code = runCall(t, s.proxy.addr, "ShoppingCart/GetCart", `{"user_id":"alice"}`)
	if code != 0 {
		t.Fatalf("call GetCart exited %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	// Exactly what the README shows.
	const wantJSON = `{
  "items": [
    {
      "productId": "apple",
      "name": "Apple",
      "quantity": 2
    }
  ]
}`
	if strings.TrimSpace(stdout) != wantJSON {
		t.Errorf("call GetCart printed\n%s\nwant\n%s", stdout, wantJSON)
	}
	var got struct {
		Items []struct {
			ProductID string `json:"productId"`
			Quantity  int    `json:"quantity"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(stdout), &got); err != nil || len(got.Items) != 1 || got.Items[0].Quantity != 2 {
		t.Errorf("call GetCart output does not parse as the cart: %v, %+v", err, got)
	}

	// A function failure: exit status 1 and the message on stderr.
	stdout, stderr, code = runCall(t, s.proxy.addr, "ShoppingCart/RemoveItem", `{"user_id":"alice","product_id":"pear"}`)
	const wantErr = "ERROR: UNKNOWN: Cannot remove item pear because it is not in the cart"
	if code != 1 || strings.TrimSpace(stderr) != wantErr {
		t.Errorf("call RemoveItem of a missing item: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, wantErr)
	}
}

var devChildPID = regexp.MustCompile(`msg="user function started" pid=(\d+)`)

// TestDevCommand runs the README's demo, `cloudstate dev ./samples/shoppingcart`,
// from the repository root: it becomes ready and serves; SIGTERM stops it
// and the function it started. Its Pebble store goes to a temporary
// directory instead of the repository's .cloudstate-data; a second run on
// the same store finds the cart as the first left it.
func TestDevCommand(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	store := "pebble:" + t.TempDir()

	runDev(t, store, func(cart cartClient) {
		wantCart(t, cart.get("alice"))
		cart.add("alice", "apple", 2)
		wantCart(t, cart.get("alice"), item("apple", 2))
	})
	runDev(t, store, func(cart cartClient) {
		wantCart(t, cart.get("alice"), item("apple", 2))
		cart.add("alice", "apple", 1)
		wantCart(t, cart.get("alice"), item("apple", 3))
	})
}

// runDev starts `cloudstate dev` with the given store, waits until it is
// ready, runs use against it, then stops it with SIGTERM and checks that
// it and the function it started are gone.
func runDev(t *testing.T, store string, use func(cartClient)) {
	t.Helper()
	httpPort, fnPort := testproc.FreePort(t), testproc.FreePort(t)
	dev := startProcess(t, "cloudstate dev", repoRoot, nil, bins.cloudstate, "dev",
		"--http-host", "127.0.0.1",
		"--http-port", strconv.Itoa(httpPort),
		"--user-function-port", strconv.Itoa(fnPort),
		"--discovery-backoff-min", "50ms",
		"--discovery-backoff-max", "200ms",
		"--graceful-termination-timeout", proxyShutdownTimeout.String(),
		"--store", store,
		"./samples/shoppingcart")
	p := &proxy{Process: dev, httpPort: httpPort, addr: "127.0.0.1:" + strconv.Itoa(httpPort)}
	// dev builds the sample first, which can take a while on a cold cache.
	testproc.WaitOK(t, dev, "http://"+p.addr+"/ready", 60*time.Second, 2*time.Second)
	use(newCartClient(t, p.dial(t)))

	m := devChildPID.FindStringSubmatch(dev.Output())
	if m == nil {
		t.Fatal("cloudstate dev did not log the pid of the function it started")
	}
	child, _ := strconv.Atoi(m[1])
	if !dev.Stop(proxyShutdownTimeout + 10*time.Second) {
		t.Fatal("cloudstate dev did not exit on SIGTERM")
	}
	if code := dev.ExitCode(); code != 0 {
		t.Errorf("cloudstate dev exited with status %d after SIGTERM, want 0", code)
	}
	// The function it started must be gone too (dev reaps it before exiting).
	if err := syscall.Kill(child, 0); !errors.Is(err, syscall.ESRCH) {
		_ = syscall.Kill(child, syscall.SIGKILL)
		t.Errorf("the function started by cloudstate dev (pid %d) is still running after dev exited", child)
	}
}

// TestProxyExitsZeroOnSIGTERM starts and stops proxies in front of one
// function, again and again: every one must exit 0 on SIGTERM (DISC-10).
// A shutdown race shows only now and then, so one stop is not enough.
func TestProxyExitsZeroOnSIGTERM(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	fnPort := testproc.FreePort(t)
	startFunction(t, bins.testfunction, fnPort)
	const rounds, concurrent = 8, 3
	for round := range rounds {
		var proxies []*proxy
		for range concurrent {
			proxies = append(proxies, startProxy(t, fnPort))
		}
		for _, p := range proxies {
			p.waitReady(t)
			counter := e2epb.NewCounterClient(p.dial(t))
			counterAdd(t, counter, fmt.Sprintf("round-%d-%d", round, p.httpPort), 1)
		}
		var wg sync.WaitGroup
		for _, p := range proxies {
			wg.Go(func() { p.stopAndCheck(t) })
		}
		wg.Wait()
		if t.Failed() {
			t.Fatalf("failed in round %d of %d", round+1, rounds)
		}
	}
}
