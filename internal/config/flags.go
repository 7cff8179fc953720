package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// setting ties one field of a Config to its flag, environment variable,
// parser and check. Flags, environment, validation and help are all driven
// from the one list returned by Config.settings, so they cannot drift apart.
type setting struct {
	name  string       // flag name, without dashes
	env   string       // environment variable, or "" if none
	typ   string       // kind of value, shown in the help
	usage string       // what the setting does
	value flag.Value   // parses into and prints the field
	check func() error // validates the field's current value; nil if anything goes
}

// settings returns the settings bound to the fields of c, in the order the
// help lists them.
func (c *Config) settings() []setting {
	return []setting{
		{
			name: "http-host", typ: "host",
			usage: "interface the public endpoint listens on",
			value: stringValue(&c.HTTPHost),
			check: func() error { return checkHost(c.HTTPHost) },
		},
		{
			name: "http-port", env: "HTTP_PORT", typ: "port",
			usage: "public port serving gRPC, HTTP/JSON and health checks",
			value: intValue(&c.HTTPPort),
			check: func() error { return checkPort(c.HTTPPort) },
		},
		{
			name: "user-function-host", env: "USER_FUNCTION_HOST", typ: "host",
			usage: "host the user function listens on",
			value: stringValue(&c.UserFunctionHost),
			check: func() error { return checkHost(c.UserFunctionHost) },
		},
		{
			name: "user-function-port", env: "USER_FUNCTION_PORT", typ: "port",
			usage: "gRPC port of the user function",
			value: intValue(&c.UserFunctionPort),
			check: func() error { return checkPort(c.UserFunctionPort) },
		},
		{
			name: "store", env: "CLOUDSTATE_STORE", typ: "store",
			usage: "where entity state is kept: " + strings.Join(storeForms, ", "),
			value: stringValue(&c.Store),
			check: func() error {
				_, err := ParseStore(c.Store)
				return err
			},
		},
		{
			name: "passivation-timeout", typ: "duration",
			usage: "idle time after which an entity is passivated",
			value: durationValue(&c.PassivationTimeout),
			check: func() error { return checkPositive(c.PassivationTimeout) },
		},
		{
			name: "relay-timeout", typ: "duration",
			usage: "longest time one call to the user function may take",
			value: durationValue(&c.RelayTimeout),
			check: func() error { return checkPositive(c.RelayTimeout) },
		},
		{
			name: "graceful-termination-timeout", typ: "duration",
			usage: "how long shutdown waits for in-flight work; 0 stops at once",
			value: durationValue(&c.ShutdownTimeout),
			check: func() error {
				if c.ShutdownTimeout < 0 {
					return fmt.Errorf("%v must not be negative", c.ShutdownTimeout)
				}
				return nil
			},
		},
		{
			name: "discovery-backoff-min", typ: "duration",
			usage: "first delay before retrying discovery of the user function",
			value: durationValue(&c.DiscoveryBackoffMin),
			check: func() error { return checkPositive(c.DiscoveryBackoffMin) },
		},
		{
			name: "discovery-backoff-max", typ: "duration",
			usage: "longest delay between discovery retries",
			value: durationValue(&c.DiscoveryBackoffMax),
			check: func() error {
				if c.DiscoveryBackoffMax < c.DiscoveryBackoffMin {
					return fmt.Errorf("%v is less than --discovery-backoff-min (%v)", c.DiscoveryBackoffMax, c.DiscoveryBackoffMin)
				}
				return nil
			},
		},
		{
			name: "discovery-backoff-jitter", typ: "fraction",
			usage: "random fraction (0 to 1) added to each discovery retry delay",
			value: floatValue(&c.DiscoveryBackoffJitter),
			check: func() error {
				// Written so that NaN fails too.
				if !(c.DiscoveryBackoffJitter >= 0 && c.DiscoveryBackoffJitter <= 1) {
					return fmt.Errorf("%v is not between 0 and 1", c.DiscoveryBackoffJitter)
				}
				return nil
			},
		},
		{
			name: "protocol-compatibility-check", typ: "bool",
			usage: "refuse a user function speaking an unsupported protocol version",
			value: boolValue{&c.ProtocolCompatibilityCheck},
		},
		{
			name: "max-inbound-message-size", typ: "bytes",
			usage: "largest gRPC message accepted, in bytes",
			value: intValue(&c.MaxInboundMessageSize),
			check: func() error {
				if c.MaxInboundMessageSize <= 0 {
					return fmt.Errorf("%d must be greater than 0", c.MaxInboundMessageSize)
				}
				return nil
			},
		},
		{
			name: "entity-mailbox-size", typ: "int",
			usage: "commands queued per entity before new ones are refused",
			value: intValue(&c.EntityMailboxSize),
			check: func() error {
				if c.EntityMailboxSize <= 0 {
					return fmt.Errorf("%d must be greater than 0", c.EntityMailboxSize)
				}
				return nil
			},
		},
		{
			name: "log-level", env: "CLOUDSTATE_LOG_LEVEL", typ: "level",
			usage: "least severe log level written: debug, info, warn or error",
			value: lowerValue(&c.LogLevel),
			check: func() error {
				if _, ok := logLevels[c.LogLevel]; !ok {
					return fmt.Errorf("%q is not one of debug, info, warn, error", c.LogLevel)
				}
				return nil
			},
		},
		{
			name: "log-format", typ: "format",
			usage: "log format: text or json",
			value: lowerValue(&c.LogFormat),
			check: func() error { return checkOneOf(c.LogFormat, logFormats) },
		},
		{
			name: "cors-allowed-origins", typ: "origins",
			usage: "origins browsers may call HTTP/JSON, gRPC-Web and Connect from, comma separated, or *; empty turns CORS off",
			value: stringValue(&c.CORSAllowedOrigins),
			check: func() error { return checkOrigins(*c) },
		},
	}
}

