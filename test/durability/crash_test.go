package durability

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/cloudstate-go/cloudstate/internal/storecli"
	"github.com/cloudstate-go/cloudstate/internal/testenv"
	"github.com/cloudstate-go/cloudstate/internal/testproc"
	pb "github.com/cloudstate-go/cloudstate/samples/shoppingcart/shoppingcartpb"
	"github.com/cloudstate-go/cloudstate/store/pebble"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// The load of the crash tests.
const (
	crashClients = 32
	crashCarts   = 500
)

// ackTargets are how many writes must be acknowledged before a fault
// (the proxy killed, the database restarted) and after recovery; -short
// makes them smaller.
func ackTargets() (before, after int64) {
	if testing.Short() {
		return 1000, 500
	}
	return 5000, 3000
}

// dialN returns n connections to addr.
func dialN(t *testing.T, addr string, n int) []*grpc.ClientConn {
	conns := make([]*grpc.ClientConn, n)
	for i := range conns {
		conns[i] = dial(t, addr)
	}
	return conns
}

// killProxyUnderLoad runs the crash scenario on the store named by spec:
// 32 clients write to 500 carts, the proxy gets SIGKILL mid-load and is
// started again on the same store and port, the clients go on, and
// finally the proxy is stopped cleanly. It returns the load and what the
// restarted proxy served for every cart.
func killProxyUnderLoad(t *testing.T, spec string) (*load, map[string]*pb.Cart) {
	t.Helper()
	_, fnPort := startFunction(t)
	httpPort := testproc.FreePort(t)
	first := startProxy(t, fnPort, httpPort, spec)
	first.waitReady(t, 20*time.Second)
	if strings.HasPrefix(spec, "pebble:") {
		checkCLIRefusesLiveDir(t, strings.TrimPrefix(spec, "pebble:"), first.Pid())
	}

	conns := dialN(t, first.addr, 4)
	ackedBefore, ackedAfter := ackTargets()
	l := startLoad(t, conns, crashClients, crashCarts)
	l.waitAcked(t, ackedBefore, 60*time.Second)
	l.setPhase("proxy down")
	first.Kill()
	atKill := l.acked.Load()
	t.Logf("proxy (pid %d) killed after %d acknowledged writes", first.Pid(), atKill)

	second := startProxy(t, fnPort, httpPort, spec)
	second.waitReady(t, 20*time.Second)
	l.setPhase("proxy restarted")
	l.waitAcked(t, atKill+ackedAfter, 60*time.Second)
	l.stop()

	views := snapshotCarts(t, conns[0], crashCarts)
	second.stopAndCheck(t)

	if f := l.failures()["load"]; len(f) > 0 {
		t.Errorf("writes failed before the proxy was killed: %v; e.g. %q", f,
			l.sampleMessages(3, func(w write) bool { return w.phase == "load" }))
	}
	// With the proxy gone, calls fail in the client's transport.
	wantOnly(t, l, codes.Unavailable, "proxy down")
	return l, views
}

// checkCLIRefusesLiveDir checks that `cloudstate store` explains, instead of
// failing obscurely, that a running proxy holds the directory.
func checkCLIRefusesLiveDir(t *testing.T, dir string, proxyPID int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := storecli.Run(context.Background(), []string{"events", "shopping-cart|cart-000", "--store", "pebble:" + dir, "--descriptors", "none"},
		func(string) string { return "" }, &stdout, &stderr)
	if !errors.Is(err, pebble.ErrLocked) {
		t.Fatalf("cloudstate store on a live directory: %v, want an error wrapping pebble.ErrLocked", err)
	}
	for _, want := range []string{"pid " + strconv.Itoa(proxyPID), "Stop the proxy", "cp -r"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("cloudstate store on a live directory: %q does not say %q", err, want)
		}
	}
}

func TestProxyKilledPebble(t *testing.T) {
	dir := t.TempDir()
	l, views := killProxyUnderLoad(t, "pebble:"+dir)

	st, err := pebble.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkJournal(t, st, l, views)
	st.Close()

	// The operations CLI reads the same journal once the proxy is gone.
	var stdout, stderr bytes.Buffer
	if err := storecli.Run(context.Background(), []string{"events", "shopping-cart|cart-007", "--store", "pebble:" + dir, "--json", "--descriptors", "none"},
		func(string) string { return "" }, &stdout, &stderr); err != nil {
		t.Fatalf("cloudstate store events: %v\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], `{"seq":1,"type_url":"type.googleapis.com/com.example.shoppingcart.domain.ItemAdded"`) {
		t.Errorf("cloudstate store events printed %q", testproc.Tail(stdout.String(), 3))
	}
}

func TestProxyKilledPostgres(t *testing.T) {
	dsn, _ := testenv.PostgresSchema(t)
	l, views := killProxyUnderLoad(t, dsn)

	st, err := postgres.Open(bounded(t, 30*time.Second), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkJournal(t, st, l, views)
}
