package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"strings"
	"testing"
	"time"
)

// env returns a getenv reading from m.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDefault(t *testing.T) {
	c, err := Load(nil, nil, nil)
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	want := Config{
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
		MaxInboundMessageSize:      12 * 1024 * 1024,
		EntityMailboxSize:          1000,
		LogLevel:                   "info",
		LogFormat:                  "text",
	}
	if c != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
	if c != Default() {
		t.Fatalf("Load with nothing set differs from Default()")
	}
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if got := c.HTTPAddr(); got != "0.0.0.0:9000" {
		t.Errorf("HTTPAddr() = %q", got)
	}
	if got := c.UserFunctionAddr(); got != "127.0.0.1:8080" {
		t.Errorf("UserFunctionAddr() = %q", got)
	}
}

func TestEnvOverridesDefaults(t *testing.T) {
	c, err := Load(nil, env(map[string]string{
		"HTTP_PORT":            "9100",
		"USER_FUNCTION_HOST":   "shop.internal",
		"USER_FUNCTION_PORT":   " 8181 ",
		"CLOUDSTATE_STORE":     "memory",
		"CLOUDSTATE_LOG_LEVEL": "DEBUG",
		"UNRELATED":            "x",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPPort != 9100 || c.UserFunctionHost != "shop.internal" || c.UserFunctionPort != 8181 || c.LogLevel != "debug" {
		t.Fatalf("env not applied: %+v", c)
	}
	if got := c.UserFunctionAddr(); got != "shop.internal:8181" {
		t.Errorf("UserFunctionAddr() = %q", got)
	}
	// Untouched settings keep their defaults.
	if c.HTTPHost != "0.0.0.0" || c.PassivationTimeout != 30*time.Second {
		t.Fatalf("settings without env changed: %+v", c)
	}
}

func TestBlankEnvIsUnset(t *testing.T) {
	c, err := Load(nil, env(map[string]string{"HTTP_PORT": "", "USER_FUNCTION_HOST": "  "}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPPort != 9000 || c.UserFunctionHost != "127.0.0.1" {
		t.Fatalf("blank env changed settings: %+v", c)
	}
}

func TestFlagsOverrideEnv(t *testing.T) {
	c, err := Load([]string{
		"--http-port", "9200",
		"--user-function-host=fn",
		"-user-function-port=7000",
		"--http-host", "::1",
		"--passivation-timeout", "2m30s",
		"--relay-timeout=5s",
		"--graceful-termination-timeout=0s",
		"--discovery-backoff-min=100ms",
		"--discovery-backoff-max=2s",
		"--discovery-backoff-jitter=0",
		"--protocol-compatibility-check=false",
		"--max-inbound-message-size=1024",
		"--entity-mailbox-size=1",
		"--log-level=error",
		"--log-format=json",
	}, env(map[string]string{
		"HTTP_PORT":            "9100",
		"USER_FUNCTION_HOST":   "from-env",
		"USER_FUNCTION_PORT":   "8181",
		"CLOUDSTATE_LOG_LEVEL": "debug",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		HTTPHost:                   "::1",
		HTTPPort:                   9200,
		UserFunctionHost:           "fn",
		UserFunctionPort:           7000,
		Store:                      "memory",
		PassivationTimeout:         150 * time.Second,
		RelayTimeout:               5 * time.Second,
		ShutdownTimeout:            0,
		DiscoveryBackoffMin:        100 * time.Millisecond,
		DiscoveryBackoffMax:        2 * time.Second,
		DiscoveryBackoffJitter:     0,
		ProtocolCompatibilityCheck: false,
		MaxInboundMessageSize:      1024,
		EntityMailboxSize:          1,
		LogLevel:                   "error",
		LogFormat:                  "json",
	}
	if c != want {
		t.Fatalf("flags over env:\n got %+v\nwant %+v", c, want)
	}
	if got := c.HTTPAddr(); got != "[::1]:9200" {
		t.Errorf("HTTPAddr() = %q, want [::1]:9200", got)
	}
}

// TestFlagOverridesEnvOfSameSetting checks precedence setting by setting for
// every setting that has an environment variable.
func TestFlagOverridesEnvOfSameSetting(t *testing.T) {
	for _, tc := range []struct {
		env, envValue, flag, flagValue string
		get                            func(Config) string
		want                           string
	}{
		{"HTTP_PORT", "1", "http-port", "2", func(c Config) string { return c.HTTPAddr() }, "0.0.0.0:2"},
		{"USER_FUNCTION_HOST", "a", "user-function-host", "b", func(c Config) string { return c.UserFunctionHost }, "b"},
		{"USER_FUNCTION_PORT", "1", "user-function-port", "2", func(c Config) string { return c.UserFunctionAddr() }, "127.0.0.1:2"},
		{"CLOUDSTATE_STORE", "memory", "store", "memory", func(c Config) string { return c.Store }, "memory"},
		{"CLOUDSTATE_LOG_LEVEL", "warn", "log-level", "debug", func(c Config) string { return c.LogLevel }, "debug"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			c, err := Load([]string{"--" + tc.flag + "=" + tc.flagValue}, env(map[string]string{tc.env: tc.envValue}), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.get(c); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"HTTPPortHigh", func(c *Config) { c.HTTPPort = 70000 }, "--http-port: 70000 is not a port (1-65535)"},
		{"HTTPPortZero", func(c *Config) { c.HTTPPort = 0 }, "--http-port: 0 is not a port (1-65535)"},
		{"UserFunctionPortNegative", func(c *Config) { c.UserFunctionPort = -1 }, "--user-function-port: -1 is not a port (1-65535)"},
		{"UserFunctionHostEmpty", func(c *Config) { c.UserFunctionHost = "" }, "--user-function-host: must not be empty"},
		{"UserFunctionHostWithPort", func(c *Config) { c.UserFunctionHost = "fn:8080" }, `--user-function-host: "fn:8080" is not a host name or IP address (give the port separately; IPv6 without brackets)`},
		{"HTTPHostSpace", func(c *Config) { c.HTTPHost = "a b" }, `--http-host: "a b" is not a host name or IP address`},
		{"HTTPHostURL", func(c *Config) { c.HTTPHost = "http://x" }, `--http-host: "http://x" is not a host name or IP address`},
		{"Store", func(c *Config) { c.Store = "cassandra" }, `--store: "cassandra" is not a supported store (accepted: memory, pebble:<dir>, postgres://<user>@<host>:<port>/<db>)`},
		{"PassivationZero", func(c *Config) { c.PassivationTimeout = 0 }, "--passivation-timeout: 0s must be greater than 0"},
		{"RelayNegative", func(c *Config) { c.RelayTimeout = -time.Second }, "--relay-timeout: -1s must be greater than 0"},
		{"ShutdownNegative", func(c *Config) { c.ShutdownTimeout = -time.Second }, "--graceful-termination-timeout: -1s must not be negative"},
		{"BackoffMinZero", func(c *Config) { c.DiscoveryBackoffMin = 0 }, "--discovery-backoff-min: 0s must be greater than 0"},
		{"BackoffMaxBelowMin", func(c *Config) { c.DiscoveryBackoffMax = 500 * time.Millisecond }, "--discovery-backoff-max: 500ms is less than --discovery-backoff-min (1s)"},
		{"JitterHigh", func(c *Config) { c.DiscoveryBackoffJitter = 1.5 }, "--discovery-backoff-jitter: 1.5 is not between 0 and 1"},
		{"JitterNegative", func(c *Config) { c.DiscoveryBackoffJitter = -0.1 }, "--discovery-backoff-jitter: -0.1 is not between 0 and 1"},
		{"MaxInboundZero", func(c *Config) { c.MaxInboundMessageSize = 0 }, "--max-inbound-message-size: 0 must be greater than 0"},
		{"MailboxZero", func(c *Config) { c.EntityMailboxSize = 0 }, "--entity-mailbox-size: 0 must be greater than 0"},
		{"LogLevel", func(c *Config) { c.LogLevel = "verbose" }, `--log-level: "verbose" is not one of debug, info, warn, error`},
		{"LogFormat", func(c *Config) { c.LogFormat = "xml" }, `--log-format: "xml" is not one of text, json`},
		{"CORSOriginPath", func(c *Config) { c.CORSAllowedOrigins = "https://a.example/app" }, `--cors-allowed-origins: "https://a.example/app" is not an origin such as https://example.com or http://localhost:3000, or *`},
		{"CORSOriginNoScheme", func(c *Config) { c.CORSAllowedOrigins = "*,a.example" }, `--cors-allowed-origins: "a.example" is not an origin such as https://example.com or http://localhost:3000, or *`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			tc.edit(&c)
			err := c.Validate()
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Validate() = %v\nwant %s", err, tc.want)
			}
		})
	}
}

func TestInvalidValuesAreJoined(t *testing.T) {
	c := Default()
	c.HTTPPort = 70000
	c.LogFormat = "xml"
	c.EntityMailboxSize = -5
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate() accepted three invalid settings")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("Validate() reported %d problems, want 3:\n%v", len(lines), err)
	}
	for i, prefix := range []string{"--http-port:", "--entity-mailbox-size:", "--log-format:"} {
		if !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("problem %d = %q, want it to start with %q", i, lines[i], prefix)
		}
	}
}

func TestInvalidFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-port=70000"}, "--http-port: 70000 is not a port (1-65535)"},
		{[]string{"--http-port=abc"}, `"abc" is not an integer`},
		{[]string{"--relay-timeout=10"}, `"10" is not a duration`},
		{[]string{"--discovery-backoff-jitter=lots"}, `"lots" is not a number`},
		{[]string{"--protocol-compatibility-check=maybe"}, `"maybe" is not true or false`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{[]string{"--discovery-backoff-min=20s"}, "--discovery-backoff-max: 10s is less than --discovery-backoff-min (20s)"},
		{[]string{"serve"}, `unexpected argument "serve"`},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := Load(tc.args, nil, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestInvalidEnv(t *testing.T) {
	for _, tc := range []struct {
		env, value, want string
	}{
		{"HTTP_PORT", "http", `HTTP_PORT: "http" is not an integer`},
		{"HTTP_PORT", "70000", "HTTP_PORT: 70000 is not a port (1-65535)"},
		{"USER_FUNCTION_PORT", "8080x", `USER_FUNCTION_PORT: "8080x" is not an integer`},
		{"USER_FUNCTION_HOST", "fn:8080", `USER_FUNCTION_HOST: "fn:8080" is not a host name or IP address`},
		{"CLOUDSTATE_STORE", "postgres", `CLOUDSTATE_STORE: "postgres" is not a supported store (accepted: memory, pebble:<dir>, postgres://<user>@<host>:<port>/<db>)`},
		{"CLOUDSTATE_LOG_LEVEL", "loud", `CLOUDSTATE_LOG_LEVEL: "loud" is not one of debug, info, warn, error`},
	} {
		t.Run(tc.env+"="+tc.value, func(t *testing.T) {
			c := Default()
			err := c.ApplyEnv(env(map[string]string{tc.env: tc.value}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ApplyEnv = %v, want an error containing %q", err, tc.want)
			}
			// Load reports it too, even if a flag would have overridden
			// it: a broken deployment variable should not go unnoticed.
			if _, err := Load(nil, env(map[string]string{tc.env: tc.value}), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	var stderr bytes.Buffer
	_, err := Load([]string{"--help"}, env(map[string]string{"HTTP_PORT": "9999"}), &stderr)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Load(--help) = %v, want flag.ErrHelp", err)
	}
	help := stderr.String()
	c := Default()
	for _, s := range c.settings() {
		if !strings.Contains(help, "--"+s.name+" ") {
			t.Errorf("help does not list --%s:\n%s", s.name, help)
		}
		if s.env != "" && !strings.Contains(help, s.env) {
			t.Errorf("help does not name %s:\n%s", s.env, help)
		}
	}
	for _, want := range []string{"HTTP_PORT", "USER_FUNCTION_HOST", "USER_FUNCTION_PORT", "CLOUDSTATE_STORE", "CLOUDSTATE_LOG_LEVEL",
		"9000", "0.0.0.0", "127.0.0.1", "8080", "30s", "1m0s", "10s", "0.2", "12582912", "1000"} {
		if !strings.Contains(help, want) {
			t.Errorf("help does not contain %q:\n%s", want, help)
		}
	}
	// Defaults in the help are the built-in ones, not the environment's.
	if strings.Contains(help, "9999") {
		t.Errorf("help shows the environment's value as the default:\n%s", help)
	}
}

func TestRegisterFlagsUsage(t *testing.T) {
	c := Default()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.RegisterFlags(fs)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(f.Usage, "default "+f.DefValue) {
			t.Errorf("usage of --%s does not mention its default %q: %q", f.Name, f.DefValue, f.Usage)
		}
	})
	if n != len(c.settings()) {
		t.Fatalf("registered %d flags, want %d", n, len(c.settings()))
	}
	if u := fs.Lookup("http-port").Usage; !strings.Contains(u, "env HTTP_PORT") {
		t.Errorf("usage of --http-port does not name HTTP_PORT: %q", u)
	}
	// A bool flag takes no value.
	if err := fs.Parse([]string{"--protocol-compatibility-check=false", "--protocol-compatibility-check"}); err != nil {
		t.Fatal(err)
	}
	if !c.ProtocolCompatibilityCheck {
		t.Fatal("--protocol-compatibility-check without a value did not set true")
	}
}

func TestLogger(t *testing.T) {
	var buf bytes.Buffer
	c := Default()
	c.LogFormat = "json"
	c.LogLevel = "warn"
	log := c.Logger(&buf)
	log.Info("dropped")
	log.Warn("kept", "entity", "cart-1")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("json log line %q: %v", buf.String(), err)
	}
	if rec["msg"] != "kept" || rec["entity"] != "cart-1" || rec["level"] != "WARN" {
		t.Fatalf("log record = %v", rec)
	}

	buf.Reset()
	c = Default()
	c.Logger(&buf).Debug("dropped")
	c.Logger(&buf).Info("hello", "n", 1)
	if got := buf.String(); !strings.Contains(got, "level=INFO msg=hello n=1") || strings.Contains(got, "dropped") {
		t.Fatalf("text log = %q", got)
	}
}

func TestCORSAllowedOrigins(t *testing.T) {
	c, err := Load(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.CORSOrigins(); got != nil {
		t.Fatalf("CORS is on by default: %q", got)
	}
	for _, tc := range []struct {
		flag string
		want []string
	}{
		{"*", []string{"*"}},
		{"https://shop.example.com, http://localhost:3000,", []string{"https://shop.example.com", "http://localhost:3000"}},
		{"http://127.0.0.1:8000/", []string{"http://127.0.0.1:8000/"}},
	} {
		c, err := Load([]string{"--cors-allowed-origins", tc.flag}, nil, nil)
		if err != nil {
			t.Fatalf("--cors-allowed-origins %q: %v", tc.flag, err)
		}
		if got := c.CORSOrigins(); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("--cors-allowed-origins %q: CORSOrigins() = %q, want %q", tc.flag, got, tc.want)
		}
	}
}
