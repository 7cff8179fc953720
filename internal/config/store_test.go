package config

import (
	"strings"
	"testing"
)

func TestParseStore(t *testing.T) {
	good := []struct {
		in   string
		want StoreSpec
	}{
		{"memory", StoreSpec{Kind: StoreMemory}},
		{"pebble:./data", StoreSpec{Kind: StorePebble, Dir: "./data"}},
		{"pebble:/var/lib/cloudstate", StoreSpec{Kind: StorePebble, Dir: "/var/lib/cloudstate"}},
		{"postgres://u@127.0.0.1:5432/test", StoreSpec{Kind: StorePostgres, DSN: "postgres://u@127.0.0.1:5432/test"}},
		{"postgresql://u:pw@db/test?sslmode=disable", StoreSpec{Kind: StorePostgres, DSN: "postgresql://u:pw@db/test?sslmode=disable"}},
	}
	for _, tc := range good {
		got, err := ParseStore(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseStore(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	bad := []struct{ in, msg string }{
		{"pebble:", "names no directory"},
		{"postgres:///test", "names no host"},
		{"cassandra", "is not a supported store"},
		{"", "is not a supported store"},
		{"postgres://u:secret@%zz/db", "is not a valid PostgreSQL URL"},
	}
	for _, tc := range bad {
		_, err := ParseStore(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseStore(%q) error %v, want one containing %q", tc.in, err, tc.msg)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseStore(%q) leaks the password: %v", tc.in, err)
		}
	}
}

func TestStoreSpecRedacted(t *testing.T) {
	s, err := ParseStore("postgres://u:secret@db:5432/x")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Redacted(); strings.Contains(r, "secret") || !strings.Contains(r, "u:xxxxx@db:5432") {
		t.Fatalf("Redacted() = %q", r)
	}
}
