package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
	apb "github.com/cloudstate-go/cloudstate/samples/cartactions/cartactionspb"
	"github.com/cloudstate-go/cloudstate/test/e2e/testfunction2/e2e2pb"
)

// Tests of actions through the proxy: the cart actions sample (one method
// per streaming shape) and the action of testfunction2 (failures
// mid-stream, cancellation seen by the function, unary echo).

// wantExactStatus fails unless err has exactly this code and message.
func wantExactStatus(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || st.Message() != msg {
		t.Fatalf("got error %v, want status %s %q", err, code, msg)
	}
}

func TestActionUnaryForward(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, cartActionsBin)
	actions := apb.NewCartActionsClient(s.conn)
	cart := newValueCart(t, s.conn)

	cart.add("alice", "apple", 2)
	cart.add("bob", "fig", 1)
	// Checkout forwards to ShoppingCart/RemoveCart: the client gets the
	// cart's reply, and the cart is gone.
	if _, err := actions.Checkout(callCtx(t), &apb.CheckoutRequest{UserId: "alice"}); err != nil {
		t.Fatalf("Checkout: %v", err)
	}
	wantValueCart(t, cart.get("alice"))
	wantValueCart(t, cart.get("bob"), vItem("fig", 1))
	// The action's own failure.
	_, err := actions.Checkout(callCtx(t), &apb.CheckoutRequest{})
	wantExactStatus(t, err, codes.Unknown, "Cannot check out without a user id")
}

func TestActionClientStreaming(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, cartActionsBin)
	actions := apb.NewCartActionsClient(s.conn)
	cart := newValueCart(t, s.conn)

	addItems := func(lines ...*apb.AddLineItem) (*apb.Summary, error) {
		t.Helper()
		stream, err := actions.AddItems(callCtx(t))
		if err != nil {
			t.Fatalf("open AddItems: %v", err)
		}
		for _, l := range lines {
			if err := stream.Send(l); err != nil {
				t.Fatalf("send line: %v", err)
			}
		}
		return stream.CloseAndRecv()
	}
	line := func(user, product string, qty int32) *apb.AddLineItem {
		return &apb.AddLineItem{UserId: user, ProductId: product, Name: strings.ToUpper(product), Quantity: qty}
	}

	sum, err := addItems(line("carol", "apple", 2), line("carol", "pear", 1), line("dave", "fig", 5))
	if err != nil {
		t.Fatalf("AddItems: %v", err)
	}
	if want := (&apb.Summary{Lines: 3, TotalQuantity: 8}); !proto.Equal(sum, want) {
		t.Errorf("summary = %v, want %v", sum, want)
	}
	// The side effects are synchronous: the carts hold the items as soon
	// as the client has the summary.
	wantValueCart(t, cart.get("carol"), vItem("apple", 2), vItem("pear", 1))
	wantValueCart(t, cart.get("dave"), vItem("fig", 5))

	// One bad line fails the call and adds nothing.
	_, err = addItems(line("carol", "kiwi", 1), line("carol", "plum", 0))
	wantExactStatus(t, err, codes.Unknown, "Cannot add a quantity of 0 of item plum")
	wantValueCart(t, cart.get("carol"), vItem("apple", 2), vItem("pear", 1))

	// No lines: an empty summary.
	sum, err = addItems()
	if err != nil || sum.GetLines() != 0 || sum.GetTotalQuantity() != 0 {
		t.Errorf("AddItems with no lines = %v, %v; want an empty summary", sum, err)
	}
}

func TestActionServerStreaming(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, cartActionsBin)
	actions := apb.NewCartActionsClient(s.conn)

	stream, err := actions.Countdown(callCtx(t), &apb.CountdownRequest{From: 3, IntervalMs: 5})
	if err != nil {
		t.Fatalf("Countdown: %v", err)
	}
	var got []int32
	for {
		tick, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Countdown after %v: %v", got, err)
		}
		got = append(got, tick.GetRemaining())
	}
	if fmt.Sprint(got) != "[3 2 1 0]" {
		t.Errorf("ticks = %v, want [3 2 1 0]", got)
	}

	stream, err = actions.Countdown(callCtx(t), &apb.CountdownRequest{From: 0})
	if err == nil {
		_, err = stream.Recv()
	}
	wantExactStatus(t, err, codes.Unknown, "Cannot count down from 0: choose 1 to 100")
}

