package durability

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/store/postgres"
)

// TestDatabaseRestartUnderLoad crashes and restarts the proxy's PostgreSQL
// (a private server, pg_ctl -m immediate) while 32 clients write. During
// the outage calls must fail with UNAVAILABLE (never hang, never another
// code), afterwards the same proxy must serve again by itself, and the
// journal must hold every acknowledged write, once, without gaps.
func TestDatabaseRestartUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a private PostgreSQL under load; skipped with -short")
	}
	pg := startPrivatePostgres(t)
	_, fnPort := startFunction(t)
	p := startProxy(t, fnPort, 0, pg.DSN())
	p.waitReady(t, 20*time.Second)

	before, after := ackTargets()
	l := startLoad(t, dialN(t, p.addr, 4), crashClients, crashCarts)
	l.waitAcked(t, before, 60*time.Second)

	l.setPhase("database down")
	failedBefore := l.failed.Load()
	pg.crash(t)
	// Keep the database down until calls have failed: the writes in flight
	// at the crash fail at once; calls that come later fail once the
	// store has given up reconnecting (its retry window is 5 s).
	testproc.Eventually(t, 30*time.Second, func() error {
		if n := l.failed.Load() - failedBefore; n < 2*crashClients {
			return fmt.Errorf("%d calls failed since the database went down, want %d", n, 2*crashClients)
		}
		return nil
	})
	pg.start(t)
	l.setPhase("database back")
	atRestart := l.acked.Load()
	l.waitAcked(t, atRestart+after, 60*time.Second)
	if p.Exited() {
		t.Fatalf("the proxy exited during the outage: %v", p.Wait())
	}
	l.stop()

	views := snapshotCarts(t, dial(t, p.addr), crashCarts)
	p.stopAndCheck(t)

	if f := l.failures()["load"]; len(f) > 0 {
		t.Errorf("writes failed before the database went down: %v", f)
	}
	wantOnly(t, l, codes.Unavailable, "database down", "database back")

	st, err := postgres.Open(bounded(t, 30*time.Second), pg.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	checkJournal(t, st, l, views)
}
