// Command likes is the likes sample: a user function serving
// com.example.likes.Likes (a like counter per item) and
// com.example.likes.HotItems (the most liked items per category), both
// CRDT entities. It listens on $HOST:$PORT (default 127.0.0.1:8080) for a
// Cloudstate proxy.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/cloudstate-go/cloudstate/samples/likes/likes"
	"github.com/cloudstate-go/cloudstate/sdk"
)

func main() {
	if err := run(); err != nil {
		slog.Error("likes failed", "error", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	srv := sdk.NewServer(sdk.WithServiceName("likes"), sdk.WithServiceVersion("0.1.0"))
	if err := srv.RegisterCRDT(likes.NewLikes()); err != nil {
		return err
	}
	if err := srv.RegisterCRDT(likes.NewHotItems()); err != nil {
		return err
	}
	addr := sdk.Addr()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	slog.Info("likes user function listening", "addr", lis.Addr().String())
	return srv.Serve(ctx, lis)
}
