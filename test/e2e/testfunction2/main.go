// Command testfunction2 is the second user function of the end-to-end
// tests (e2e2pb/e2e2.proto). It has one service of each kind that can
// forward: the Actions action, the Tally value entity and the Ledger
// event-sourced entity, which forward to each other and add side effects on
// each other, so that chains across entity types can be checked from
// outside. Its action also has methods that fail mid-stream, stream until
// the caller cancels (recording what they saw, for Observed), and echo
// their input, which the benchmark uses. It listens on $HOST:$PORT like any
// Cloudstate function.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction2/e2e2pb"
)

const (
	actionsService = "cloudstate.e2e2.Actions"
	tallyService   = "cloudstate.e2e2.Tally"
	ledgerService  = "cloudstate.e2e2.Ledger"
)

func main() {
	if err := run(); err != nil {
		slog.Error("test function 2 failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// LOG_LEVEL=error keeps the benchmark's function quiet.
	level := slog.LevelDebug
	if os.Getenv("LOG_LEVEL") == "error" {
		level = slog.LevelError
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	srv := sdk.NewServer(sdk.WithServiceName("e2e-test-function-2"), sdk.WithServiceVersion("0.0.1"), sdk.WithLogger(logger))
	if err := srv.RegisterAction(actions(logger, &observations{calls: map[string]*e2e2pb.ObservedReply{}})); err != nil {
		return err
	}
	if err := srv.RegisterValueEntity(tally()); err != nil {
		return err
	}
	if err := srv.RegisterEventSourced(ledger()); err != nil {
		return err
	}
	logger.Info("test function 2 listening", "addr", sdk.Addr())
	return srv.ListenAndServe(ctx, sdk.Addr())
}

// observations records, per Ticks call id, what the handler saw: the
// tests ask for it with Observed to check that a client's cancellation
// reached the function.
type observations struct {
	mu    sync.Mutex
	calls map[string]*e2e2pb.ObservedReply
}

func (o *observations) set(id string, sent int32, ended, cancelled bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls[id] = &e2e2pb.ObservedReply{Sent: sent, Ended: ended, Cancelled: cancelled}
}

func (o *observations) get(id string) *e2e2pb.ObservedReply {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r, ok := o.calls[id]; ok {
		return &e2e2pb.ObservedReply{Sent: r.GetSent(), Ended: r.GetEnded(), Cancelled: r.GetCancelled()}
	}
	return &e2e2pb.ObservedReply{}
}

func actions(logger *slog.Logger, obs *observations) *sdk.Action {
	a := sdk.NewAction(actionsService)
	sdk.OnUnary(a, "Echo", func(_ *sdk.ActionContext, in *e2e2pb.Payload) (*e2e2pb.Payload, error) {
		return in, nil
	})
	sdk.OnUnary(a, "Start", func(ctx *sdk.ActionContext, in *e2e2pb.ChainRequest) (*e2e2pb.Total, error) {
		ctx.Forward(tallyService, "Relay", &e2e2pb.TallyRelay{
			Id: in.GetTallyId(), LedgerId: in.GetLedgerId(), Amount: in.GetAmount(), Trail: "action",
		})
		return nil, nil
	})
	sdk.OnUnary(a, "Effects", func(ctx *sdk.ActionContext, in *e2e2pb.EffectsRequest) (*e2e2pb.Total, error) {
		ctx.SideEffect(tallyService, "Add", &e2e2pb.TallyAdd{Id: in.GetTallyId(), Amount: in.GetAmount(), DelayMs: in.GetDelayMs()}, in.GetSynchronous())
		ctx.SideEffect(ledgerService, "Add", &e2e2pb.LedgerAdd{Id: in.GetLedgerId(), Amount: in.GetAmount()}, in.GetSynchronous())
		if in.GetFail() {
			return nil, ctx.Fail("Effects failed as asked, after recording its side effects")
		}
		return &e2e2pb.Total{Trail: "effects"}, nil
	})
	sdk.OnServerStream(a, "FailAfter", func(ctx *sdk.ActionContext, in *e2e2pb.FailAfterRequest, send func(*e2e2pb.Tick) error) error {
		for n := int32(1); n <= in.GetCount(); n++ {
			if err := send(&e2e2pb.Tick{N: n}); err != nil {
				return err
			}
		}
		logger.Info("FailAfter is failing", "after", in.GetCount(), "code", in.GetCode())
		if in.GetCode() != 0 {
			return status.Error(codes.Code(in.GetCode()), in.GetMessage())
		}
		return ctx.Fail("%s", in.GetMessage())
	})
	sdk.OnServerStream(a, "Ticks", func(ctx *sdk.ActionContext, in *e2e2pb.TicksRequest, send func(*e2e2pb.Tick) error) error {
		interval := time.Duration(in.GetIntervalMs()) * time.Millisecond
		if interval <= 0 {
			interval = 20 * time.Millisecond
		}
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		var sent int32
		obs.set(in.GetId(), 0, false, false)
		for {
			if err := send(&e2e2pb.Tick{N: sent + 1}); err != nil {
				cancelled := ctx.Context().Err() != nil
				obs.set(in.GetId(), sent, true, cancelled)
				logger.Info("Ticks send failed", "id", in.GetId(), "sent", sent, "cancelled", cancelled, "error", err)
				return err
			}
			sent++
			obs.set(in.GetId(), sent, false, false)
			select {
			case <-ticker.C:
			case <-ctx.Context().Done():
				obs.set(in.GetId(), sent, true, true)
				logger.Info("Ticks call cancelled", "id", in.GetId(), "sent", sent)
				return ctx.Context().Err()
			}
		}
	})
	sdk.OnUnary(a, "Observed", func(_ *sdk.ActionContext, in *e2e2pb.ObservedRequest) (*e2e2pb.ObservedReply, error) {
		return obs.get(in.GetId()), nil
	})
	sdk.OnBidiStream(a, "Chat", func(ctx *sdk.ActionContext, recv func() (*e2e2pb.ChatLine, error), send func(*e2e2pb.ChatLine) error) error {
		for n := 0; ; n++ {
			in, err := recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			switch in.GetText() {
			case "fail":
				logger.Info("Chat is failing", "after", n)
				return ctx.Fail("chat failed after %d lines", n)
			case "status":
				return status.Errorf(codes.FailedPrecondition, "chat refused after %d lines", n)
			}
			if err := send(&e2e2pb.ChatLine{Text: "echo: " + in.GetText()}); err != nil {
				return err
			}
		}
	})
	return a
}

func tally() *sdk.ValueEntity[*e2e2pb.TallyState] {
	e := sdk.NewValueEntity(tallyService, func(string) *e2e2pb.TallyState { return &e2e2pb.TallyState{} },
		sdk.WithPersistenceID("tally"))
	sdk.OnValueCommand(e, "Add", func(ctx *sdk.ValueContext, s *e2e2pb.TallyState, in *e2e2pb.TallyAdd) (*e2e2pb.Total, error) {
		if in.GetAmount() < 0 {
			return nil, ctx.Fail("Cannot add a negative amount %d to tally %s", in.GetAmount(), ctx.EntityID())
		}
		if d := time.Duration(in.GetDelayMs()) * time.Millisecond; d > 0 {
			// Stands in for slow work, so tests can tell whether the
			// caller of a side effect waited for it.
			timer := time.NewTimer(d)
			select {
			case <-timer.C:
			case <-ctx.Context().Done():
				timer.Stop()
				return nil, ctx.Context().Err()
			}
		}
		s.Total += in.GetAmount()
		ctx.Update(s)
		return &e2e2pb.Total{Total: s.GetTotal(), Trail: "tally", CommandId: ctx.CommandID()}, nil
	})
	sdk.OnValueCommand(e, "Get", func(ctx *sdk.ValueContext, s *e2e2pb.TallyState, _ *e2e2pb.TallyGet) (*e2e2pb.Total, error) {
		return &e2e2pb.Total{Total: s.GetTotal(), Trail: "tally", CommandId: ctx.CommandID()}, nil
	})
	sdk.OnValueCommand(e, "Relay", func(ctx *sdk.ValueContext, s *e2e2pb.TallyState, in *e2e2pb.TallyRelay) (*e2e2pb.Total, error) {
		s.Total += in.GetAmount()
		ctx.Update(s)
		ctx.Forward(ledgerService, "Add", &e2e2pb.LedgerAdd{Id: in.GetLedgerId(), Amount: in.GetAmount(), Trail: extend(in.GetTrail(), "tally")})
		return nil, nil
	})
	sdk.OnValueCommand(e, "Effect", func(ctx *sdk.ValueContext, s *e2e2pb.TallyState, in *e2e2pb.TallyEffect) (*e2e2pb.Total, error) {
		s.Total += in.GetAmount()
		ctx.Update(s)
		ctx.SideEffect(ledgerService, "Add", &e2e2pb.LedgerAdd{Id: in.GetLedgerId(), Amount: in.GetAmount()}, in.GetSynchronous())
		return &e2e2pb.Total{Total: s.GetTotal(), Trail: "tally", CommandId: ctx.CommandID()}, nil
	})
	return e
}

// ledgerState is the Ledger's state, rebuilt from Credited events.
type ledgerState struct{ total int64 }

func ledger() *sdk.EventSourcedEntity[ledgerState] {
	e := sdk.NewEventSourcedEntity(ledgerService, func(string) *ledgerState { return &ledgerState{} },
		sdk.WithPersistenceID("ledger"))
	sdk.OnCommand(e, "Add", func(ctx *sdk.CommandContext, s *ledgerState, in *e2e2pb.LedgerAdd) (*e2e2pb.Total, error) {
		if in.GetAmount() < 0 {
			return nil, ctx.Fail("Cannot credit a negative amount %d to ledger %s", in.GetAmount(), ctx.EntityID())
		}
		ctx.Emit(&e2e2pb.Credited{Amount: in.GetAmount()})
		return &e2e2pb.Total{Total: s.total, Trail: extend(in.GetTrail(), "ledger"), CommandId: ctx.CommandID()}, nil
	})
	sdk.OnCommand(e, "Get", func(ctx *sdk.CommandContext, s *ledgerState, _ *e2e2pb.LedgerGet) (*e2e2pb.Total, error) {
		return &e2e2pb.Total{Total: s.total, Trail: "ledger", CommandId: ctx.CommandID()}, nil
	})
	sdk.OnCommand(e, "Effect", func(ctx *sdk.CommandContext, s *ledgerState, in *e2e2pb.LedgerEffect) (*e2e2pb.Total, error) {
		ctx.Emit(&e2e2pb.Credited{Amount: in.GetAmount()})
		ctx.SideEffect(tallyService, "Add", &e2e2pb.TallyAdd{Id: in.GetTallyId(), Amount: in.GetAmount()}, in.GetSynchronous())
		return &e2e2pb.Total{Total: s.total, Trail: "ledger", CommandId: ctx.CommandID()}, nil
	})
	sdk.OnEvent(e, func(s *ledgerState, ev *e2e2pb.Credited) error {
		s.total += ev.GetAmount()
		return nil
	})
	return e
}

// extend appends step to a forward chain's trail.
func extend(trail, step string) string {
	if trail == "" {
		return step
	}
	return trail + ">" + step
}
