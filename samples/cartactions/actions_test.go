package main

import (
	"context"
	"slices"
	"testing"

	pb "github.com/cloudstate-go/cloudstate/samples/cartactions/cartactionspb"
	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	cartpb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/sdk/testkit"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

func newActions(t *testing.T) *testkit.Action {
	t.Helper()
	a, err := testkit.NewAction(NewActions())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// callOne makes a unary or client-streaming call and returns its one
// response.
func callOne[Out, In proto.Message](t *testing.T, a *testkit.Action, method string, inputs []In) testkit.ActionResponse[Out] {
	t.Helper()
	res, err := testkit.CallAction[Out](a, method, inputs)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Responses) != 1 {
		t.Fatalf("%d responses, want 1: %+v", len(res.Responses), res.Responses)
	}
	return res.Responses[0]
}

func TestCheckoutForwardsToRemoveCart(t *testing.T) {
	a := newActions(t)
	r := callOne[*emptypb.Empty](t, a, "Checkout", []*pb.CheckoutRequest{{UserId: "alice"}})
	if r.Forward == nil || r.Reply != nil || r.Failure != nil {
		t.Fatalf("response %+v", r)
	}
	if r.Forward.Service != cart.ServiceName || r.Forward.Method != "RemoveCart" ||
		!proto.Equal(r.Forward.Message, &cartpb.RemoveShoppingCart{UserId: "alice"}) {
		t.Fatalf("forward %+v", r.Forward)
	}

	r = callOne[*emptypb.Empty](t, a, "Checkout", []*pb.CheckoutRequest{{}})
	if r.Failure == nil || r.Failure.Description != "Cannot check out without a user id" || r.Forward != nil {
		t.Fatalf("response %+v", r)
	}
}

func TestAddItemsFansOutThroughSideEffects(t *testing.T) {
	a := newActions(t)
	r := callOne[*pb.Summary](t, a, "AddItems", []*pb.AddLineItem{
		{UserId: "alice", ProductId: "apple", Name: "Apple", Quantity: 2},
		{UserId: "bob", ProductId: "pear", Name: "Pear", Quantity: 3},
	})
	if !proto.Equal(r.Reply, &pb.Summary{Lines: 2, TotalQuantity: 5}) {
		t.Fatalf("summary %v", r.Reply)
	}
	want := []*cartpb.AddLineItem{
		{UserId: "alice", ProductId: "apple", Name: "Apple", Quantity: 2},
		{UserId: "bob", ProductId: "pear", Name: "Pear", Quantity: 3},
	}
	if len(r.SideEffects) != len(want) {
		t.Fatalf("side effects %+v", r.SideEffects)
	}
	for i, se := range r.SideEffects {
		if se.Service != cart.ServiceName || se.Method != "AddItem" || !se.Synchronous || !proto.Equal(se.Message, want[i]) {
			t.Fatalf("side effect %d: %+v", i, se)
		}
	}

	// An empty stream adds nothing.
	r = callOne[*pb.Summary](t, a, "AddItems", []*pb.AddLineItem{})
	if !proto.Equal(r.Reply, &pb.Summary{}) || len(r.SideEffects) != 0 {
		t.Fatalf("empty stream: %+v", r)
	}
}

func TestAddItemsWithABadLineAddsNothing(t *testing.T) {
	a := newActions(t)
	r := callOne[*pb.Summary](t, a, "AddItems", []*pb.AddLineItem{
		{UserId: "alice", ProductId: "apple", Quantity: 1},
		{UserId: "alice", ProductId: "pear", Quantity: 0},
	})
	if r.Failure == nil || r.Failure.Description != "Cannot add a quantity of 0 of item pear" || len(r.SideEffects) != 0 {
		t.Fatalf("response %+v", r)
	}
}

func TestCountdown(t *testing.T) {
	a := newActions(t)
	res, err := testkit.CallAction[*pb.Tick](a, "Countdown", []*pb.CountdownRequest{{From: 3, IntervalMs: 1}})
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for _, tick := range res.Replies() {
		got = append(got, tick.GetRemaining())
	}
	if want := []int32{3, 2, 1, 0}; !slices.Equal(got, want) {
		t.Fatalf("ticks %v, want %v", got, want)
	}

	for _, in := range []*pb.CountdownRequest{{From: 0}, {From: 101}, {From: 1, IntervalMs: -1}, {From: 1, IntervalMs: 10001}} {
		res, err := testkit.CallAction[*pb.Tick](a, "Countdown", []*pb.CountdownRequest{in})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Responses) != 1 || res.Responses[0].Failure == nil {
			t.Fatalf("%v: responses %+v", in, res.Responses)
		}
	}
}

func TestCountdownStopsWhenCancelled(t *testing.T) {
	a := newActions(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A long countdown: without the cancellation it would take 100 minutes.
	res, err := testkit.CallActionContext[*pb.Tick](ctx, a, "Countdown", []*pb.CountdownRequest{{From: 100, IntervalMs: 10000}})
	if status.Code(err) != codes.Canceled {
		t.Fatalf("err %v, want Canceled", err)
	}
	if len(res.Replies()) != 1 {
		t.Fatalf("ticks %v", res.Replies())
	}
}

func TestEcho(t *testing.T) {
	a := newActions(t)
	res, err := testkit.CallAction[*pb.ChatMessage](a, "Echo", []*pb.ChatMessage{{Text: "hi"}, {Text: " there "}, {Text: "Bye"}, {Text: "unheard"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range res.Replies() {
		got = append(got, m.GetText())
	}
	if want := []string{"echo: hi", "echo: there", "bye!"}; !slices.Equal(got, want) {
		t.Fatalf("replies %q, want %q", got, want)
	}
}
