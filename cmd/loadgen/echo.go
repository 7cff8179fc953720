package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
)

// echoMethod is the full name of the echo server's only method.
const echoMethod = "/cloudstate.bench.Echo/Echo"

// echoService is the handler type of echoDesc; the echo server keeps no
// state, so any value implements it.
type echoService interface{}

// echoDesc describes the echo service by hand, so the load generator needs
// no generated code: one unary method that returns its request bytes.
var echoDesc = grpc.ServiceDesc{
	ServiceName: "cloudstate.bench.Echo",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var m rawMessage
			if err := dec(&m); err != nil {
				return nil, err
			}
			return &m, nil
		},
	}},
	Streams:  []grpc.StreamDesc{},
	Metadata: "cloudstate.bench.echo",
}

// newEchoServer returns a gRPC server with the echo service registered. It
// is the floor for any sidecar: one hop, no proxy, the same transport.
func newEchoServer() *grpc.Server {
	s := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}))
	s.RegisterService(&echoDesc, struct{}{})
	return s
}

// serveEcho serves the echo service on l until ctx ends.
func serveEcho(ctx context.Context, l net.Listener) error {
	s := newEchoServer()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the goroutine below when Serve fails on its own
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		s.GracefulStop()
	}()
	err := s.Serve(l)
	cancel()
	<-stopped
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// echoServerCmd is "loadgen echo-server --listen host:port".
func echoServerCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen echo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:9100", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	fmt.Fprintf(stderr, "echo server listening on %s, method %s\n", l.Addr(), echoMethod)
	return serveEcho(ctx, l)
}
