package testkit_test

import (
	"errors"
	"testing"

	"github.com/cloudstate-go/cloudstate/sdk"
	"github.com/cloudstate-go/cloudstate/sdk/internal/counter"
	"github.com/cloudstate-go/cloudstate/sdk/internal/testpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func newCounter(t *testing.T, opts ...testkit.Option) *testkit.EventSourced[counter.Counter] {
	t.Helper()
	c, err := testkit.NewEventSourced(counter.New(), "c1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCallEmitsAndPersists(t *testing.T) {
	c := newCounter(t)
	res, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 4})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure != nil || res.Reply == nil {
		t.Fatalf("result %+v", res)
	}
	if len(res.Events) != 1 || !proto.Equal(res.Events[0], &testpb.Added{Amount: 4}) {
		t.Fatalf("events %v", res.Events)
	}
	if got := c.State(); got.Value != 4 || got.Adds != 1 {
		t.Fatalf("state %+v", got)
	}
	get, err := testkit.Call[*testpb.Value](c, "Get", &testpb.GetRequest{CounterId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if get.Reply.GetValue() != 4 || len(get.Events) != 0 {
		t.Fatalf("get %+v", get)
	}
	if c.Sequence() != 1 {
		t.Fatalf("sequence %d", c.Sequence())
	}
}

func TestFailures(t *testing.T) {
	c := newCounter(t)
	res, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: -1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || res.Failure.Description != "amount must be positive, got -1" || res.Failure.Restart || res.Reply != nil {
		t.Fatalf("result %+v failure %+v", res, res.Failure)
	}

	// Emit then fail: the event is applied in memory, then discarded; the
	// testkit restarts the entity from the journal like the proxy.
	if _, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 1}); err != nil {
		t.Fatal(err)
	}
	res, err = testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 10, FailAfterEmit: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failure == nil || !res.Failure.Restart || len(res.Events) != 0 {
		t.Fatalf("result %+v failure %+v", res, res.Failure)
	}
	if got := c.State(); got.Value != 1 {
		t.Fatalf("state after restart %+v, want value 1", got)
	}

	res, err = testkit.Call[*emptypb.Empty](c, "Nope", &testpb.GetRequest{})
	if err != nil || res.Failure == nil || res.Failure.Description != "unknown command Nope" {
		t.Fatalf("unknown command: %v %+v", err, res)
	}
}

func TestPanicIsACrash(t *testing.T) {
	c := newCounter(t)
	if _, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 2}); err != nil {
		t.Fatal(err)
	}
	_, err := testkit.Call[*emptypb.Empty](c, "Boom", &testpb.GetRequest{CounterId: "c1"})
	if !errors.Is(err, testkit.ErrCrashed) {
		t.Fatalf("err %v, want ErrCrashed", err)
	}
	// Restarted from the journal, working again.
	get, err := testkit.Call[*testpb.Value](c, "Get", &testpb.GetRequest{CounterId: "c1"})
	if err != nil || get.Reply.GetValue() != 2 {
		t.Fatalf("after crash: %v %+v", err, get)
	}
}

func TestWrongReplyType(t *testing.T) {
	c := newCounter(t)
	if _, err := testkit.Call[*emptypb.Empty](c, "Get", &testpb.GetRequest{CounterId: "c1"}); err == nil {
		t.Fatal("a reply of the wrong type was accepted")
	}
}

func TestForwardAndSideEffects(t *testing.T) {
	c := newCounter(t)
	res, err := testkit.Call[*testpb.Value](c, "Relay", &testpb.RelayRequest{CounterId: "c1", TargetId: "c2", Forward: true, Synchronous: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != nil || res.Forward == nil {
		t.Fatalf("result %+v", res)
	}
	if res.Forward.Service != counter.ServiceName || res.Forward.Method != "Get" || !proto.Equal(res.Forward.Message, &testpb.GetRequest{CounterId: "c2"}) {
		t.Fatalf("forward %+v", res.Forward)
	}
	if len(res.SideEffects) != 1 {
		t.Fatalf("side effects %+v", res.SideEffects)
	}
	se := res.SideEffects[0]
	if se.Service != counter.ServiceName || se.Method != "Add" || !se.Synchronous ||
		!proto.Equal(se.Message, &testpb.AddRequest{CounterId: "c2", Amount: 1}) {
		t.Fatalf("side effect %+v", se)
	}
	if from, _ := se.Metadata.Get("from"); from != "c1" {
		t.Fatalf("side effect metadata %v", se.Metadata)
	}
}

func TestCommandMetadata(t *testing.T) {
	c := newCounter(t)
	var md sdk.Metadata
	md.Add("x-echo", "hello")
	res, err := testkit.Call[*testpb.Value](c, "Get", &testpb.GetRequest{CounterId: "c1"}, testkit.WithCommandMetadata(md))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := res.ReplyMetadata.Get("x-echo"); v != "hello" {
		t.Fatalf("reply metadata %v", res.ReplyMetadata)
	}
}

func TestSnapshotsAndReplay(t *testing.T) {
	c := newCounter(t)
	for i := 1; i <= 4; i++ {
		res, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if wantSnap := i == counter.SnapshotEvery; (res.Snapshot != nil) != wantSnap {
			t.Fatalf("add %d: snapshot %v", i, res.Snapshot)
		}
	}
	snap, seq, err := c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if seq != 3 || !proto.Equal(snap, &testpb.CounterState{Value: 6, Adds: 3}) {
		t.Fatalf("snapshot %v at %d", snap, seq)
	}
	// Passivate and reactivate: the snapshot plus event 4 rebuild the state.
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if got := c.State(); got.Value != 10 || got.Adds != 4 {
		t.Fatalf("state after restart %+v", got)
	}
	events, err := c.Events()
	if err != nil || len(events) != 4 {
		t.Fatalf("journal %v %v", events, err)
	}
}

func TestStartFromSnapshotAndEvents(t *testing.T) {
	c := newCounter(t,
		testkit.WithSnapshot(5, &testpb.CounterState{Value: 50, Adds: 5}),
		testkit.WithEvents(&testpb.Added{Amount: 1}, &testpb.Cleared{}, &testpb.Added{Amount: 7}))
	if got := c.State(); got.Value != 7 || got.Adds != 7 {
		t.Fatalf("state %+v", got)
	}
	if c.Sequence() != 8 {
		t.Fatalf("sequence %d", c.Sequence())
	}
	// 8 -> 9 crosses a multiple of 3.
	res, err := testkit.Call[*emptypb.Empty](c, "Add", &testpb.AddRequest{CounterId: "c1", Amount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(res.Snapshot, &testpb.CounterState{Value: 8, Adds: 8}) {
		t.Fatalf("snapshot %v", res.Snapshot)
	}
}

func TestInvalidEntity(t *testing.T) {
	e := sdk.NewEventSourcedEntity("no.such.Service", func(string) *counter.Counter { return &counter.Counter{} })
	if _, err := testkit.NewEventSourced(e, "x"); err == nil {
		t.Fatal("an invalid entity was accepted")
	}
	if _, err := testkit.NewEventSourced(counter.New(), "x", testkit.WithEvents(&emptypb.Empty{})); err == nil {
		t.Fatal("replay of an event without handler succeeded")
	}
}
