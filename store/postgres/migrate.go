package postgres

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles holds the schema migrations, named NNNN_description.sql.
// A migration is never edited once released; a change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one versioned step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order. It fails if
// a file name has no version or the versions do not run 1, 2, 3, ... without
// gaps, so a misnamed file is caught by the first test rather than in
// production.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil || version <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", name)
		}
		body, err := fs.ReadFile(migrationFiles, path.Join("migrations", name))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: version %d, want %d (versions must be contiguous from 1)", m.name, m.version, i+1)
		}
	}
	return out, nil
}

// migrationLockSQL serializes migrations of one schema across processes.
// The lock is a transaction-level advisory lock, released by the commit or
// rollback of the migration transaction, so a crashed migrator never leaves it
// held. Its key is derived from the schema name, so proxies (or tests) using
// different schemas of one database do not wait for each other.
const migrationLockSQL = `SELECT pg_advisory_xact_lock(hashtextextended('cloudstate_schema_migrations:' || coalesce(current_schema(), ''), 0))`

const createMigrationsTableSQL = `CREATE TABLE IF NOT EXISTS cloudstate_schema_migrations (
    version    integer     NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrate brings the schema in the connections' search_path up to date, in
// one transaction: either every missing migration is applied or none is.
// Concurrent callers (several proxies starting at once) queue on the
// advisory lock; the first applies the migrations, the others then find
// nothing to do. A database already migrated further than this binary knows
// is accepted: migrations only add, so an older proxy keeps working during a
// rolling upgrade.
func migrate(ctx context.Context, pool *pgxpool.Pool) (applied []int, err error) {
	steps, err := migrations()
	if err != nil {
		return nil, err
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil {
			// The error that matters is the one that made us roll back.
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := tx.Exec(ctx, migrationLockSQL); err != nil {
		return nil, fmt.Errorf("lock migrations: %w", err)
	}
	if _, err := tx.Exec(ctx, createMigrationsTableSQL); err != nil {
		return nil, fmt.Errorf("create cloudstate_schema_migrations: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT version FROM cloudstate_schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	done, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, fmt.Errorf("read applied migrations: %w", err)
	}
	have := make(map[int]bool, len(done))
	for _, v := range done {
		have[int(v)] = true
	}
	for _, m := range steps {
		if have[m.version] {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("apply migration %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO cloudstate_schema_migrations (version) VALUES ($1)`, m.version); err != nil {
			return nil, fmt.Errorf("record migration %s: %w", m.name, err)
		}
		applied = append(applied, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit migrations: %w", err)
	}
	return applied, nil
}
