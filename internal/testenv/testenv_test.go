package testenv

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestWithParam(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u@h:5432/db?sslmode=disable", "search_path"},
		{"host=h user=u dbname=db", "search_path"},
	} {
		got := WithParam(tc.dsn, "search_path", "it's")
		cfg, err := pgconn.ParseConfig(got)
		if err != nil {
			t.Fatalf("WithParam(%q) = %q, which does not parse: %v", tc.dsn, got, err)
		}
		if v := cfg.RuntimeParams["search_path"]; v != "it's" {
			t.Fatalf("WithParam(%q) = %q: search_path %q, want %q", tc.dsn, got, v, "it's")
		}
		if cfg.Host != "h" || cfg.User != "u" || cfg.Database != "db" {
			t.Fatalf("WithParam(%q) = %q lost the connection settings: %+v", tc.dsn, got, cfg)
		}
	}
}

func TestRedact(t *testing.T) {
	for _, dsn := range []string{
		"postgres://u:secret@h/db",
		"host=h password=secret user=u",
		"host=h password='sec ret' user=u",
	} {
		if got := redact(dsn); strings.Contains(got, "secret") || strings.Contains(got, "sec ret") {
			t.Errorf("redact(%q) = %q", dsn, got)
		}
	}
}

func TestPostgresSchema(t *testing.T) {
	dsn, schema := PostgresSchema(t)
	conn, err := pgconn.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	res, err := conn.Exec(context.Background(), "SELECT current_schema()").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res[0].Rows[0][0]); got != schema {
		t.Fatalf("current_schema() = %q, want %q", got, schema)
	}
}
