package e2e

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction2/e2e2pb"
)

// Tests of forwards and side effects across entity types, with
// testfunction2: Actions (an action), Tally (a value entity) and Ledger (an
// event-sourced entity).

// totals reads a Tally and a Ledger.
func totals(t *testing.T, tally e2e2pb.TallyClient, ledger e2e2pb.LedgerClient, tallyID, ledgerID string) (int64, int64) {
	t.Helper()
	tv, err := tally.Get(callCtx(t), &e2e2pb.TallyGet{Id: tallyID})
	if err != nil {
		t.Fatalf("Tally.Get(%s): %v", tallyID, err)
	}
	lv, err := ledger.Get(callCtx(t), &e2e2pb.LedgerGet{Id: ledgerID})
	if err != nil {
		t.Fatalf("Ledger.Get(%s): %v", ledgerID, err)
	}
	return tv.GetTotal(), lv.GetTotal()
}

// wantTotals fails unless the Tally and the Ledger hold these totals.
func wantTotals(t *testing.T, tally e2e2pb.TallyClient, ledger e2e2pb.LedgerClient, tallyID, ledgerID string, wantTally, wantLedger int64) {
	t.Helper()
	if gt, gl := totals(t, tally, ledger, tallyID, ledgerID); gt != wantTally || gl != wantLedger {
		t.Fatalf("tally %s = %d, ledger %s = %d; want %d and %d", tallyID, gt, ledgerID, gl, wantTally, wantLedger)
	}
}

// TestForwardChain: an action forwards to a value entity, which updates its
// value and forwards to an event-sourced entity; the client gets the last
// reply, whose trail shows the path. A failure at the end of the chain
// reaches the client, after the value entity's update was stored (FX-4:
// an entity's forward runs after its state was persisted).
func TestForwardChain(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, testFunction2Bin)
	actions := e2e2pb.NewActionsClient(s.conn)
	tally := e2e2pb.NewTallyClient(s.conn)
	ledger := e2e2pb.NewLedgerClient(s.conn)

	var want int64
	for i, amount := range []int64{5, 7, 11} {
		want += amount
		v, err := actions.Start(callCtx(t), &e2e2pb.ChainRequest{TallyId: "t1", LedgerId: "l1", Amount: amount})
		if err != nil {
			t.Fatalf("Start %d: %v", i, err)
		}
		if v.GetTrail() != "action>tally>ledger" || v.GetTotal() != want {
			t.Fatalf("Start %d replied %v, want the Ledger's total %d with trail action>tally>ledger", i, v, want)
		}
	}
	wantTotals(t, tally, ledger, "t1", "l1", want, want)

	// Two chains through the same Tally into different Ledgers.
	if v, err := actions.Start(callCtx(t), &e2e2pb.ChainRequest{TallyId: "t1", LedgerId: "l2", Amount: 100}); err != nil || v.GetTotal() != 100 {
		t.Fatalf("Start into l2 = %v, %v; want total 100", v, err)
	}
	wantTotals(t, tally, ledger, "t1", "l2", want+100, 100)

	// The Ledger refuses a negative amount: its failure is the client's
	// result; the Tally had stored its update before forwarding.
	_, err := actions.Start(callCtx(t), &e2e2pb.ChainRequest{TallyId: "t1", LedgerId: "l1", Amount: -3})
	wantExactStatus(t, err, codes.Unknown, "Cannot credit a negative amount -3 to ledger l1")
	wantTotals(t, tally, ledger, "t1", "l1", want+100-3, want)

	// A chain can also start at the value entity.
	v, err := tally.Relay(callCtx(t), &e2e2pb.TallyRelay{Id: "t3", LedgerId: "l3", Amount: 4})
	if err != nil || v.GetTrail() != "tally>ledger" || v.GetTotal() != 4 {
		t.Fatalf("Tally.Relay = %v, %v; want total 4 with trail tally>ledger", v, err)
	}
}

