package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction/e2epb"
)

// Tests against the test function (testfunction/): forwards, side effects,
// failures with restart and passivation, which the cart cannot show.

func counterValue(t *testing.T, c e2epb.CounterClient, id string) *e2epb.Value {
	t.Helper()
	v, err := c.Get(callCtx(t), &e2epb.Get{Id: id})
	if err != nil {
		t.Fatalf("Counter.Get(%s): %v", id, err)
	}
	return v
}

func counterAdd(t *testing.T, c e2epb.CounterClient, id string, amount int64) *e2epb.Value {
	t.Helper()
	v, err := c.Add(callCtx(t), &e2epb.Add{Id: id, Amount: amount})
	if err != nil {
		t.Fatalf("Counter.Add(%s, %d): %v", id, amount, err)
	}
	return v
}

// TestConfiguredPassivation: the Configured service asks for 100 ms in
// discovery; the proxy must close its stream (the next command comes on a
// new activation) within 2 s of idling, as the reference TCK demands. The
// Counter, with the proxy's default of 30 s, stays on its first activation.
func TestConfiguredPassivation(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.testfunction)
	configured := e2epb.NewConfiguredClient(s.conn)
	counter := e2epb.NewCounterClient(s.conn)

	touch := func() *e2epb.Value {
		v, err := configured.Touch(callCtx(t), &e2epb.Touch{Id: "c1"})
		if err != nil {
			t.Fatalf("Configured.Touch: %v", err)
		}
		return v
	}
	if v := touch(); v.GetActivations() != 1 {
		t.Fatalf("first Touch: activations = %d, want 1", v.GetActivations())
	}
	counterAdd(t, counter, "k1", 1)
	start := time.Now()
	testproc.EventuallyEvery(t, 2*time.Second, 150*time.Millisecond, func() error {
		if v := touch(); v.GetActivations() < 2 {
			return fmt.Errorf("Touch still served by activation %d", v.GetActivations())
		}
		return nil
	})
	t.Logf("Configured entity re-activated after %v", time.Since(start).Round(time.Millisecond))
	if v := counterValue(t, counter, "k1"); v.GetActivations() != 1 || v.GetTotal() != 1 {
		t.Errorf("Counter with the default passivation: %v, want total 1 on activation 1", v)
	}
}

// TestProxyPassivationTimeout: --passivation-timeout applies to services
// without their own; the state survives passivation, restored from the
// snapshot (every 3 events) plus the events after it.
func TestProxyPassivationTimeout(t *testing.T) {
	t.Parallel()
	const passivation = 200 * time.Millisecond
	s := startStack(t, bins.testfunction, "--passivation-timeout", passivation.String())
	counter := e2epb.NewCounterClient(s.conn)

	var total int64
	for i := range 7 {
		total += int64(i + 1)
		if v := counterAdd(t, counter, "k", int64(i+1)); v.GetTotal() != total || v.GetActivations() != 1 {
			t.Fatalf("Add %d: %v, want total %d on activation 1", i+1, v, total)
		}
	}
	testproc.EventuallyEvery(t, 5*time.Second, passivation+100*time.Millisecond, func() error {
		v := counterValue(t, counter, "k")
		if v.GetTotal() != total {
			t.Fatalf("total after passivation = %d, want %d", v.GetTotal(), total)
		}
		if v.GetActivations() < 2 {
			return fmt.Errorf("still on activation %d", v.GetActivations())
		}
		if !v.GetFromSnapshot() {
			t.Fatalf("re-activation did not start from a snapshot: %v", v)
		}
		return nil
	})
}

