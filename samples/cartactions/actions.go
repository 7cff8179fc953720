package main

import (
	"errors"
	"io"
	"strings"
	"time"

	pb "github.com/cloudstate-go/cloudstate/samples/cartactions/cartactionspb"
	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	cartpb "github.com/cloudstate-go/cloudstate/samples/valuecart/valuecartpb"
	"github.com/cloudstate-go/cloudstate/sdk"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ServiceName is the actions' gRPC service.
const ServiceName = "com.example.cartactions.CartActions"

// Limits of Countdown.
const (
	maxCountdown        = 100
	maxInterval         = 10 * time.Second
	defaultTickInterval = 500 * time.Millisecond
)

// NewActions returns the action definition.
func NewActions() *sdk.Action {
	a := sdk.NewAction(ServiceName)
	sdk.OnUnary(a, "Checkout", checkout)
	sdk.OnClientStream(a, "AddItems", addItems)
	sdk.OnServerStream(a, "Countdown", countdown)
	sdk.OnBidiStream(a, "Echo", echo)
	return a
}

// checkout forwards to the cart's RemoveCart: the proxy calls it and
// relays its reply (or failure) to the client.
func checkout(ctx *sdk.ActionContext, in *pb.CheckoutRequest) (*emptypb.Empty, error) {
	if in.GetUserId() == "" {
		return nil, ctx.Fail("Cannot check out without a user id")
	}
	ctx.Forward(cart.ServiceName, "RemoveCart", &cartpb.RemoveShoppingCart{UserId: in.GetUserId()})
	return nil, nil
}

// addItems reads the whole stream first, so that one bad line adds
// nothing: a failure response still carries the side effects recorded for
// it, so none are recorded until every line is known to be valid.
func addItems(ctx *sdk.ActionContext, recv func() (*pb.AddLineItem, error)) (*pb.Summary, error) {
	var lines []*pb.AddLineItem
	for {
		in, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch {
		case in.GetUserId() == "":
			return nil, ctx.Fail("Line %d has no user id", len(lines)+1)
		case in.GetQuantity() <= 0:
			return nil, ctx.Fail("Cannot add a quantity of %d of item %s", in.GetQuantity(), in.GetProductId())
		}
		lines = append(lines, in)
	}
	summary := &pb.Summary{}
	for _, in := range lines {
		// Synchronous: the items are in the carts when the client gets
		// the summary.
		ctx.SideEffect(cart.ServiceName, "AddItem", &cartpb.AddLineItem{
			UserId: in.GetUserId(), ProductId: in.GetProductId(), Name: in.GetName(), Quantity: in.GetQuantity(),
		}, true)
		summary.Lines++
		summary.TotalQuantity += in.GetQuantity()
	}
	return summary, nil
}

// countdown sends one tick per interval and stops early when the client
// cancels the call.
func countdown(ctx *sdk.ActionContext, in *pb.CountdownRequest, send func(*pb.Tick) error) error {
	if in.GetFrom() < 1 || in.GetFrom() > maxCountdown {
		return ctx.Fail("Cannot count down from %d: choose 1 to %d", in.GetFrom(), maxCountdown)
	}
	interval := time.Duration(in.GetIntervalMs()) * time.Millisecond
	if interval < 0 || interval > maxInterval {
		return ctx.Fail("Cannot tick every %v: choose up to %v", interval, maxInterval)
	}
	if interval == 0 {
		interval = defaultTickInterval
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for n := in.GetFrom(); ; n-- {
		if err := send(&pb.Tick{Remaining: n}); err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
		select {
		case <-ticker.C:
		case <-ctx.Context().Done():
			return ctx.Context().Err()
		}
	}
}

// echo answers each message as it arrives, while the client may still be
// sending, and ends the call itself when told "bye".
func echo(ctx *sdk.ActionContext, recv func() (*pb.ChatMessage, error), send func(*pb.ChatMessage) error) error {
	for {
		in, err := recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		text := strings.TrimSpace(in.GetText())
		if strings.EqualFold(text, "bye") {
			return send(&pb.ChatMessage{Text: "bye!"})
		}
		if err := send(&pb.ChatMessage{Text: "echo: " + text}); err != nil {
			return err
		}
	}
}
