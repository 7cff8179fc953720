// Command testfunction is the user function of the end-to-end tests. Its
// services (e2epb/e2e.proto) exercise what the shopping cart sample cannot:
// forwards, side effects, failures that restart an entity, and a service
// with its own passivation timeout. Every reply carries how many times this
// process activated the entity, so tests can see passivation and restarts
// from outside. It listens on $HOST:$PORT like any Cloudstate function.
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction/e2epb"
)

// ConfiguredPassivation is the Configured service's own passivation
// timeout, announced in discovery.
const ConfiguredPassivation = 100 * time.Millisecond

func main() {
	if err := run(); err != nil {
		slog.Error("test function failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := sdk.NewServer(sdk.WithServiceName("e2e-test-function"), sdk.WithServiceVersion("0.0.1"), sdk.WithLogger(logger))
	acts := &activations{n: make(map[string]int64)}
	for _, e := range []sdk.EventSourcedDefinition{counter(acts), relay(acts), configured(acts)} {
		if err := srv.RegisterEventSourced(e); err != nil {
			return err
		}
	}
	logger.Info("test function listening", "addr", sdk.Addr())
	return srv.ListenAndServe(ctx, sdk.Addr())
}

// activations counts, per service and entity id, how many times this
// process created an entity's state: once per stream the proxy opened.
type activations struct {
	mu sync.Mutex
	n  map[string]int64
}

func (a *activations) add(service, id string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := service + "/" + id
	a.n[k]++
	return a.n[k]
}

// state is the state of every entity here: a total, the activation number
// of the instance holding it, and whether it was restored from a snapshot.
type state struct {
	total        int64
	activation   int64
	fromSnapshot bool
}

func (s *state) value() *e2epb.Value {
	return &e2epb.Value{Total: s.total, Activations: s.activation, FromSnapshot: s.fromSnapshot}
}

func newState(acts *activations, service string) func(string) *state {
	return func(id string) *state { return &state{activation: acts.add(service, id)} }
}

const (
	counterService      = "cloudstate.e2e.Counter"
	relayService        = "cloudstate.e2e.Relay"
	configuredService   = "cloudstate.e2e.Configured"
	unregisteredService = "cloudstate.e2e.Unregistered"
)

func counter(acts *activations) *sdk.EventSourcedEntity[state] {
	e := sdk.NewEventSourcedEntity(counterService, newState(acts, counterService),
		sdk.WithPersistenceID("counter"), sdk.WithSnapshotEvery(3))
	sdk.OnCommand(e, "Add", func(ctx *sdk.CommandContext, s *state, in *e2epb.Add) (*e2epb.Value, error) {
		ctx.Emit(&e2epb.Added{Amount: in.GetAmount()})
		return s.value(), nil
	})
	sdk.OnCommand(e, "Get", func(_ *sdk.CommandContext, s *state, _ *e2epb.Get) (*e2epb.Value, error) {
		return s.value(), nil
	})
	sdk.OnCommand(e, "Fail", func(ctx *sdk.CommandContext, s *state, in *e2epb.Fail) (*e2epb.Value, error) {
		if in.GetRestart() {
			// An event applied to the state before the failure: the SDK
			// must ask the proxy to restart the entity, and the proxy must
			// not persist the event.
			ctx.Emit(&e2epb.Added{Amount: 1000})
		}
		return nil, ctx.Fail("%s", in.GetMessage())
	})
	sdk.OnEvent(e, func(s *state, ev *e2epb.Added) error {
		s.total += ev.GetAmount()
		return nil
	})
	sdk.OnSnapshot(e,
		func(s *state) (*e2epb.CounterState, error) { return &e2epb.CounterState{Total: s.total}, nil },
		func(s *state, snap *e2epb.CounterState) error {
			s.total = snap.GetTotal()
			s.fromSnapshot = true
			return nil
		})
	return e
}

func relay(acts *activations) *sdk.EventSourcedEntity[state] {
	e := sdk.NewEventSourcedEntity(relayService, newState(acts, relayService), sdk.WithPersistenceID("relay"))
	sdk.OnCommand(e, "ForwardAdd", func(ctx *sdk.CommandContext, _ *state, in *e2epb.ForwardAdd) (*e2epb.Value, error) {
		ctx.Forward(counterService, "Add", &e2epb.Add{Id: in.GetTargetId(), Amount: in.GetAmount()})
		return nil, nil
	})
	sdk.OnCommand(e, "EffectAdd", func(ctx *sdk.CommandContext, _ *state, in *e2epb.EffectAdd) (*e2epb.Value, error) {
		ctx.SideEffect(counterService, "Add", &e2epb.Add{Id: in.GetTargetId(), Amount: in.GetAmount()}, in.GetSynchronous())
		return &e2epb.Value{Total: 0}, nil
	})
	sdk.OnCommand(e, "ForwardUnknown", func(ctx *sdk.CommandContext, _ *state, in *e2epb.ForwardUnknown) (*e2epb.Value, error) {
		// Unregistered is linked into this program (so the SDK accepts the
		// target) but was never registered, so the proxy does not know it.
		ctx.Forward(unregisteredService, "Add", &e2epb.Add{Id: in.GetId(), Amount: 1})
		return nil, nil
	})
	return e
}

func configured(acts *activations) *sdk.EventSourcedEntity[state] {
	e := sdk.NewEventSourcedEntity(configuredService, newState(acts, configuredService),
		sdk.WithPersistenceID("configured"), sdk.WithPassivationTimeout(ConfiguredPassivation))
	sdk.OnCommand(e, "Touch", func(_ *sdk.CommandContext, s *state, _ *e2epb.Touch) (*e2epb.Value, error) {
		return s.value(), nil
	})
	return e
}
