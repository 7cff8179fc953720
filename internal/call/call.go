// Package call implements `cloudstate call`, a small dynamic gRPC client so
// newcomers can call the proxy (or any server with gRPC reflection) without
// installing grpcurl. It learns the descriptors through server reflection,
// reads requests as JSON and prints responses as JSON.
package call

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// DefaultAddr is the server called when neither --addr nor CLOUDSTATE_ADDR
// is set: the proxy's default HTTP_PORT on this machine.
const DefaultAddr = "localhost:9000"

// AddrEnv names the environment variable that overrides DefaultAddr.
const AddrEnv = "CLOUDSTATE_ADDR"

const usage = `usage: cloudstate call [flags] <service>/<method> [json]
       cloudstate call [flags] --list [service]

Calls a gRPC method, learning its types through server reflection.
<service> is a full name or a unique suffix of one (ShoppingCart).
The request JSON is the argument, or stdin when it is "-" or missing.
Client- and bidi-streaming methods read one JSON message after another
(one per line) from stdin or the argument. Each response is printed as JSON.

flags:
`

// StatusError is the error Run returns when the server ends the call with
// a non-OK gRPC status. Run has already printed it to stderr as
// "ERROR: <code>: <message>", so the caller only needs to exit 1.
type StatusError struct {
	Status *status.Status
}

// Error returns the same line Run printed, without the newline.
func (e *StatusError) Error() string {
	return fmt.Sprintf("ERROR: %s: %s", codeName(e.Status), e.Status.Message())
}

// GRPCStatus lets status.FromError and status.Code see the status.
func (e *StatusError) GRPCStatus() *status.Status { return e.Status }

// options are the parsed command line.
type options struct {
	addr    string
	timeout time.Duration
	list    bool
	headers headerFlags
	target  string // "<service>/<method>", or the service filter with --list
	json    string
	hasJSON bool // json was given as an argument (not "-")
}

// Run runs `cloudstate call` with args (everything after "call"). It
// returns flag.ErrHelp after printing usage for -h, a *StatusError after
// printing a non-OK status, or another error describing what went wrong
// (bad flags, unknown service or method, bad JSON, unreachable server).
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	opts, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	if opts.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.timeout)
		defer cancel()
	}
	if len(opts.headers) > 0 {
		ctx = metadata.AppendToOutgoingContext(ctx, opts.headers...)
	}

	conn, err := grpc.NewClient(opts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", opts.addr, err)
	}
	defer conn.Close()

	rc, names, err := openReflection(ctx, conn)
	if err != nil {
		return fmt.Errorf("server reflection at %s: %w", opts.addr, err)
	}
	defer rc.close()

	if opts.list {
		return list(rc, names, opts.target, stdout)
	}

	serviceArg, methodArg, ok := splitTarget(opts.target)
	if !ok {
		return fmt.Errorf("want <service>/<method>, got %q", opts.target)
	}
	serviceName, err := resolveService(names, serviceArg)
	if err != nil {
		return err
	}
	if found, err := rc.fetchSymbol(serviceName); err != nil {
		return fmt.Errorf("server reflection at %s: %w", opts.addr, err)
	} else if !found {
		return fmt.Errorf("server reflection at %s has no descriptor for service %s", opts.addr, serviceName)
	}
	files, err := rc.files()
	if err != nil {
		return err
	}
	sd, err := findService(files, serviceName)
	if err != nil {
		return err
	}
	md, err := resolveMethod(sd, methodArg)
	if err != nil {
		return err
	}
	rc.close() // done with reflection; the call may take long

	input := stdin
	if opts.hasJSON {
		input = strings.NewReader(opts.json)
	}
	err = invoke(ctx, conn, md, newResolver(files), input, stdout)
	if st, ok := status.FromError(err); ok && err != nil {
		se := &StatusError{Status: st}
		fmt.Fprintln(stderr, se.Error())
		return se
	}
	return err
}