func TestActionBidiStreaming(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, cartActionsBin)
	actions := apb.NewCartActionsClient(s.conn)

	stream, err := actions.Echo(callCtx(t))
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	// Each answer arrives before the next message is sent: the proxy
	// relays both directions at once.
	for _, text := range []string{"hello", "world"} {
		if err := stream.Send(&apb.ChatMessage{Text: text}); err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
		msg, err := stream.Recv()
		if err != nil || msg.GetText() != "echo: "+text {
			t.Fatalf("answer to %q = %v, %v", text, msg, err)
		}
	}
	if err := stream.Send(&apb.ChatMessage{Text: "bye"}); err != nil {
		t.Fatalf("send bye: %v", err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetText() != "bye!" {
		t.Fatalf("answer to bye = %v, %v", msg, err)
	}
	// The function ended the call.
	if msg, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after bye: %v, %v; want the end of the stream", msg, err)
	}

	// The client ending its side ends the call normally.
	stream, err = actions.Echo(callCtx(t))
	if err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if err := stream.Send(&apb.ChatMessage{Text: "one"}); err != nil {
		t.Fatalf("send: %v", err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend: %v", err)
	}
	if msg, err := stream.Recv(); err != nil || msg.GetText() != "echo: one" {
		t.Fatalf("answer = %v, %v", msg, err)
	}
	if msg, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v, %v; want the end of the stream", msg, err)
	}
}

// TestActionCountdownCancel cancels a Countdown after two ticks: the client
// sees CANCELED, and the proxy goes on serving (a new Countdown runs to the
// end, repeatedly).
func TestActionCountdownCancel(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, cartActionsBin)
	actions := apb.NewCartActionsClient(s.conn)

	for round := range 3 {
		ctx, cancel := context.WithCancel(callCtx(t))
		stream, err := actions.Countdown(ctx, &apb.CountdownRequest{From: 100, IntervalMs: 20})
		if err != nil {
			t.Fatalf("Countdown: %v", err)
		}
		for want := int32(100); want > 98; want-- {
			tick, err := stream.Recv()
			if err != nil || tick.GetRemaining() != want {
				t.Fatalf("round %d: tick = %v, %v; want %d", round, tick, err, want)
			}
		}
		cancel()
		// Ticks already in flight may still arrive; then the stream ends
		// with CANCELED, well before the countdown would have finished.
		for {
			_, err := stream.Recv()
			if err == nil {
				continue
			}
			if status.Code(err) != codes.Canceled {
				t.Fatalf("round %d: after cancelling: %v, want CANCELED", round, err)
			}
			break
		}
	}

	stream, err := actions.Countdown(callCtx(t), &apb.CountdownRequest{From: 2, IntervalMs: 5})
	if err != nil {
		t.Fatalf("Countdown: %v", err)
	}
	n := 0
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Countdown after the cancelled ones: %v", err)
		}
		n++
	}
	if n != 3 {
		t.Errorf("Countdown from 2 sent %d ticks, want 3", n)
	}
	newValueCart(t, s.conn).add("erin", "apple", 1)
}

// TestActionCancelReachesFunction: when the client cancels a server stream,
// the proxy must cancel the function's call, and the handler sees it (it
// records that for Observed and logs it); the proxy keeps serving.
func TestActionCancelReachesFunction(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, testFunction2Bin)
	actions := e2e2pb.NewActionsClient(s.conn)

	ctx, cancel := context.WithCancel(callCtx(t))
	stream, err := actions.Ticks(ctx, &e2e2pb.TicksRequest{Id: "c1", IntervalMs: 20})
	if err != nil {
		t.Fatalf("Ticks: %v", err)
	}
	for want := int32(1); want <= 2; want++ {
		tick, err := stream.Recv()
		if err != nil || tick.GetN() != want {
			t.Fatalf("tick = %v, %v; want %d", tick, err, want)
		}
	}
	cancel()
	var seen *e2e2pb.ObservedReply
	testproc.Eventually(t, 5*time.Second, func() error {
		o, err := actions.Observed(callCtx(t), &e2e2pb.ObservedRequest{Id: "c1"})
		if err != nil {
			return err
		}
		if !o.GetEnded() {
			return fmt.Errorf("the Ticks handler is still running after %d ticks", o.GetSent())
		}
		seen = o
		return nil
	})
	if !seen.GetCancelled() {
		t.Errorf("the Ticks handler ended without seeing a cancellation: %v", seen)
	}
	if seen.GetSent() < 2 {
		t.Errorf("the handler sent %d ticks, want at least the 2 received", seen.GetSent())
	}
	testproc.Eventually(t, 5*time.Second, func() error {
		if logs := s.fn.Output(); !strings.Contains(logs, "Ticks call cancelled") && !strings.Contains(logs, "Ticks send failed") {
			return fmt.Errorf("the function did not log the end of the cancelled call")
		}
		return nil
	})

	// A new call works and runs until its own cancellation.
	ctx2, cancel2 := context.WithCancel(callCtx(t))
	defer cancel2()
	stream, err = actions.Ticks(ctx2, &e2e2pb.TicksRequest{Id: "c2", IntervalMs: 5})
	if err != nil {
		t.Fatalf("Ticks: %v", err)
	}
	for range 5 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("second Ticks call: %v", err)
		}
	}
	cancel2()
	if o, err := actions.Observed(callCtx(t), &e2e2pb.ObservedRequest{Id: "c1"}); err != nil || o.GetSent() != seen.GetSent() {
		t.Errorf("the cancelled call's ticks = %v, %v; want it to have stopped at %d", o, err, seen.GetSent())
	}
}

