package pgenv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/testcontainers/testcontainers-go"

	"github.com/rlslab/rlslab/internal/docker"
)

// testLogger returns a logger writing to t.Log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, nil))
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startLocalT starts a local cluster closed by t.Cleanup, or skips without binaries.
func startLocalT(t *testing.T, opts Options) *Server {
	t.Helper()
	if _, err := findBinaries(); err != nil {
		t.Skip("no local PostgreSQL binaries:", err)
	}
	opts.Containers = nil // no container fallback: a broken local start fails the test
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	begin := time.Now()
	s, err := Start(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %v", time.Since(begin))
	t.Cleanup(func() { s.Close() })
	if s.Kind != "local" {
		t.Fatalf("Kind = %q, want local", s.Kind)
	}
	return s
}

// reachableTempDir returns a temp dir that PostgreSQL's unprivileged user can
// traverse when the test runs as root (t.TempDir's parent is 0700).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgenv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// connect opens a connection closed by t.Cleanup.
func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// procUID returns the real uid of process pid from /proc.
func procUID(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			uid, err := strconv.Atoi(strings.Fields(rest)[0])
			if err != nil {
				t.Fatal(err)
			}
			return uid
		}
	}
	t.Fatal("no Uid line in /proc status")
	return -1
}

func TestEphemeralLocal(t *testing.T) {
	t.Parallel()
	s := startLocalT(t, Options{MaxConnections: 57})
	ctx := context.Background()

	for _, u := range []string{s.URL, s.TCPURL} {
		conn := connect(t, u)
		var user, version, maxConns string
		if err := conn.QueryRow(ctx, "SELECT current_user, version()").Scan(&user, &version); err != nil {
			t.Fatal(err)
		}
		if user != "postgres" || !strings.HasPrefix(version, "PostgreSQL") {
			t.Errorf("current_user, version() = %q, %q", user, version)
		}
		if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil {
			t.Fatal(err)
		}
		if maxConns != "57" || s.MaxConnections() != 57 {
			t.Errorf("max_connections = %s, MaxConnections() = %d, want 57", maxConns, s.MaxConnections())
		}
	}
	// The TCP port demands the password.
	noPw := strings.Replace(s.TCPURL, "postgres:", "postgres:wrong", 1)
	if c, err := pgx.Connect(ctx, noPw); err == nil {
		c.Close(ctx)
		t.Error("TCP connection with a wrong password succeeded")
	}

	pid := s.cmd.Process.Pid
	if os.Geteuid() == 0 {
		if uid := procUID(t, pid); uid == 0 {
			t.Errorf("postgres (pid %d) runs as root", pid)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres pid %d still exists after Close (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(s.runDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temp dir %s still there after Close: %v", s.runDir, err)
	}
}

func TestDataDirKept(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(reachableTempDir(t), "missing-parent", "pgdata")
	ctx := context.Background()

	s1 := startLocalT(t, Options{DataDir: dir})
	if _, err := connect(t, s1.URL).Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatalf("DataDir not kept: %v", err)
	}

	s2 := startLocalT(t, Options{DataDir: dir, MaxConnections: 30})
	var x int
	conn := connect(t, s2.URL)
	if err := conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 42 {
		t.Fatalf("SELECT x FROM kept = %d, %v; want 42", x, err)
	}
	var maxConns string
	if err := conn.QueryRow(ctx, "SHOW max_connections").Scan(&maxConns); err != nil || maxConns != "30" {
		t.Errorf("max_connections = %q, %v; want 30", maxConns, err)
	}
	// A second server on the same DataDir is refused clearly.
	_, err := Start(ctx, Options{DataDir: dir})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Start on a DataDir in use: err = %v, want one saying it is in use", err)
	}
	conn.Close(ctx)
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		t.Fatalf("DataDir removed by Close: %v", err)
	}
}

func TestStalePidFile(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(reachableTempDir(t), "pgdata")
	s := startLocalT(t, Options{DataDir: dir})
	// Simulate a crash: kill postgres hard, so postmaster.pid stays behind.
	pid := s.cmd.Process.Pid
	if err := s.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-s.exited
	// Its backends notice the postmaster's death and exit on their own.
	pidFile := filepath.Join(dir, "postmaster.pid")
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("no postmaster.pid after kill of %d: %v", pid, err)
	}
	s.Close()
	s2 := startLocalT(t, Options{DataDir: dir})
	var one int
	if err := connect(t, s2.URL).QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil {
		t.Fatal(err)
	}
}

