// Package storecli implements `cloudstate store`, which reads what the proxy
// stored straight from the store: the journal and the latest snapshot of an
// event-sourced entity, and the value of a value entity. The store is named
// like the proxy's (--store, CLOUDSTATE_STORE, the same forms and checks).
// Payloads are printed as JSON when their message types can be learned from
// a running proxy (gRPC reflection), a user function (discovery) or a
// descriptor set file, and as base64 with their type URL otherwise.
//
// It only reads, but opening a store is not free of effects: a Pebble
// directory is locked while it is open (so the proxy must not be running on
// it), and a PostgreSQL database gets any missing schema migrations, as
// when a proxy starts.
package storecli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/cloudstate-go/cloudstate/internal/call"
	"github.com/cloudstate-go/cloudstate/internal/config"
	"github.com/cloudstate-go/cloudstate/internal/dev"
)

// StoreEnv names the environment variable that sets --store, as for the
// proxy.
const StoreEnv = "CLOUDSTATE_STORE"

// DefaultStore is the store read when neither --store nor CLOUDSTATE_STORE
// is set: where `cloudstate dev` keeps its data in the current directory.
var DefaultStore = "pebble:" + dev.DefaultDataDir

const usage = `usage: cloudstate store events <persistence-id> [flags]
       cloudstate store snapshot <persistence-id> [flags]
       cloudstate store value <key> [flags]

Reads what the proxy stored, straight from the store:
  events    the journal of one event-sourced entity: seq, type URL, payload
  snapshot  the latest snapshot of one event-sourced entity
  value     the value of one value entity, with its version

<persistence-id> and <key> are "<persistence_id>|<entity id>", for example
"shopping-cart|alice" (quote the | in a shell).

Payloads are printed as JSON when their types are found through
--descriptors: the address of a running proxy (gRPC reflection) or of a
user function (discovery), a descriptor set file (protoc --include_imports
--descriptor_set_out=FILE), or "none". Otherwise they are printed as
base64 with their type URL.

A Pebble directory can be open in one process only: stop the proxy that
uses it first, or copy the directory and read the copy.

flags:
`

// Subcommands.
const (
	cmdEvents   = "events"
	cmdSnapshot = "snapshot"
	cmdValue    = "value"
)

// NotFoundError is what Run returns when nothing is stored under the id
// asked for; the command exits 1 with its message.
type NotFoundError struct {
	What string // "events", "snapshot" or "value"
	ID   string
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("no %s stored for %q", e.What, e.ID)
	if !strings.Contains(e.ID, "|") {
		msg += " (ids have the form <persistence_id>|<entity id>, e.g. shopping-cart|alice)"
	}
	return msg
}

// options are the parsed command line.
type options struct {
	cmd         string
	id          string
	store       config.StoreSpec
	descriptors string
	after       int64
	json        bool
	timeout     time.Duration
}

// Run runs `cloudstate store` with args (everything after "store"), taking
// environment variables from getenv. It returns flag.ErrHelp after printing
// the usage for -h, a *NotFoundError when nothing is stored under the id, or
// another error saying what went wrong (bad flags or store, a Pebble
// directory in use, an unreachable database).
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	opts, err := parseArgs(args, getenv, stderr)
	if err != nil {
		return err
	}
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	st, err := openStore(ctx, opts.store)
	if err != nil {
		return err
	}
	defer st.close()

	types := &typeSource{spec: opts.descriptors}
	switch opts.cmd {
	case cmdEvents:
		err = printEvents(ctx, st, types, opts, stdout)
	case cmdSnapshot:
		err = printSnapshot(ctx, st, types, opts, stdout)
	case cmdValue:
		err = printValue(ctx, st, types, opts, stdout)
	}
	if err != nil {
		return err
	}
	types.reportUnknown(stderr)
	return nil
}

// parseArgs parses the subcommand, its id and the flags, which may come
// before or after the id.
func parseArgs(args []string, getenv func(string) string, stderr io.Writer) (*options, error) {
	storeDefault := getenv(StoreEnv)
	if storeDefault == "" {
		storeDefault = DefaultStore
	}
	descDefault := getenv(call.AddrEnv)
	if descDefault == "" {
		descDefault = call.DefaultAddr
	}
	opts := &options{}
	var storeText string
	fs := flag.NewFlagSet("store", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&storeText, "store", storeDefault, "the store to read: pebble:<dir> or postgres://... (env "+StoreEnv+")")
	descUsage := "where payload types come from: proxy or user function `host:port`, descriptor set file, or none (env " + call.AddrEnv + ")"
	fs.StringVar(&opts.descriptors, "descriptors", descDefault, descUsage)
	fs.StringVar(&opts.descriptors, "addr", descDefault, "same as --descriptors")
	fs.Int64Var(&opts.after, "after", 0, "events: only those with a sequence number greater than `seq`")
	fs.BoolVar(&opts.json, "json", false, "print JSON (one object per line) instead of text")
	fs.DurationVar(&opts.timeout, "timeout", 30*time.Second, "deadline for the whole command, 0 for none")

	var positional []string
	rest := args
	for {
		if err := fs.Parse(rest); err != nil {
			return nil, err
		}
		consumed := len(rest) - fs.NArg()
		terminated := consumed > 0 && rest[consumed-1] == "--"
		rest = fs.Args()
		if terminated {
			positional = append(positional, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		positional = append(positional, rest[0])
		rest = rest[1:]
	}

	switch {
	case len(positional) == 0:
		fs.Usage()
		return nil, errors.New("missing subcommand: events, snapshot or value")
	case positional[0] != cmdEvents && positional[0] != cmdSnapshot && positional[0] != cmdValue:
		fs.Usage()
		return nil, fmt.Errorf("unknown subcommand %q (want events, snapshot or value)", positional[0])
	case len(positional) == 1:
		fs.Usage()
		return nil, fmt.Errorf("%s: missing %s", positional[0], idName(positional[0]))
	case len(positional) > 2:
		fs.Usage()
		return nil, fmt.Errorf("too many arguments: %q", positional[2:])
	}
	opts.cmd, opts.id = positional[0], positional[1]
	if opts.id == "" {
		return nil, fmt.Errorf("%s: the %s is empty", opts.cmd, idName(opts.cmd))
	}
	if opts.after < 0 {
		return nil, fmt.Errorf("--after %d: must not be negative", opts.after)
	}
	if opts.after != 0 && opts.cmd != cmdEvents {
		return nil, fmt.Errorf("--after applies to events only")
	}
	spec, err := config.ParseStore(storeText)
	if err != nil {
		return nil, fmt.Errorf("--store: %w", err)
	}
	if spec.Kind == config.StoreMemory {
		return nil, errors.New("--store memory: the memory store lives inside a running proxy and is gone when it stops; " +
			"read a durable store instead (pebble:<dir> or postgres://...)")
	}
	if spec.Kind == config.StorePebble {
		spec.Dir = filepath.Clean(spec.Dir)
	}
	opts.store = spec
	return opts, nil
}

func idName(cmd string) string {
	if cmd == cmdValue {
		return "<key>"
	}
	return "<persistence-id>"
}
