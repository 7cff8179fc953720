// Command cartactions is the actions sample: a user function serving the
// stateless com.example.cartactions.CartActions service (one method per
// gRPC streaming shape) next to the value-entity shopping cart it forwards
// to and adds items to. Forward and side-effect targets must be services
// of the same user function, so it serves both. It listens on $HOST:$PORT
// (default 127.0.0.1:8080) for a Cloudstate proxy.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudstate-go/cloudstate/samples/valuecart/cart"
	"github.com/cloudstate-go/cloudstate/sdk"
)

func main() {
	if err := run(); err != nil {
		slog.Error("cart actions failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := sdk.NewServer(sdk.WithServiceName("cart-actions"), sdk.WithServiceVersion("0.1.0"))
	if err := register(srv); err != nil {
		return err
	}
	addr := sdk.Addr()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	slog.Info("cart actions user function listening", "addr", lis.Addr().String())
	return srv.Serve(ctx, lis)
}

// register adds everything this function serves: the actions and the cart
// entity they forward to.
func register(srv *sdk.Server) error {
	if err := srv.RegisterAction(NewActions()); err != nil {
		return err
	}
	return srv.RegisterValueEntity(cart.New())
}