// TestActionFailMidStream: a function failing a stream after sending some
// messages: the client gets those messages, then UNKNOWN with the failure's
// description; a function ending the call with a gRPC status passes it on
// unchanged (ACT-3). Both for a server stream and a bidi stream, after
// which the proxy keeps serving.
func TestActionFailMidStream(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, testFunction2Bin)
	actions := e2e2pb.NewActionsClient(s.conn)

	failAfter := func(req *e2e2pb.FailAfterRequest) ([]int32, error) {
		t.Helper()
		stream, err := actions.FailAfter(callCtx(t), req)
		if err != nil {
			return nil, err
		}
		var got []int32
		for {
			tick, err := stream.Recv()
			if err != nil {
				return got, err
			}
			got = append(got, tick.GetN())
		}
	}
	got, err := failAfter(&e2e2pb.FailAfterRequest{Count: 3, Message: "boom after 3"})
	if fmt.Sprint(got) != "[1 2 3]" {
		t.Errorf("ticks before the failure = %v, want [1 2 3]", got)
	}
	wantExactStatus(t, err, codes.Unknown, "boom after 3")

	got, err = failAfter(&e2e2pb.FailAfterRequest{Count: 2, Message: "refused after 2", Code: int32(codes.FailedPrecondition)})
	if fmt.Sprint(got) != "[1 2]" {
		t.Errorf("ticks before the status = %v, want [1 2]", got)
	}
	wantExactStatus(t, err, codes.FailedPrecondition, "refused after 2")

	got, err = failAfter(&e2e2pb.FailAfterRequest{Count: 0, Message: "boom at once"})
	if len(got) != 0 {
		t.Errorf("ticks = %v, want none", got)
	}
	wantExactStatus(t, err, codes.Unknown, "boom at once")

	// Bidi: the failure comes while the client is still sending; what it
	// sends after the failure is never answered.
	chat := func(lines ...string) ([]string, error) {
		t.Helper()
		stream, err := actions.Chat(callCtx(t))
		if err != nil {
			return nil, err
		}
		var got []string
		for _, l := range lines {
			if err := stream.Send(&e2e2pb.ChatLine{Text: l}); err != nil {
				break // the call has ended; Recv gives the reason
			}
			if l == "fail" || l == "status" {
				continue
			}
			msg, err := stream.Recv()
			if err != nil {
				return got, err
			}
			got = append(got, msg.GetText())
		}
		_ = stream.CloseSend()
		for {
			msg, err := stream.Recv()
			if err != nil {
				return got, err
			}
			got = append(got, msg.GetText())
		}
	}
	lines, err := chat("a", "b", "fail", "never answered")
	if fmt.Sprint(lines) != "[echo: a echo: b]" {
		t.Errorf("answers before the failure = %q", lines)
	}
	wantExactStatus(t, err, codes.Unknown, "chat failed after 2 lines")

	lines, err = chat("a", "status")
	if fmt.Sprint(lines) != "[echo: a]" {
		t.Errorf("answers before the status = %q", lines)
	}
	wantExactStatus(t, err, codes.FailedPrecondition, "chat refused after 1 lines")

	// Still serving, in both shapes and unary.
	if lines, err = chat("x", "y"); fmt.Sprint(lines) != "[echo: x echo: y]" || !errors.Is(err, io.EOF) {
		t.Errorf("chat after the failures = %q, %v; want two answers and the end of the stream", lines, err)
	}
	if got, err = failAfter(&e2e2pb.FailAfterRequest{Count: 1, Message: "again"}); fmt.Sprint(got) != "[1]" {
		t.Errorf("FailAfter after the failures = %v, %v", got, err)
	}
	in := &e2e2pb.Payload{UserId: "u", ProductId: "p", Name: "n", Quantity: 3}
	out, err := actions.Echo(callCtx(t), in)
	if err != nil || !proto.Equal(in, out) {
		t.Errorf("Echo = %v, %v; want %v", out, err, in)
	}
}

// TestActionUnaryEcho: the unary echo action the benchmark measures
// replies with its input, also for an empty input.
func TestActionUnaryEcho(t *testing.T) {
	t.Parallel()
	s := startExtraStack(t, testFunction2Bin)
	actions := e2e2pb.NewActionsClient(s.conn)
	for _, in := range []*e2e2pb.Payload{
		{UserId: "cart-1", ProductId: "widget", Name: "Widget", Quantity: 1},
		{},
		{Name: strings.Repeat("x", 10000)},
	} {
		out, err := actions.Echo(callCtx(t), in)
		if err != nil || !proto.Equal(in, out) {
			t.Errorf("Echo(%.40v) = %.40v, %v; want the input", in, out, err)
		}
	}
}