// parseArgs parses flags and positional arguments; flags may also follow
// the positional ones (cloudstate call Cart/Get '{}' --addr host:port).
func parseArgs(args []string, stderr io.Writer) (*options, error) {
	opts := &options{}
	addr := os.Getenv(AddrEnv)
	if addr == "" {
		addr = DefaultAddr
	}
	fs := flag.NewFlagSet("call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	fs.StringVar(&opts.addr, "addr", addr, "server `host:port` (env "+AddrEnv+")")
	fs.DurationVar(&opts.timeout, "timeout", 10*time.Second, "deadline for the whole call, 0 for none")
	fs.BoolVar(&opts.list, "list", false, "list services and their methods, then exit")
	fs.Var(&opts.headers, "H", "request metadata `key:value` (repeatable)")

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

	maxArgs := 2
	if opts.list {
		maxArgs = 1
	}
	switch {
	case len(positional) > maxArgs:
		fs.Usage()
		return nil, fmt.Errorf("too many arguments: %q", positional[maxArgs:])
	case len(positional) == 0 && !opts.list:
		fs.Usage()
		return nil, errors.New("missing <service>/<method>")
	}
	if len(positional) > 0 {
		opts.target = positional[0]
	}
	if len(positional) == 2 && positional[1] != "-" {
		opts.json, opts.hasJSON = positional[1], true
	}
	return opts, nil
}

// headerFlags collects -H key:value as metadata pairs.
type headerFlags []string

func (h *headerFlags) String() string { return strings.Join(*h, ",") }

func (h *headerFlags) Set(s string) error {
	key, value, ok := strings.Cut(s, ":")
	key = strings.TrimSpace(key)
	if !ok || key == "" {
		return fmt.Errorf("want key:value, got %q", s)
	}
	*h = append(*h, strings.ToLower(key), strings.TrimSpace(value))
	return nil
}

// splitTarget splits "<service>/<method>" (a leading "/" is allowed).
func splitTarget(target string) (service, method string, ok bool) {
	target = strings.TrimPrefix(target, "/")
	i := strings.LastIndex(target, "/")
	if i <= 0 || i == len(target)-1 {
		return "", "", false
	}
	return target[:i], target[i+1:], true
}

// resolveService finds the listed service whose full name is arg or ends
// with "."+arg. An exact match wins over suffix matches.
func resolveService(names []string, arg string) (string, error) {
	var matches []string
	for _, name := range names {
		if name == arg {
			return name, nil
		}
		if strings.HasSuffix(name, "."+arg) {
			matches = append(matches, name)
		}
	}
	slices.Sort(matches)
	switch len(matches) {
	case 1:
		return matches[0], nil
	case 0:
		sorted := slices.Sorted(slices.Values(names))
		return "", fmt.Errorf("unknown service %q; the server has:\n  %s", arg, strings.Join(sorted, "\n  "))
	default:
		return "", fmt.Errorf("service %q is ambiguous, use the full name of one of:\n  %s", arg, strings.Join(matches, "\n  "))
	}
}

func findService(files *protoregistry.Files, name string) (protoreflect.ServiceDescriptor, error) {
	d, err := files.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a service", name)
	}
	return sd, nil
}

// resolveMethod finds a method by exact name, or else by a unique
// case-insensitive match (so "Discover" finds "discover").
func resolveMethod(sd protoreflect.ServiceDescriptor, name string) (protoreflect.MethodDescriptor, error) {
	methods := sd.Methods()
	if md := methods.ByName(protoreflect.Name(name)); md != nil {
		return md, nil
	}
	var folded []protoreflect.MethodDescriptor
	var all []string
	for i := 0; i < methods.Len(); i++ {
		md := methods.Get(i)
		all = append(all, string(md.Name()))
		if strings.EqualFold(string(md.Name()), name) {
			folded = append(folded, md)
		}
	}
	if len(folded) == 1 {
		return folded[0], nil
	}
	return nil, fmt.Errorf("service %s has no method %q; its methods:\n  %s", sd.FullName(), name, strings.Join(all, "\n  "))
}

// list prints each service (or the one matching filter) with its methods.
func list(rc *reflectionClient, names []string, filter string, stdout io.Writer) error {
	if filter != "" {
		name, err := resolveService(names, filter)
		if err != nil {
			return err
		}
		names = []string{name}
	}
	names = slices.Sorted(slices.Values(names))
	known := make(map[string]bool, len(names))
	for _, name := range names {
		found, err := rc.fetchSymbol(name)
		if err != nil {
			return err
		}
		known[name] = found
	}
	files, err := rc.files()
	if err != nil {
		return err
	}
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintln(&b, name)
		sd, err := findService(files, name)
		if !known[name] || err != nil {
			fmt.Fprintln(&b, "  (no descriptor from server reflection)")
			continue
		}
		methods := sd.Methods()
		for i := 0; i < methods.Len(); i++ {
			md := methods.Get(i)
			fmt.Fprintf(&b, "  %s(%s%s) → %s%s\n", md.Name(),
				streamPrefix(md.IsStreamingClient()), md.Input().FullName(),
				streamPrefix(md.IsStreamingServer()), md.Output().FullName())
		}
	}
	_, err = io.WriteString(stdout, b.String())
	return err
}

func streamPrefix(streaming bool) string {
	if streaming {
		return "stream "
	}
	return ""
}

// codeName returns the canonical upper-case name of a status code, as the
// gRPC spec and our docs write it (NOT_FOUND, UNKNOWN).
func codeName(st *status.Status) string {
	names := [...]string{
		"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
		"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
		"UNAUTHENTICATED",
	}
	if c := int(st.Code()); c < len(names) {
		return names[c]
	}
	return st.Code().String()
}
