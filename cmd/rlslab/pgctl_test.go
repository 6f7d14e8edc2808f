package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// pgBinDir is where the tests find PostgreSQL's programs.
const pgBinDir = "/usr/lib/postgresql/15/bin"

// pgCtlServer is a PostgreSQL cluster of the test's own run with pg_ctl
// on a fixed port, so that after pg_ctl stop -m immediate (a crash: no
// checkpoint, backends gone at once) it starts again at the same address,
// as a restarted database server does.
type pgCtlServer struct {
	t         *testing.T
	dir, data string
	port      int
	URL       string
	asUser    string // run the programs as this user ("" as ourselves)
}

// startPgCtlServer makes a cluster with the stock max_connections = 100
// and starts it; it is stopped when the test ends.
func startPgCtlServer(t *testing.T) *pgCtlServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBinDir, "pg_ctl")); err != nil {
		t.Skipf("no pg_ctl: %v", err)
	}
	s := &pgCtlServer{t: t, dir: traversableTempDir(t)}
	s.data = filepath.Join(s.dir, "data")
	if err := os.Mkdir(s.data, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		// PostgreSQL refuses to run as root.
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skipf("running as root without a postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{s.dir, s.data} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		s.asUser = "postgres"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", s.port)
	s.run("initdb", "-D", s.data, "-U", "postgres", "--auth=trust", "-N", "-E", "UTF8")
	t.Cleanup(func() { _ = s.cmd("pg_ctl", "-D", s.data, "-m", "immediate", "stop").Run() })
	s.Start()
	return s
}

// cmd returns the command that runs PostgreSQL's program name with args.
func (s *pgCtlServer) cmd(name string, args ...string) *exec.Cmd {
	prog := filepath.Join(pgBinDir, name)
	if s.asUser != "" {
		return exec.Command("runuser", append([]string{"-u", s.asUser, "--", prog}, args...)...)
	}
	return exec.Command(prog, args...)
}

// run runs PostgreSQL's program name and fails the test if it fails.
func (s *pgCtlServer) run(name string, args ...string) {
	s.t.Helper()
	if out, err := s.cmd(name, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// Start starts the cluster on its port and waits until it accepts
// connections.
func (s *pgCtlServer) Start() {
	s.t.Helper()
	begin := time.Now()
	s.run("pg_ctl", "-D", s.data, "-l", filepath.Join(s.dir, "postgres.log"), "-w", "-t", "120", "-o",
		fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s -c max_connections=100", s.port, s.dir),
		"start")
	s.t.Logf("lab server on port %d started in %s", s.port, time.Since(begin).Round(time.Millisecond))
}

// Crash stops the cluster as pg_ctl stop -m immediate does: every
// backend is gone at once, and the next start recovers from the WAL.
func (s *pgCtlServer) Crash() {
	s.t.Helper()
	s.run("pg_ctl", "-D", s.data, "-m", "immediate", "-w", "stop")
}

// Log returns the server's log.
func (s *pgCtlServer) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}
