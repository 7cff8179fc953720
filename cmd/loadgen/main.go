// Command loadgen measures the Cloudstate proxy against a plain gRPC
// server, on loopback.
//
//	loadgen echo-server --listen 127.0.0.1:PORT   the no-proxy floor: a gRPC echo
//	loadgen run --target host:port --method /svc/M  closed-loop load, latency percentiles
//	loadgen bench                                 the whole side-by-side run (bench/README.md)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `loadgen: load generator for the Cloudstate proxy.

Usage:
  loadgen echo-server --listen 127.0.0.1:PORT
        serve /cloudstate.bench.Echo/Echo, which returns its request bytes
  loadgen run --target host:port --method /pkg.Service/Method [flags]
        closed-loop load from N clients; prints ops/s and latency percentiles
  loadgen bench [--duration 10s] [--clients 1,32] [--out bench/results.md]
        build and start the echo server, the shopping-cart sample and the
        proxy, and measure them side by side (see bench/README.md)

Run "loadgen <command> --help" for the flags of a command.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "echo-server":
		err = echoServerCmd(ctx, args[1:], stderr)
	case "run":
		err = runCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "loadgen: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(stderr, "loadgen %s: %v\n", args[0], err)
		return 1
	}
}
