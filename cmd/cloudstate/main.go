// Command cloudstate is the Cloudstate proxy and its tools.
//
//	cloudstate proxy [flags]          run the proxy beside a user function
//	cloudstate dev [flags] <function> run a user function and a proxy together
//	cloudstate call <svc>/<method> …  call a service through the proxy
//	cloudstate store events <pid>     read what the proxy stored
//	cloudstate version                print the version
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
	"time"

	"github.com/cloudstate-go/cloudstate/internal/call"
	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/internal/dev"
	"github.com/cloudstate-go/cloudstate/internal/proxy"
	"github.com/cloudstate-go/cloudstate/internal/storecli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

const usage = `cloudstate: stateful serverless for gRPC services.

Usage:
  cloudstate proxy [flags]              run the proxy beside a user function
  cloudstate dev [flags] <function>     build and run a user function (a Go package
                                        directory, or any command) with a proxy in front
  cloudstate call [flags] <svc>/<method> [json]
                                        call a service through the proxy
  cloudstate store events|snapshot|value <id> [flags]
                                        read what the proxy stored
  cloudstate version                    print the version

Run "cloudstate <command> --help" for the flags of a command.
`

func main() {
	started := time.Now()
	os.Exit(run(os.Args[1:], started, os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, started time.Time, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "proxy":
		cfg, err := config.Load(args[1:], os.Getenv, stderr)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "cloudstate proxy: %v\n", err)
			return 2
		}
		log := cfg.Logger(stderr)
		startPprof(log)
		if err := proxy.New(cfg, log, version, started).Run(ctx); err != nil {
			log.Error("cloudstate proxy failed", "err", err)
			return 1
		}
		return 0
	case "dev":
		return exitCode(stderr, "dev", dev.Run(ctx, args[1:], version, started, stderr))
	case "call":
		return exitCode(stderr, "call", call.Run(ctx, args[1:], stdin, stdout, stderr))
	case "store":
		return exitCode(stderr, "store", storecli.Run(ctx, args[1:], os.Getenv, stdout, stderr))
	case "version", "--version":
		fmt.Fprintln(stdout, "cloudstate", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "cloudstate: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// exitCode prints err and picks the exit status: 0 for success and
// --help, 1 otherwise.
func exitCode(stderr io.Writer, cmd string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(*call.StatusError)) {
		return 1 // already printed
	}
	fmt.Fprintf(stderr, "cloudstate %s: %v\n", cmd, err)
	return 1
}
