// Package counter is the event-sourced entity the SDK's own tests run: a
// counter whose handlers use every feature of the command context.
package counter

import (
	"errors"
	"time"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ServiceName is the counter's gRPC service.
const ServiceName = "cloudstate.sdktest.Counter"

// SnapshotEvery is the counter's snapshot interval.
const SnapshotEvery = 3

// Counter is the entity state.
type Counter struct {
	Value int64
	Adds  int64
}

// New returns the counter entity definition.
func New() *sdk.EventSourcedEntity[Counter] {
	e := sdk.NewEventSourcedEntity(ServiceName, func(string) *Counter { return &Counter{} },
		sdk.WithPersistenceID("counters"), sdk.WithSnapshotEvery(SnapshotEvery), sdk.WithPassivationTimeout(2*time.Minute))

	sdk.OnCommand(e, "Add", func(ctx *sdk.CommandContext, c *Counter, in *testpb.AddRequest) (*emptypb.Empty, error) {
		if in.GetAmount() <= 0 {
			return nil, ctx.Fail("amount must be positive, got %d", in.GetAmount())
		}
		ctx.Emit(&testpb.Added{Amount: in.GetAmount()})
		if in.GetFailAfterEmit() {
			return nil, errors.New("failed after emit")
		}
		return &emptypb.Empty{}, nil
	})
	sdk.OnCommand(e, "Get", func(ctx *sdk.CommandContext, c *Counter, in *testpb.GetRequest) (*testpb.Value, error) {
		if v, ok := ctx.Metadata().Get("x-echo"); ok {
			var md sdk.Metadata
			md.Add("x-echo", v)
			ctx.SetReplyMetadata(md)
		}
		return &testpb.Value{Value: c.Value}, nil
	})
	sdk.OnCommand(e, "Clear", func(ctx *sdk.CommandContext, c *Counter, in *testpb.GetRequest) (*emptypb.Empty, error) {
		ctx.Emit(&testpb.Cleared{})
		return nil, nil // a nil reply is sent as an empty message
	})
	sdk.OnCommand(e, "Relay", func(ctx *sdk.CommandContext, c *Counter, in *testpb.RelayRequest) (*testpb.Value, error) {
		var md sdk.Metadata
		md.Add("from", ctx.EntityID())
		ctx.SideEffect(ServiceName, "Add", &testpb.AddRequest{CounterId: in.GetTargetId(), Amount: 1}, in.GetSynchronous(), sdk.WithMetadata(md))
		if in.GetForward() {
			ctx.Forward(ServiceName, "Get", &testpb.GetRequest{CounterId: in.GetTargetId()})
			return nil, nil
		}
		return &testpb.Value{Value: c.Value}, nil
	})
	sdk.OnCommand(e, "Boom", func(ctx *sdk.CommandContext, c *Counter, in *testpb.GetRequest) (*emptypb.Empty, error) {
		panic("boom")
	})

	sdk.OnEvent(e, func(c *Counter, ev *testpb.Added) error {
		c.Value += ev.GetAmount()
		c.Adds++
		return nil
	})
	sdk.OnEvent(e, func(c *Counter, ev *testpb.Cleared) error {
		c.Value = 0
		return nil
	})
	sdk.OnSnapshot(e,
		func(c *Counter) (*testpb.CounterState, error) {
			return &testpb.CounterState{Value: c.Value, Adds: c.Adds}, nil
		},
		func(c *Counter, s *testpb.CounterState) error {
			c.Value, c.Adds = s.GetValue(), s.GetAdds()
			return nil
		})
	return e
}
