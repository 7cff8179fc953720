// Package config holds the proxy's typed configuration: a plain struct with
// defaults, validation, and the flags and environment variables that set it.
//
// Settings come from three places, later ones winning: the defaults of
// Default, environment variables (only those Cloudstate deployments already
// set, shared/spec/BEHAVIOR.md CONF-1), and command-line flags. Load applies
// them in that order and validates the result.
package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is the configuration of the proxy. Ports are ints and durations are
// time.Durations; each field's comment names its flag and environment
// variable.
type Config struct {
	// HTTPHost is the interface the public endpoint listens on (--http-host).
	HTTPHost string
	// HTTPPort is the public port serving gRPC, HTTP/JSON and health
	// (--http-port, HTTP_PORT).
	HTTPPort int
	// UserFunctionHost is where the user function listens
	// (--user-function-host, USER_FUNCTION_HOST).
	UserFunctionHost string
	// UserFunctionPort is the user function's gRPC port
	// (--user-function-port, USER_FUNCTION_PORT).
	UserFunctionPort int
	// Store selects the storage backend (--store, CLOUDSTATE_STORE). Only
	// "memory" exists so far.
	Store string
	// PassivationTimeout is how long an entity may stay idle before it is
	// passivated (--passivation-timeout).
	PassivationTimeout time.Duration
	// RelayTimeout bounds one call relayed to the user function
	// (--relay-timeout).
	RelayTimeout time.Duration
	// ShutdownTimeout is how long a graceful shutdown waits for in-flight
	// work before stopping anyway (--graceful-termination-timeout).
	ShutdownTimeout time.Duration
	// DiscoveryBackoffMin is the first delay between discovery attempts
	// (--discovery-backoff-min).
	DiscoveryBackoffMin time.Duration
	// DiscoveryBackoffMax caps the delay between discovery attempts
	// (--discovery-backoff-max).
	DiscoveryBackoffMax time.Duration
	// DiscoveryBackoffJitter is the random fraction added to each discovery
	// backoff delay, from 0 to 1 (--discovery-backoff-jitter).
	DiscoveryBackoffJitter float64
	// ProtocolCompatibilityCheck refuses a user function whose protocol
	// version the proxy does not support (--protocol-compatibility-check).
	ProtocolCompatibilityCheck bool
	// MaxInboundMessageSize is the largest gRPC message accepted, in bytes
	// (--max-inbound-message-size).
	MaxInboundMessageSize int
	// EntityMailboxSize is how many commands may wait for one entity before
	// new ones are refused (--entity-mailbox-size).
	EntityMailboxSize int
	// LogLevel is debug, info, warn or error (--log-level,
	// CLOUDSTATE_LOG_LEVEL).
	LogLevel string
	// LogFormat is text or json (--log-format).
	LogFormat string
	// CORSAllowedOrigins are the origins browsers may call the HTTP side
	// (HTTP/JSON, gRPC-Web, Connect) from: a comma-separated list such as
	// "https://shop.example.com,http://localhost:3000", or "*" for any.
	// Empty, the default, leaves CORS off (--cors-allowed-origins).
	CORSAllowedOrigins string
}

// logLevels maps the accepted values of Config.LogLevel to slog levels.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// logFormats lists the accepted values of Config.LogFormat.
var logFormats = []string{"text", "json"}

// Default returns the configuration used when nothing is set: the reference
// proxy's defaults (CONF-1) and the in-memory store.
func Default() Config {
	return Config{
		HTTPHost:                   "0.0.0.0",
		HTTPPort:                   9000,
		UserFunctionHost:           "127.0.0.1",
		UserFunctionPort:           8080,
		Store:                      "memory",
		PassivationTimeout:         30 * time.Second,
		RelayTimeout:               time.Minute,
		ShutdownTimeout:            10 * time.Second,
		DiscoveryBackoffMin:        time.Second,
		DiscoveryBackoffMax:        10 * time.Second,
		DiscoveryBackoffJitter:     0.2,
		ProtocolCompatibilityCheck: true,
		MaxInboundMessageSize:      12 << 20,
		EntityMailboxSize:          1000,
		LogLevel:                   "info",
		LogFormat:                  "text",
	}
}

// Validate reports every invalid setting, each named by its flag, for
// example "--http-port: 70000 is not a port (1-65535)". Several problems are
// joined with errors.Join.
func (c Config) Validate() error {
	var errs []error
	for _, s := range c.settings() {
		if s.check == nil {
			continue
		}
		if err := s.check(); err != nil {
			errs = append(errs, fmt.Errorf("--%s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

// HTTPAddr is the address the public endpoint listens on, host:port.
func (c Config) HTTPAddr() string {
	return net.JoinHostPort(c.HTTPHost, strconv.Itoa(c.HTTPPort))
}

// UserFunctionAddr is the address of the user function, host:port.
func (c Config) UserFunctionAddr() string {
	return net.JoinHostPort(c.UserFunctionHost, strconv.Itoa(c.UserFunctionPort))
}

// CORSOrigins returns the entries of CORSAllowedOrigins, or nil when CORS
// is off.
func (c Config) CORSOrigins() []string {
	var out []string
	for _, o := range strings.Split(c.CORSAllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

// Logger returns a logger writing to w at c's level and format. An invalid
// level or format (c was not validated) falls back to info and text.
func (c Config) Logger(w io.Writer) *slog.Logger {
	level, ok := logLevels[c.LogLevel]
	if !ok {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// The checks below return the problem without naming the setting; the caller
// prefixes the flag or environment variable it came from.

func checkPort(p int) error {
	if p < 1 || p > 65535 {
		return fmt.Errorf("%d is not a port (1-65535)", p)
	}
	return nil
}

func checkHost(h string) error {
	switch {
	case h == "":
		return errors.New("must not be empty")
	case strings.ContainsFunc(h, func(r rune) bool { return r <= ' ' || r == '/' }):
		return fmt.Errorf("%q is not a host name or IP address", h)
	case strings.Contains(h, ":") && net.ParseIP(h) == nil:
		// A colon is only valid inside an IPv6 address; anything else is
		// most likely host:port, and the port has its own setting.
		return fmt.Errorf("%q is not a host name or IP address (give the port separately; IPv6 without brackets)", h)
	}
	return nil
}

// checkOrigins accepts "*" and origins of the form scheme://host[:port],
// which is what browsers send in the Origin header.
func checkOrigins(c Config) error {
	for _, o := range c.CORSOrigins() {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return fmt.Errorf("%q is not an origin such as https://example.com or http://localhost:3000, or *", o)
		}
	}
	return nil
}

func checkPositive(d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%v must be greater than 0", d)
	}
	return nil
}

func checkOneOf(v string, accepted []string) error {
	if !slices.Contains(accepted, v) {
		return fmt.Errorf("%q is not one of %s", v, strings.Join(accepted, ", "))
	}
	return nil
}