func TestForwardAndSideEffects(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.testfunction)
	relay := e2epb.NewRelayClient(s.conn)
	counter := e2epb.NewCounterClient(s.conn)

	// A forward: the client gets the Counter's reply.
	counterAdd(t, counter, "fwd", 10)
	v, err := relay.ForwardAdd(callCtx(t), &e2epb.ForwardAdd{Id: "r1", TargetId: "fwd", Amount: 5})
	if err != nil {
		t.Fatalf("ForwardAdd: %v", err)
	}
	if v.GetTotal() != 15 {
		t.Errorf("ForwardAdd replied total %d, want the Counter's 15", v.GetTotal())
	}
	if got := counterValue(t, counter, "fwd").GetTotal(); got != 15 {
		t.Errorf("Counter fwd = %d after the forward, want 15", got)
	}

	// A synchronous side effect is done before the reply is released.
	for i := 1; i <= 3; i++ {
		v, err = relay.EffectAdd(callCtx(t), &e2epb.EffectAdd{Id: "r1", TargetId: "sync", Amount: 3, Synchronous: true})
		if err != nil {
			t.Fatalf("EffectAdd synchronous: %v", err)
		}
		if v.GetTotal() != 0 {
			t.Errorf("EffectAdd replied total %d, want 0", v.GetTotal())
		}
		if got := counterValue(t, counter, "sync").GetTotal(); got != int64(3*i) {
			t.Fatalf("Counter sync = %d right after synchronous side effect %d, want %d", got, i, 3*i)
		}
	}

	// An asynchronous one happens eventually.
	v, err = relay.EffectAdd(callCtx(t), &e2epb.EffectAdd{Id: "r2", TargetId: "async", Amount: 4})
	if err != nil {
		t.Fatalf("EffectAdd asynchronous: %v", err)
	}
	if v.GetTotal() != 0 {
		t.Errorf("EffectAdd replied total %d, want 0", v.GetTotal())
	}
	testproc.Eventually(t, 5*time.Second, func() error {
		if got := counterValue(t, counter, "async").GetTotal(); got != 4 {
			return fmt.Errorf("Counter async = %d, want 4", got)
		}
		return nil
	})

	// A forward to a service the proxy never discovered: INTERNAL, and the
	// function is told about its mistake with reportError.
	_, err = relay.ForwardUnknown(callCtx(t), &e2epb.ForwardUnknown{Id: "r3"})
	wantStatus(t, err, codes.Internal, "")
	testproc.Eventually(t, 5*time.Second, func() error {
		if !strings.Contains(s.fn.Output(), "Service [cloudstate.e2e.Unregistered] unknown") {
			return fmt.Errorf("the function's log does not show the reportError about Unregistered")
		}
		return nil
	})
	// The relay entity still works.
	if v, err := relay.ForwardAdd(callCtx(t), &e2epb.ForwardAdd{Id: "r3", TargetId: "fwd", Amount: 1}); err != nil || v.GetTotal() != 16 {
		t.Errorf("ForwardAdd after the failed forward = %v, %v; want total 16", v, err)
	}
}

// TestFailWithRestart: a command that emits and then fails must reach the
// caller with its message; the event must not be persisted; the entity is
// restarted from the journal and serves again.
func TestFailWithRestart(t *testing.T) {
	t.Parallel()
	s := startStack(t, bins.testfunction)
	counter := e2epb.NewCounterClient(s.conn)

	counterAdd(t, counter, "f", 5)
	_, err := counter.Fail(callCtx(t), &e2epb.Fail{Id: "f", Message: "boom: no restart"})
	wantStatus(t, err, codes.Unknown, "boom: no restart")
	if v := counterValue(t, counter, "f"); v.GetTotal() != 5 || v.GetActivations() != 1 {
		t.Fatalf("after a plain failure: %v, want total 5 on activation 1", v)
	}

	_, err = counter.Fail(callCtx(t), &e2epb.Fail{Id: "f", Message: "boom: restart", Restart: true})
	wantStatus(t, err, codes.Unknown, "boom: restart")
	if got := status.Convert(err).Message(); got != "boom: restart" {
		t.Errorf("failure message = %q, want exactly %q", got, "boom: restart")
	}
	v := counterValue(t, counter, "f")
	if v.GetTotal() != 5 {
		t.Fatalf("total after a failed command with restart = %d, want 5 (its event must not be persisted)", v.GetTotal())
	}
	if v.GetActivations() != 2 {
		t.Errorf("activations after restart = %d, want 2 (the proxy must restart the entity)", v.GetActivations())
	}
	if v := counterAdd(t, counter, "f", 2); v.GetTotal() != 7 {
		t.Errorf("Add after restart: total %d, want 7", v.GetTotal())
	}
}
