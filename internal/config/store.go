package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Store kinds accepted by --store.
const (
	StoreMemory   = "memory"
	StorePebble   = "pebble"
	StorePostgres = "postgres"
)

// storeForms lists the accepted forms of --store, for messages and --help.
var storeForms = []string{"memory", "pebble:<dir>", "postgres://<user>@<host>:<port>/<db>"}

// StoreSpec is a parsed --store value.
type StoreSpec struct {
	// Kind is StoreMemory, StorePebble or StorePostgres.
	Kind string
	// Dir is the Pebble data directory.
	Dir string
	// DSN is the PostgreSQL connection string.
	DSN string
}

// ParseStore parses a --store value: "memory", "pebble:<dir>", or a
// PostgreSQL URL ("postgres://..." or "postgresql://...").
func ParseStore(s string) (StoreSpec, error) {
	switch {
	case s == StoreMemory:
		return StoreSpec{Kind: StoreMemory}, nil
	case strings.HasPrefix(s, "pebble:"):
		dir := strings.TrimPrefix(s, "pebble:")
		if dir == "" {
			return StoreSpec{}, fmt.Errorf("%q names no directory (use pebble:<dir>, e.g. pebble:./data)", s)
		}
		return StoreSpec{Kind: StorePebble, Dir: dir}, nil
	case strings.HasPrefix(s, "postgres://"), strings.HasPrefix(s, "postgresql://"):
		u, err := url.Parse(s)
		if err != nil {
			return StoreSpec{}, fmt.Errorf("%q is not a valid PostgreSQL URL (check the escaping of special characters)", redact(s))
		}
		if u.Host == "" {
			return StoreSpec{}, fmt.Errorf("%q names no host (e.g. postgres://user@127.0.0.1:5432/db)", redact(s))
		}
		return StoreSpec{Kind: StorePostgres, DSN: s}, nil
	}
	return StoreSpec{}, fmt.Errorf("%q is not a supported store (accepted: %s)", redact(s), strings.Join(storeForms, ", "))
}

// Redacted returns the store value with any password hidden, for logs.
func (s StoreSpec) Redacted() string {
	switch s.Kind {
	case StorePebble:
		return "pebble:" + s.Dir
	case StorePostgres:
		return redact(s.DSN)
	}
	return s.Kind
}

// redact hides the password of a URL's user info, even when the URL does
// not parse.
func redact(s string) string {
	scheme := strings.Index(s, "://")
	if scheme < 0 {
		return s
	}
	rest := s[scheme+3:]
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	user, _, hasPassword := strings.Cut(rest[:at], ":")
	if !hasPassword {
		return s
	}
	return s[:scheme+3] + user + ":xxxxx" + rest[at:]
}
