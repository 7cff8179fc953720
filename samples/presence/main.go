// Command presence is the chat presence sample: a user function serving
// com.example.chat.presence.Presence, a CRDT entity per user that says
// whether the user has a connection open. It listens on $HOST:$PORT
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

	"github.com/cloudstate-go/cloudstate/samples/presence/presence"
	"github.com/cloudstate-go/cloudstate/sdk"
)

func main() {
	if err := run(); err != nil {
		slog.Error("presence failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := sdk.NewServer(sdk.WithServiceName("chat-presence"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterCRDT(presence.New()); err != nil {
		return err
	}
	addr := sdk.Addr()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	slog.Info("presence user function listening", "addr", lis.Addr().String())
	return srv.Serve(ctx, lis)
}