// TestSideEffectsAcrossTypes: side effects from an action on a value
// entity and an event-sourced entity, from a value entity on an
// event-sourced one, and from an event-sourced entity on a value entity;
// synchronous ones are done when the reply arrives, asynchronous ones are
// not waited for and happen eventually (FX-3); a failing action's side
// effects still happen (FX-5).
func TestSideEffectsAcrossTypes(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, testFunction2Bin)
	actions := e2e2pb.NewActionsClient(s.conn)
	tally := e2e2pb.NewTallyClient(s.conn)
	ledger := e2e2pb.NewLedgerClient(s.conn)

	t.Run("action, synchronous", func(t *testing.T) {
		for i := int64(1); i <= 3; i++ {
			v, err := actions.Effects(callCtx(t), &e2e2pb.EffectsRequest{TallyId: "as", LedgerId: "as", Amount: 2, Synchronous: true})
			if err != nil || v.GetTrail() != "effects" {
				t.Fatalf("Effects = %v, %v", v, err)
			}
			wantTotals(t, tally, ledger, "as", "as", 2*i, 2*i)
		}
	})
	t.Run("action, synchronous, waits for a slow target", func(t *testing.T) {
		const delay = 300 * time.Millisecond
		start := time.Now()
		if _, err := actions.Effects(callCtx(t), &e2e2pb.EffectsRequest{TallyId: "slow-sync", LedgerId: "slow-sync", Amount: 1,
			Synchronous: true, DelayMs: int32(delay / time.Millisecond)}); err != nil {
			t.Fatalf("Effects: %v", err)
		}
		if d := time.Since(start); d < delay {
			t.Errorf("the reply came after %v, before the synchronous side effect (%v) could be done", d, delay)
		}
		wantTotals(t, tally, ledger, "slow-sync", "slow-sync", 1, 1)
	})
	t.Run("action, asynchronous", func(t *testing.T) {
		// The Tally side effect takes 3 s; the reply must not wait for it.
		const delay = 3 * time.Second
		start := time.Now()
		if _, err := actions.Effects(callCtx(t), &e2e2pb.EffectsRequest{TallyId: "aa", LedgerId: "aa", Amount: 6,
			DelayMs: int32(delay / time.Millisecond)}); err != nil {
			t.Fatalf("Effects: %v", err)
		}
		if d := time.Since(start); d >= delay*2/3 {
			t.Errorf("the reply took %v: it waited for the asynchronous side effect (%v)", d, delay)
		}
		testproc.Eventually(t, 10*time.Second, func() error {
			if gt, gl := totals(t, tally, ledger, "aa", "aa"); gt != 6 || gl != 6 {
				return fmt.Errorf("tally %d, ledger %d; want 6 and 6", gt, gl)
			}
			return nil
		})
	})
	t.Run("action failure still has its side effects", func(t *testing.T) {
		_, err := actions.Effects(callCtx(t), &e2e2pb.EffectsRequest{TallyId: "af", LedgerId: "af", Amount: 9, Synchronous: true, Fail: true})
		wantExactStatus(t, err, codes.Unknown, "Effects failed as asked, after recording its side effects")
		wantTotals(t, tally, ledger, "af", "af", 9, 9)
	})
	t.Run("value entity to event-sourced", func(t *testing.T) {
		v, err := tally.Effect(callCtx(t), &e2e2pb.TallyEffect{Id: "vs", LedgerId: "vs", Amount: 4, Synchronous: true})
		if err != nil || v.GetTotal() != 4 {
			t.Fatalf("Tally.Effect synchronous = %v, %v; want total 4", v, err)
		}
		wantTotals(t, tally, ledger, "vs", "vs", 4, 4)
		if _, err := tally.Effect(callCtx(t), &e2e2pb.TallyEffect{Id: "vs", LedgerId: "va", Amount: 5}); err != nil {
			t.Fatalf("Tally.Effect asynchronous: %v", err)
		}
		testproc.Eventually(t, 5*time.Second, func() error {
			if gt, gl := totals(t, tally, ledger, "vs", "va"); gt != 9 || gl != 5 {
				return fmt.Errorf("tally %d, ledger %d; want 9 and 5", gt, gl)
			}
			return nil
		})
	})
	t.Run("event-sourced to value entity", func(t *testing.T) {
		v, err := ledger.Effect(callCtx(t), &e2e2pb.LedgerEffect{Id: "es", TallyId: "es", Amount: 8, Synchronous: true})
		if err != nil || v.GetTotal() != 8 {
			t.Fatalf("Ledger.Effect synchronous = %v, %v; want total 8", v, err)
		}
		wantTotals(t, tally, ledger, "es", "es", 8, 8)
		if _, err := ledger.Effect(callCtx(t), &e2e2pb.LedgerEffect{Id: "es", TallyId: "ea", Amount: 3}); err != nil {
			t.Fatalf("Ledger.Effect asynchronous: %v", err)
		}
		testproc.Eventually(t, 5*time.Second, func() error {
			if gt, gl := totals(t, tally, ledger, "ea", "es"); gt != 3 || gl != 11 {
				return fmt.Errorf("tally %d, ledger %d; want 3 and 11", gt, gl)
			}
			return nil
		})
	})
	t.Run("side effects whose targets fail", func(t *testing.T) {
		// Both targets refuse a negative amount. A side effect's failure
		// result is discarded (FX-3): the client gets the action's reply.
		v, err := actions.Effects(callCtx(t), &e2e2pb.EffectsRequest{TallyId: "neg", LedgerId: "neg", Amount: -1, Synchronous: true})
		if err != nil || v.GetTrail() != "effects" {
			t.Fatalf("Effects with failing side effects = %v, %v; want the action's own reply", v, err)
		}
		wantTotals(t, tally, ledger, "neg", "neg", 0, 0)
	})
}