// defaultText returns the default of every setting as text, by flag name.
func defaultText() map[string]string {
	d := Default()
	out := make(map[string]string)
	for _, s := range d.settings() {
		out[s.name] = s.value.String()
	}
	return out
}

// usageText is the flag's usage string: what it does, its environment
// variable and its default.
func (s setting) usageText(def string) string {
	if s.env != "" {
		return fmt.Sprintf("%s (env %s, default %s)", s.usage, s.env, def)
	}
	return fmt.Sprintf("%s (default %s)", s.usage, def)
}

// RegisterFlags defines a flag on fs for every setting, writing into c. The
// usage of each flag names its environment variable and the built-in default;
// the flag's DefValue is the built-in default too, while parsing starts from
// c's current values (so flags apply on top of ApplyEnv).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	defs := defaultText()
	for _, s := range c.settings() {
		fs.Var(s.value, s.name, s.usageText(defs[s.name]))
		fs.Lookup(s.name).DefValue = defs[s.name]
	}
}

// ApplyEnv sets the settings that have an environment variable from
// getenv, overriding what c holds. Unset or blank variables are skipped. A
// value that does not parse or is out of range is an error naming the
// variable; all such errors are joined.
func (c *Config) ApplyEnv(getenv func(string) string) error {
	var errs []error
	for _, s := range c.settings() {
		if s.env == "" {
			continue
		}
		v := strings.TrimSpace(getenv(s.env))
		if v == "" {
			continue
		}
		if err := s.value.Set(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.env, err))
			continue
		}
		if s.check != nil {
			if err := s.check(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", s.env, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Load builds the configuration from the defaults, then the environment
// (read through getenv; nil reads nothing), then the flags in args, and
// validates it. Flag errors and usage go to stderr. With --help or -h it
// prints every flag, its environment variable and default, and returns
// flag.ErrHelp.
func Load(args []string, getenv func(string) string, stderr io.Writer) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	if stderr == nil {
		stderr = io.Discard
	}
	c := Default()
	if err := c.ApplyEnv(getenv); err != nil {
		return Config{}, fmt.Errorf("environment: %w", err)
	}
	fs := flag.NewFlagSet("cloudstate proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.RegisterFlags(fs)
	fs.Usage = func() { printUsage(fs.Output(), fs.Name(), &c) }
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q: settings are given as --flag=value", fs.Arg(0))
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// printUsage writes the help: one line per flag with its kind, environment
// variable, default and meaning.
func printUsage(w io.Writer, name string, c *Config) {
	fmt.Fprintf(w, "Usage: %s [flags]\n\n", name)
	fmt.Fprintln(w, "A flag overrides its environment variable, which overrides the default.")
	fmt.Fprintln(w)
	defs := defaultText()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  FLAG\tENV\tDEFAULT\tMEANING")
	for _, s := range c.settings() {
		env := s.env
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(tw, "  --%s %s\t%s\t%s\t%s\n", s.name, s.typ, env, defs[s.name], s.usage)
	}
	tw.Flush()
}

// value is a flag.Value for a field of type T.
type value[T any] struct {
	p      *T
	parse  func(string) (T, error)
	format func(T) string
}

func (v value[T]) String() string {
	// The flag package calls String on a zero value to find zero defaults.
	if v.p == nil {
		return ""
	}
	return v.format(*v.p)
}

func (v value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return err
	}
	*v.p = x
	return nil
}

func stringValue(p *string) value[string] {
	return value[string]{p: p,
		parse:  func(s string) (string, error) { return s, nil },
		format: func(s string) string { return s },
	}
}

// lowerValue is a string setting whose accepted values are lower case; any
// case is accepted on input.
func lowerValue(p *string) value[string] {
	return value[string]{p: p,
		parse:  func(s string) (string, error) { return strings.ToLower(s), nil },
		format: func(s string) string { return s },
	}
}

func intValue(p *int) value[int] {
	return value[int]{p: p,
		parse: func(s string) (int, error) {
			n, err := strconv.Atoi(s)
			if err != nil {
				return 0, fmt.Errorf("%q is not an integer", s)
			}
			return n, nil
		},
		format: strconv.Itoa,
	}
}

func floatValue(p *float64) value[float64] {
	return value[float64]{p: p,
		parse: func(s string) (float64, error) {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return 0, fmt.Errorf("%q is not a number", s)
			}
			return f, nil
		},
		format: func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) },
	}
}

func durationValue(p *time.Duration) value[time.Duration] {
	return value[time.Duration]{p: p,
		parse: func(s string) (time.Duration, error) {
			d, err := time.ParseDuration(s)
			if err != nil {
				return 0, fmt.Errorf("%q is not a duration (such as 500ms, 30s, 2m)", s)
			}
			return d, nil
		},
		format: time.Duration.String,
	}
}

// boolValue is a flag.Value for a bool field; it is a separate type because
// the flag package lets bool flags go without a value (--flag means true).
type boolValue struct{ p *bool }

func (v boolValue) IsBoolFlag() bool { return true }

func (v boolValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.FormatBool(*v.p)
}

func (v boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	*v.p = b
	return nil
}
