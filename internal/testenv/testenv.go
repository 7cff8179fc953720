// Package testenv tells tests where the external services they need (for now
// PostgreSQL) are, and decides what happens when one is missing: the test is
// skipped with a message that says how to provide it, unless
// CLOUDSTATE_REQUIRE_SERVICES=1 is set (as in CI), in which case it fails.
//
// It is only imported by tests.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultPostgresDSN is the server used when CLOUDSTATE_TEST_POSTGRES is not
// set: a local PostgreSQL with trust authentication, as on a developer
// machine or in CI.
const DefaultPostgresDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// requireServices reports whether missing services fail tests instead of
// skipping them.
func requireServices() bool { return os.Getenv("CLOUDSTATE_REQUIRE_SERVICES") == "1" }

// unavailable skips or fails tb, per CLOUDSTATE_REQUIRE_SERVICES.
func unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireServices() {
		tb.Fatalf("%s (CLOUDSTATE_REQUIRE_SERVICES=1, so this is a failure)", msg)
	}
	tb.Skipf("%s; skipping (set CLOUDSTATE_REQUIRE_SERVICES=1 to fail instead)", msg)
}

// probes remembers, per DSN, whether the server answered, so a package with
// many tests connects to probe only once.
var probes sync.Map // dsn → error (nil when reachable)

// PostgresDSN returns the DSN of the PostgreSQL server for tests: the
// environment variable CLOUDSTATE_TEST_POSTGRES, or DefaultPostgresDSN. If
// the server cannot be reached (or refuses the connection), the test is
// skipped, or fails when CLOUDSTATE_REQUIRE_SERVICES=1.
func PostgresDSN(tb testing.TB) string {
	tb.Helper()
	dsn := os.Getenv("CLOUDSTATE_TEST_POSTGRES")
	if dsn == "" {
		dsn = DefaultPostgresDSN
	}
	var err error
	if v, ok := probes.Load(dsn); ok {
		err, _ = v.(error)
	} else {
		err = probe(dsn)
		probes.Store(dsn, err)
	}
	if err != nil {
		unavailable(tb, "PostgreSQL is not reachable at %s (set CLOUDSTATE_TEST_POSTGRES to a working DSN): %v", redact(dsn), err)
	}
	return dsn
}

// probe connects once and runs a trivial query.
func probe(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "SELECT 1").ReadAll()
	return err
}

// PostgresSchema creates a schema with a unique name on the test server,
// drops it (with everything in it) when tb ends, and returns a DSN whose
// connections use it as their search_path. Tests that each take their own
// schema never see each other's tables, even when they run in parallel or a
// previous run was killed half-way. The schema name is returned too, for
// tests that query the catalog.
func PostgresSchema(tb testing.TB) (dsn, schema string) {
	tb.Helper()
	base := PostgresDSN(tb)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		tb.Fatal(err)
	}
	schema = "cloudstate_test_" + hex.EncodeToString(suffix[:])

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		unavailable(tb, "connect to PostgreSQL at %s: %v", redact(base), err)
	}
	defer conn.Close(ctx)
	quoted := pgx.Identifier{schema}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+quoted); err != nil {
		tb.Fatalf("create test schema %s: %v", schema, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			tb.Errorf("drop test schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+quoted+" CASCADE"); err != nil {
			tb.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	return WithParam(base, "search_path", schema), schema
}

// WithParam returns dsn with the connection parameter key set to value. It
// understands both DSN forms PostgreSQL accepts: URLs (postgres://...) and
// keyword/value strings (host=... user=...). Parameters that are not
// connection settings, such as search_path or application_name, are sent to
// the server as run-time parameters of every connection.
func WithParam(dsn, key, value string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			q := u.Query()
			q.Set(key, value)
			u.RawQuery = q.Encode()
			return u.String()
		}
	}
	quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(value)
	return strings.TrimSpace(dsn) + " " + key + "='" + quoted + "'"
}

// passwordParam matches a password in a keyword/value DSN.
var passwordParam = regexp.MustCompile(`password=('(\\.|[^'])*'|\S+)`)

// redact hides a password in dsn, for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return passwordParam.ReplaceAllString(dsn, "password=xxxxx")
}
