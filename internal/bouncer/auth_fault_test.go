package bouncer

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

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// TestAuthFileHoldsNoPassword starts PgBouncer in front of PostgreSQL's
// socket (which trusts local logins) and its TCP port (which asks for
// SCRAM): the auth_file holds SCRAM secrets, the one of the login role over
// TCP is the very secret PostgreSQL keeps, and clients still get through,
// with the right password only.
func TestAuthFileHoldsNoPassword(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	for name, upstreamURL := range map[string]string{"socket": srv.URL, "tcp": srv.TCPURL} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			ctx := t.Context()
			opts := f.options(t, 1, false)
			up, err := UpstreamFromURL(upstreamURL)
			if err != nil {
				t.Fatal(err)
			}
			opts.Upstream = up
			b := mustStart(t, opts)
			data, err := os.ReadFile(filepath.Join(b.Dir(), "userlist.txt"))
			if err != nil {
				t.Fatal(err)
			}
			auth := string(data)
			for what, secret := range map[string]string{"the login role's password": testPassword, "the admin password": b.adminPassword} {
				if strings.Contains(auth, secret) || strings.Contains(auth, strings.ReplaceAll(secret, `"`, `""`)) {
					t.Errorf("userlist.txt holds %s:\n%s", what, auth)
				}
			}
			lines := strings.Split(strings.TrimSpace(auth), "\n")
			if len(lines) != 2 {
				t.Fatalf("userlist.txt has %d lines, want the admin and %s:\n%s", len(lines), f.user, auth)
			}
			var userSecret string
			for _, l := range lines {
				name, secret, _ := strings.Cut(l, " ")
				if !strings.HasPrefix(secret, `"SCRAM-SHA-256$`) {
					t.Errorf("entry %s is not a SCRAM secret: %s", name, secret)
				}
				if name == `"`+f.user+`"` {
					userSecret = strings.Trim(secret, `"`)
				}
			}
			if name == "tcp" {
				var stored string
				if err := pgenvtest.MustConnect(t).QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", f.user).Scan(&stored); err != nil {
					t.Fatal(err)
				}
				if userSecret != stored {
					t.Errorf("auth_file secret %q, PostgreSQL keeps %q: PgBouncer cannot log in over SCRAM unless they are the same", userSecret, stored)
				}
			}
			client := connect(t, b.URL(f.db, f.user, testPassword))
			var who string
			if err := client.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil {
				t.Fatalf("query through PgBouncer: %v", err)
			}
			if who != f.user {
				t.Errorf("current_user %q through PgBouncer, want %q", who, f.user)
			}
			adminConn(t, b) // the admin console takes its password too
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if c, err := pgx.Connect(cctx, b.URL(f.db, f.user, "wrong")); err == nil {
				c.Close(ctx)
				t.Error("a wrong password got through PgBouncer")
			}
		})
	}
}

func TestScramSecretIsPostgresFormat(t *testing.T) {
	t.Parallel()
	// A secret made here for the password "pencil" with a fixed salt.
	salt := []byte("0123456789abcdef")
	got, err := scramSecret("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pool := pgenvtest.MustConnect(t)
	role := "bouncer_scram_" + randomPassword()[:8]
	// PostgreSQL stores a secret given in its own format as it is: if ours
	// were malformed it would store it as a password and log in would fail.
	if _, err := pool.Exec(ctx, "CREATE ROLE "+role+" LOGIN PASSWORD '"+got+"'"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	var stored string
	if err := pool.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored != got {
		t.Fatalf("PostgreSQL stored %q for the secret %q", stored, got)
	}
	tcp, err := pgx.ParseConfig(pgenvtest.MustServer(t).TCPURL)
	if err != nil {
		t.Fatal(err)
	}
	tcp.User, tcp.Password = role, "pencil"
	c, err := pgx.ConnectConfig(ctx, tcp)
	if err != nil {
		t.Fatalf("log in over SCRAM with the secret made here: %v", err)
	}
	c.Close(ctx)
}

// TestSweepRemovesOnlyDeadBouncerDirs leaves directories the way a killed
// rlslab does and checks that a sweep removes only old ones whose PgBouncer
// is not running: never a running PgBouncer's, a young one or another
// program's.
func TestSweepRemovesOnlyDeadBouncerDirs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	old := time.Now().Add(-2 * abandonedAge)
	mk := func(name string, pid int, age time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(p, "userlist.txt"), []byte(`"lab_x_app" "secret"`), 0o600); err != nil {
			t.Fatal(err)
		}
		if pid != 0 {
			if err := os.WriteFile(filepath.Join(p, "pgbouncer.pid"), []byte(strconv.Itoa(pid)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(p, age, age); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A running PgBouncer: its real directory, made to look old.
	f := newFixture(t)
	live := mustStart(t, f.options(t, 1, false))
	data, err := os.ReadFile(filepath.Join(live.Dir(), "pgbouncer.pid"))
	if err != nil || strings.TrimSpace(string(data)) != strconv.Itoa(live.PID()) {
		t.Fatalf("pidfile of a running PgBouncer: %q, %v; want %d", data, err, live.PID())
	}
	liveCopy := mk(dirPrefix+"live", live.PID(), old)
	dead := mk(dirPrefix+"dead", 0, old)
	deadPid := mk(dirPrefix+"deadpid", 999999, old)
	reused := mk(dirPrefix+"reused", os.Getpid(), old) // alive, but not pgbouncer
	young := mk(dirPrefix+"young", 0, time.Now())
	other := mk("someone-else", 0, old)
	sweepAbandoned(slog.New(slog.DiscardHandler), dir, abandonedAge)
	for p, keep := range map[string]bool{liveCopy: true, dead: false, deadPid: false, reused: false, young: true, other: true} {
		_, err := os.Stat(p)
		if exists := err == nil; exists != keep {
			t.Errorf("%s: exists %v after the sweep, want %v", filepath.Base(p), exists, keep)
		}
	}
}

// TestKilledBouncerLeavesNoDirectory kills PgBouncer (as the fault suite
// does mid-run); Close still removes its directory and auth_file.
func TestKilledBouncerLeavesNoDirectory(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	b, err := Start(t.Context(), f.options(t, 1, false))
	if err != nil {
		t.Fatal(err)
	}
	dir := b.Dir()
	if err := syscall.Kill(b.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = b.Close() // the process is gone already; whatever it says, the directory must go
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s after Close of a killed PgBouncer: %v", dir, err)
	}
	if err := syscall.Kill(b.PID(), 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("PgBouncer %d still there: %v", b.PID(), err)
	}
}