func TestURL(t *testing.T) {
	t.Parallel()
	s := startLocalT(t, Options{})
	ctx := context.Background()

	for _, u := range []string{s.URL, s.TCPURL} {
		got, err := Start(ctx, Options{DB: u})
		if err != nil {
			t.Fatal(err)
		}
		if got.Kind != "url" || got.URL != u || got.MaxConnections() != 0 {
			t.Errorf("Start(DB: url) = Kind %q URL %q MaxConnections %d", got.Kind, got.URL, got.MaxConnections())
		}
		if err := got.Close(); err != nil {
			t.Error(err)
		}
	}

	env := func(k string) string {
		if k == "DATABASE_URL" {
			return s.URL
		}
		return ""
	}
	noLocal := func() (bins, error) { return bins{}, errors.New("must not be used") }
	got, err := Start(ctx, Options{DB: "auto", Getenv: env, findBins: noLocal})
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != "url" || got.URL != s.URL {
		t.Errorf("auto with DATABASE_URL: Kind %q URL %q", got.Kind, got.URL)
	}
	got.Close()

	// Nothing listens on a port we just freed.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	bad := "postgres://postgres@127.0.0.1:" + strconv.Itoa(port) + "/postgres?sslmode=disable"
	_, err = Start(ctx, Options{DB: bad})
	if err == nil {
		t.Fatal("Start with a dead URL succeeded")
	}
	if d := time.Since(begin); d > 3*time.Second {
		t.Errorf("failing on a dead URL took %v", d)
	}
	if !strings.Contains(err.Error(), "cannot connect") {
		t.Errorf("error = %v", err)
	}
	t.Log(err)
}

func TestNothingAvailable(t *testing.T) {
	t.Parallel()
	_, err := Start(context.Background(), Options{
		Getenv:   func(string) string { return "" },
		findBins: func() (bins, error) { return bins{}, errNoBinaries },
	})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	for _, want := range []string{"DATABASE_URL", "-db", "apt-get install postgresql", "scripts/setup-debian.sh", "Docker daemon"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
	t.Log(err)
}

func TestBadMaxConnections(t *testing.T) {
	t.Parallel()
	for _, n := range []int{-1, 3} {
		if _, err := Start(context.Background(), Options{MaxConnections: n}); err == nil {
			t.Errorf("MaxConnections %d accepted", n)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		sign int
	}{{"15", "9.6", 1}, {"9.6", "15", -1}, {"16", "16", 0}, {"9.6", "9.5", 1}} {
		got := compareVersions(c.a, c.b)
		if (got > 0) != (c.sign > 0) || (got < 0) != (c.sign < 0) {
			t.Errorf("compareVersions(%q, %q) = %d", c.a, c.b, got)
		}
	}
}

func TestDocker(t *testing.T) {
	testcontainers.SkipIfProviderIsNotHealthy(t)
	t.Parallel()
	s, err := Start(context.Background(), Options{
		findBins:       func() (bins, error) { return bins{}, errNoBinaries },
		MaxConnections: 42,
		Logger:         testLogger(t),
		Containers:     docker.Containers{},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Kind != "docker" {
		t.Fatalf("Kind = %q", s.Kind)
	}
	var maxConns string
	if err := connect(t, s.URL).QueryRow(context.Background(), "SHOW max_connections").Scan(&maxConns); err != nil || maxConns != "42" {
		t.Errorf("max_connections = %q, %v; want 42", maxConns, err)
	}
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// TestNoDockerDaemon checks the real Docker attempt on a machine without a
// daemon: "not available", quickly, and the auto-mode error names all ways.
func TestNoDockerDaemon(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if (docker.Containers{}).Healthy(ctx) == nil {
		t.Skip("a Docker daemon is running")
	}
	begin := time.Now()
	_, err := Start(ctx, Options{findBins: func() (bins, error) { return bins{}, errNoBinaries }, Containers: docker.Containers{}})
	if d := time.Since(begin); d > 5*time.Second {
		t.Errorf("giving up without Docker took %v", d)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	t.Logf("%v (after %v)", err, time.Since(begin))
}
