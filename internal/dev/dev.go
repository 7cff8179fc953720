// Package dev runs a user function and a proxy together, for local
// development and the README's demo: one command, one terminal.
package dev

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/internal/proxy"
)

const usage = `Usage: cloudstate dev [proxy flags] <function> [args...]

Runs a user function and a proxy in front of it until interrupted.
<function> is either a directory holding a Go main package (it is built
first, e.g. ./samples/shoppingcart) or a command to run. The function gets
HOST and PORT in its environment, set from --user-function-host and
--user-function-port, and must listen there. State is kept in Pebble under
./.cloudstate-data unless --store says otherwise.

Proxy flags:
`

// DefaultDataDir is where `cloudstate dev` keeps entity state unless
// --store says otherwise.
const DefaultDataDir = ".cloudstate-data"

// stopGrace is how long the function gets to exit after SIGTERM.
const stopGrace = 5 * time.Second

// Run parses args, starts the function, runs the proxy until ctx ends or
// the function exits, and stops the function.
func Run(ctx context.Context, args []string, version string, started time.Time, stderr io.Writer) error {
	cfg := config.Default()
	// The function starts together with the proxy, so it is usually a few
	// milliseconds from listening: retry discovery sooner than in production.
	cfg.DiscoveryBackoffMin = 50 * time.Millisecond
	cfg.DiscoveryBackoffMax = time.Second
	// Keep the demo's state across restarts, in the working directory.
	cfg.Store = "pebble:" + DefaultDataDir
	if err := cfg.ApplyEnv(os.Getenv); err != nil {
		return err
	}
	fs := flag.NewFlagSet("cloudstate dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("name the user function to run: a Go package directory or a command")
	}
	log := cfg.Logger(stderr)

	argv, cleanup, err := functionCommand(ctx, fs.Args(), stderr)
	if err != nil {
		return err
	}
	defer cleanup()

	fn := exec.Command(argv[0], argv[1:]...)
	fn.Stdout = stderr
	fn.Stderr = stderr
	fn.Env = append(os.Environ(), "HOST="+cfg.UserFunctionHost, "PORT="+strconv.Itoa(cfg.UserFunctionPort))
	if err := fn.Start(); err != nil {
		return fmt.Errorf("start user function %q: %w", argv[0], err)
	}
	log.Info("user function started", "pid", fn.Process.Pid, "command", argv)
	exited := make(chan error, 1)
	go func() { exited <- fn.Wait() }()

	pctx, stopProxy := context.WithCancel(ctx)
	defer stopProxy()
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- proxy.New(cfg, log, version, started).Run(pctx) }()

	select {
	case err := <-exited:
		stopProxy()
		<-proxyDone
		return fmt.Errorf("user function exited: %v", err)
	case err := <-proxyDone:
		stopFunction(fn, exited)
		return err
	case <-ctx.Done():
		err := <-proxyDone
		stopFunction(fn, exited)
		return err
	}
}

// functionCommand turns the positional arguments into a command line. A
// directory is built with "go build" into a temporary file first.
func functionCommand(ctx context.Context, args []string, stderr io.Writer) ([]string, func(), error) {
	noop := func() {}
	info, err := os.Stat(args[0])
	if err != nil || !info.IsDir() {
		return args, noop, nil
	}
	tmp, err := os.MkdirTemp("", "cloudstate-dev-")
	if err != nil {
		return nil, noop, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	bin := filepath.Join(tmp, filepath.Base(filepath.Clean(args[0])))
	pkg := args[0]
	if !filepath.IsAbs(pkg) && pkg[0] != '.' {
		pkg = "./" + pkg
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, pkg)
	build.Stdout = stderr
	build.Stderr = stderr
	if err := build.Run(); err != nil {
		cleanup()
		return nil, noop, fmt.Errorf("build %s: %w", args[0], err)
	}
	return append([]string{bin}, args[1:]...), cleanup, nil
}

// stopFunction asks the function to stop, then kills it after stopGrace.
func stopFunction(fn *exec.Cmd, exited <-chan error) {
	_ = fn.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(stopGrace):
		_ = fn.Process.Kill()
		<-exited
	}
}
