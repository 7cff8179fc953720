// Command gateway serves a web page for the chat presence sample: several
// users in one browser window connect and disconnect, and every user's
// presence changes live on the page.
//
// The gateway is an ordinary client of the Cloudstate proxy. For a user who
// connects it opens a streamed Presence/Connect call and keeps it open
// until the user disconnects; for every user the page shows it runs
// Presence/Monitor and forwards the changes to the page as server-sent
// events.
//
//	go run ./samples/presence/gateway --listen 127.0.0.1:8081 --proxy localhost:9000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/cloudstate-go/cloudstate/samples/presence/presencepb"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		slog.Error("presence gateway failed", "error", err)
		os.Exit(1)
	}
}

// shutdownGrace bounds how long the gateway waits for requests in flight
// when it stops. Event streams end at once: their context is cancelled.
const shutdownGrace = 5 * time.Second

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address the web page is served on")
	proxyAddr := fs.String("proxy", "localhost:9000", "address of the Cloudstate proxy serving com.example.chat.presence.Presence")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// NewClient does not connect: a proxy that is down shows up as an
	// error on each call, which the page displays, and the gateway
	// recovers by itself once the proxy is up.
	conn, err := grpc.NewClient(*proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("proxy address %s: %w", *proxyAddr, err)
	}
	defer conn.Close()

	gw := NewGateway(pb.NewPresenceClient(conn), *proxyAddr)
	defer gw.Close()

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	srv := &http.Server{
		Handler:           gw.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// Event streams take their context from here, so that they end
		// when the gateway stops instead of holding Shutdown up.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	slog.Info("presence gateway listening", "url", "http://"+lis.Addr().String(), "proxy", *proxyAddr)

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("stop http server: %w", err)
	}
	return nil
}
