package main

import (
	"context"
	"errors"
	"net/url"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
)

// proxyAddrIn returns the address a serve child's proxy listens on, from
// its log.
func proxyAddrIn(t *testing.T, c *serveChild) string {
	t.Helper()
	c.waitLine(t, 60*time.Second, "PostgreSQL proxy listening")
	m := regexp.MustCompile(`PostgreSQL proxy listening.* addr=(\S+)`).FindStringSubmatch(c.log())
	if m == nil {
		t.Fatalf("no proxy address in the log:\n%s", c.log())
	}
	return m[1]
}

// TestProxyForwardsToTheInstanceThatRunsTheLab runs two instances on one
// server, each with its proxy. An app given a lab of the second instance
// connects to the first one's proxy: it is logged in as the lab's app role
// (the first forwards the connection to the second's proxy), a cancel
// request sent to the first cancels its statement, and a wrong password is
// refused with 28P01 as it is directly. Once the second instance is
// killed, the first answers in words: the proxy that served the lab does
// not answer, then no running instance has the lab.
func TestProxyForwardsToTheInstanceThatRunsTheLab(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	tmp := traversableTempDir(t)
	a := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", uniqueName("front"), "-proxy-addr", "127.0.0.1:0")
	b := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", uniqueName("owner"), "-proxy-addr", "127.0.0.1:0")
	a.listening(t, 60*time.Second)
	baseB := b.listening(t, 60*time.Second)
	proxyA, proxyB := proxyAddrIn(t, a), proxyAddrIn(t, b)

	c := client(t)
	id := newLab(t, c, baseB)
	var conn struct{ URL string }
	if code := callJSON(t, c, "GET", baseB+"/labs/"+id+"/connect.json", "", &conn); code != 200 {
		t.Fatalf("connect.json: %d", code)
	}
	direct, err := url.Parse(conn.URL)
	if err != nil || direct.Host != proxyB {
		t.Fatalf("connect.json URL %q: want the owning instance's proxy %s (%v)", conn.URL, proxyB, err)
	}
	viaA := *direct
	viaA.Host = proxyA

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	app, err := pgx.Connect(ctx, viaA.String())
	if err != nil {
		t.Fatalf("through the other instance's proxy: %v", err)
	}
	defer app.Close(context.Background())
	var user string
	if err := app.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil || user != "lab_"+id+"_app" {
		t.Errorf("current_user through the other instance's proxy: %q %v", user, err)
	}
	// The owning instance draws the app (its proxy observes the
	// connection).
	waitFor(t, 30*time.Second, "the owner's live view to show the app", func() bool {
		return state(t, c, baseB, id).Scenario == "your-app"
	})

	// A cancel request goes where the app connected: the first proxy, which
	// passes it on.
	watch, err := pgx.Connect(ctx, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Close(context.Background())
	slept := make(chan error, 1)
	go func() {
		_, err := app.Exec(ctx, "SELECT pg_sleep(60)")
		slept <- err
	}()
	waitFor(t, 30*time.Second, "the app's statement to run", func() bool {
		var n int
		err := watch.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND state = 'active' AND query = 'SELECT pg_sleep(60)'`, user).Scan(&n)
		return err == nil && n == 1
	})
	begin := time.Now()
	if err := app.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-slept
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Errorf("a statement cancelled through the first proxy: %v, want 57014 (query_canceled)", err)
	}
	if took := time.Since(begin); took > 30*time.Second {
		t.Errorf("the cancelled statement took %s", took)
	}
	// The connection goes on after the cancel.
	if err := app.QueryRow(ctx, "SELECT count(*) FROM invoices").Scan(new(int)); err != nil {
		t.Errorf("a query after the cancel: %v", err)
	}
	app.Close(ctx)

	wrong := viaA
	wrong.User = url.UserPassword(direct.User.Username(), "not-the-password")
	_, err = pgx.Connect(ctx, wrong.String())
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Errorf("a wrong password through the first proxy: %v, want 28P01", err)
	}

	// The owning instance dies: the first proxy says so.
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.exited <- <-b.exited // waited for, and left for the cleanup
	var last error
	waitFor(t, 60*time.Second, "the first proxy to say no instance has the lab", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		_, last = pgx.Connect(cctx, viaA.String())
		if !errors.As(last, &pe) {
			t.Fatalf("connecting after the owner died: %v, want an error from the proxy in words", last)
		}
		switch pe.Code {
		case "08001", "08006": // the owner is still registered: its proxy does not answer
			if !strings.Contains(pe.Message, "does not answer") && !strings.Contains(pe.Message, "closed the connection") {
				t.Errorf("while the owner is registered: %q", pe.Message)
			}
			t.Logf("while the owner is still registered: %v", last)
			return false
		case "3D000":
			if !strings.Contains(pe.Message, "no running rlslab instance has lab "+id) {
				t.Errorf("once the owner is gone: %q", pe.Message)
			}
			return true
		}
		t.Fatalf("connecting after the owner died: %v", last)
		return false
	})
	t.Logf("after the owner died: %v", last)
}
