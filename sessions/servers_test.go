package sessions_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
)

// TestLabsOnTwoServers opens one instance with two lab servers (rlslab's
// tables on the first). Labs are made on both: each lab's database is on
// the server the manager says, a run, free play, the server counts and
// the proxy's target of a lab on either work against that server; each
// server has its own spares and its own lease of its budget; a workshop's
// reservation is shared between them; closing the manager drops every
// lab on both.
func TestLabsOnTwoServers(t *testing.T) {
	t.Parallel()
	one, two := pgenvtest.MustStockServer(t), pgenvtest.MustStockServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	admin, err := sessions.OpenAdmin(ctx, one.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := store.Open(ctx, admin, nil); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("two-servers-%d", time.Now().UnixNano()%1e6)
	m, err := sessions.Open(ctx, sessions.Config{AdminURL: one.URL, Admin: admin, Catalog: scenarios.DefaultCatalog(), Spares: 1,
		Shared: admin, Instance: name, LabServers: []string{one.URL, two.URL}})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			m.Close(context.Background())
		}
	}()
	where := m.Servers()
	if len(where) != 2 || where[0] == where[1] {
		t.Fatalf("lab servers %v, want two", where)
	}
	conns, ports := map[string]*pgx.Conn{}, map[string]string{}
	for i, srv := range []string{one.URL, two.URL} {
		c, err := pgx.Connect(ctx, srv)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close(context.Background())
		conns[where[i]], ports[where[i]] = c, fmt.Sprintf("%s:%d", c.Config().Host, c.Config().Port)
	}
	labDBs := func(c *pgx.Conn) (n int) {
		t.Helper()
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname LIKE 'lab\_%'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Each server keeps its own spare and its own lease.
	if r := m.Readiness(); r.Target != 2 {
		t.Errorf("spares wanted %d, want 1 on each server", r.Target)
	}
	var leases int
	if err := admin.QueryRow(ctx, `SELECT count(DISTINCT server) FROM rlslab.leases WHERE instance = $1`, name).Scan(&leases); err != nil || leases != 2 {
		t.Errorf("leases of %s on %d servers (%v), want 2", name, leases, err)
	}
	if c := m.Capacity(); c.MaxConnections != 200 {
		t.Errorf("capacity %+v: want the two servers' summed (max_connections 2 × 100)", c)
	}
	// A workshop expecting six keeps three ready on each server.
	m.Prepare("ws", 6)
	if r := m.Readiness(); r.Target != 8 {
		t.Errorf("spares wanted %d after a workshop of six, want 8", r.Target)
	}
	m.Prepare("ws", 0)

	// Labs on both servers.
	var labs []*sessions.Lab
	on := map[string][]*sessions.Lab{}
	for i := 0; i < 8 && (len(on) < 2 || len(labs) < 4); i++ {
		l, err := m.Create(ctx, fmt.Sprintf("learner-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		s := m.ServerOf(l.ID)
		labs = append(labs, l)
		on[s] = append(on[s], l)
		var here int
		if err := conns[s].QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = $1`, l.Sandbox.Database).Scan(&here); err != nil || here != 1 {
			t.Errorf("lab %s: its database is not on %s, where the manager says it is (%v)", l.ID, s, err)
		}
	}
	if len(on[where[0]]) == 0 || len(on[where[1]]) == 0 {
		t.Fatalf("labs on %d of 2 servers: %v", len(on), on)
	}
	for s, ls := range on {
		l := ls[0]
		// The proxy sends an app to the lab's own server.
		target, err := m.ProxyLookup(ctx, l.ProxyDatabase(), sessions.AppUser)
		if err != nil {
			t.Fatal(err)
		}
		u, err := url.Parse(target.URL)
		if err != nil {
			t.Fatal(err)
		}
		target.Release()
		if got := u.Query().Get("host") + u.Hostname() + ":" + u.Query().Get("port"); got != ports[s] {
			t.Errorf("lab %s on %s: the proxy's target is %s, want %s", l.ID, s, got, ports[s])
		}
		// A run, and free play.
		if err := l.Start(sessions.RunRequest{Scenario: "set-leak", Variant: "session-set", Speed: engine.Speed{Max: true}}); err != nil {
			t.Fatal(err)
		}
		if err := l.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		if st := l.State(ctx); st.Status != engine.StatusDone || st.Outage != "" || st.Server.MaxConnections != 100 {
			t.Errorf("lab %s on %s: status %s, outage %q, server %+v", l.ID, s, st.Status, st.Outage, st.Server)
		}
		if _, err := l.SQL(ctx, sessions.SQLRequest{SQL: "SELECT count(*) FROM invoices", Tenant: "Acme"}); err != nil {
			t.Errorf("free play in lab %s on %s: %v", l.ID, s, err)
		}
	}

	closed = true
	m.Close(ctx)
	for s, c := range conns {
		if n := labDBs(c); n != 0 {
			t.Errorf("%d lab databases left on %s after Close", n, s)
		}
	}
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM rlslab.leases WHERE instance = $1`, name).Scan(&leases); err != nil || leases != 0 {
		t.Errorf("%d leases left after Close (%v)", leases, err)
	}
}
