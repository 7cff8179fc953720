package durability

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/cloudstate-go/cloudstate/internal/testproc"
)

// pgServer is a private PostgreSQL server that a test starts with initdb
// in a temporary directory and may stop and start at will, which the
// shared test server cannot allow.
type pgServer struct {
	binDir string
	dir    string // holds data/ and the server's log and socket
	port   int
	runAs  []string // command prefix to run as the postgres user, when root
}

// startPrivatePostgres creates and starts a PostgreSQL cluster on a free
// port. It skips the test (fails it when CLOUDSTATE_REQUIRE_SERVICES=1)
// when the binaries are missing or cannot run.
func startPrivatePostgres(t *testing.T) *pgServer {
	t.Helper()
	s := &pgServer{port: testproc.FreePort(t)}
	var err error
	if s.binDir, err = findPostgresBinaries(); err != nil {
		unavailable(t, "%v", err)
	}
	if s.dir, err = os.MkdirTemp("", "cloudstate-pg-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	if os.Geteuid() == 0 {
		// initdb refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			unavailable(t, "running as root and there is no postgres user to run initdb as: %v", err)
		}
		runuser, err := exec.LookPath("runuser")
		if err != nil {
			unavailable(t, "running as root and runuser is missing, so initdb cannot run as postgres: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(s.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		s.runAs = []string{runuser, "-u", "postgres", "--"}
	}
	if out, err := s.command(context.Background(), "initdb", "-D", s.data(), "-U", "postgres", "-A", "trust",
		"--no-sync", "-E", "UTF8", "--locale", "C").CombinedOutput(); err != nil {
		unavailable(t, "initdb failed: %v\n%s", err, out)
	}
	s.start(t)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = s.command(ctx, "pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop").Run()
	})
	return s
}

// unavailable skips the test, or fails it when services are required.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf("private PostgreSQL: "+format, args...)
	if os.Getenv("CLOUDSTATE_REQUIRE_SERVICES") == "1" {
		t.Fatalf("%s (CLOUDSTATE_REQUIRE_SERVICES=1, so this is a failure)", msg)
	}
	t.Skipf("%s; skipping (set CLOUDSTATE_REQUIRE_SERVICES=1 to fail instead)", msg)
}

// findPostgresBinaries returns the directory of initdb and pg_ctl: the
// newest /usr/lib/postgresql/<version>/bin (Debian's layout), else the
// one in PATH.
func findPostgresBinaries() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("no initdb in /usr/lib/postgresql/*/bin or PATH")
}

func (s *pgServer) data() string { return filepath.Join(s.dir, "data") }

// command runs a PostgreSQL program as the right user.
func (s *pgServer) command(ctx context.Context, prog string, args ...string) *exec.Cmd {
	argv := append(slices.Clone(s.runAs), filepath.Join(s.binDir, prog))
	argv = append(argv, args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// DSN is the server's connection string.
func (s *pgServer) DSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
}

// start starts the server and waits until it accepts connections.
func (s *pgServer) start(t *testing.T) {
	t.Helper()
	opts := strings.Join([]string{
		"-p", strconv.Itoa(s.port), "-k", s.dir, "-c", "listen_addresses=127.0.0.1",
		"-c", "max_connections=100", "-c", "shared_buffers=32MB",
	}, " ")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if out, err := s.command(ctx, "pg_ctl", "-D", s.data(), "-o", opts, "-l", filepath.Join(s.dir, "server.log"), "-w", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(s.dir, "server.log"))
		t.Fatalf("pg_ctl start: %v\n%s\nserver log:\n%s", err, out, testproc.Tail(string(log), 30))
	}
	testproc.Eventually(t, 30*time.Second, s.ping)
}

// crash stops the server the way a crash would: every server process is
// killed at once, without a checkpoint; the next start recovers from the
// WAL.
func (s *pgServer) crash(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := s.command(ctx, "pg_ctl", "-D", s.data(), "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl stop -m immediate: %v\n%s", err, out)
	}
}

// ping connects once.
func (s *pgServer) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, s.DSN())
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}
