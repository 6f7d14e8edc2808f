package scenarios_test

import (
	"context"
	"testing"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

// mustManager opens a lab manager with every scenario (the default
// catalog) on the package's test server.
func mustManager(tb testing.TB) *sessions.Manager {
	tb.Helper()
	return sessionstest.MustOpenManager(tb, sessions.Config{MaxLabs: 2})
}

// mustMetric returns the number of the metric called name in st.
func mustMetric(t *testing.T, st engine.State, name string) float64 {
	t.Helper()
	for _, m := range st.Metrics {
		if m.Name == name {
			return m.Number
		}
	}
	t.Fatalf("no metric %q in %+v", name, st.Metrics)
	return 0
}

// forgetful returns the one request of the run that forgot to scope.
func forgetful(t *testing.T, st engine.State) engine.RequestRow {
	t.Helper()
	var found []engine.RequestRow
	for _, r := range st.Requests {
		if r.Pattern == engine.PatternForgot {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one forgetful request, got %d in %+v", len(found), st.Requests)
	}
	return found[0]
}

// requestOf returns the first request of tenant with pattern.
func requestOf(t *testing.T, st engine.State, tenant, pattern string) engine.RequestRow {
	t.Helper()
	for _, r := range st.Requests {
		if r.Tenant != nil && *r.Tenant == tenant && r.Pattern == pattern {
			return r
		}
	}
	t.Fatalf("no request of tenant %s with pattern %s in %+v", tenant, pattern, st.Requests)
	return engine.RequestRow{}
}

func TestSetLeakSessionSetLeaksOnEveryRun(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, pool := range []string{"2", "3", "2"} {
		st := mustRun(t, lab, "set-leak", "session-set", map[string]string{"pool": pool})
		if st.Status != engine.StatusDone {
			t.Fatalf("pool %s: status %q (%s)", pool, st.Status, st.Error)
		}
		a := requestOf(t, st, "1", engine.PatternSessionSet)
		f := forgetful(t, st)
		if a.Rows != 3 || a.ForeignRows != 0 || a.Leak {
			t.Errorf("pool %s: tenant A's own request: %+v", pool, a)
		}
		if f.PID != a.PID || f.PID == 0 {
			t.Errorf("pool %s: forgetful request ran on backend %d, tenant A scoped backend %d", pool, f.PID, a.PID)
		}
		if !f.Leak || f.ForeignRows != 3 || f.Rows != 3 || f.SeenTenant == nil || *f.SeenTenant != "1" {
			t.Errorf("pool %s: want tenant B's forgetful request to get tenant A's 3 rows under setting '1', got %+v", pool, f)
		}
		if st.Leaks() != 1 {
			t.Errorf("pool %s: want exactly one leak, got %d", pool, st.Leaks())
		}
		if got := len(st.Connections); got != mustAtoi(t, pool) {
			t.Errorf("pool %s: %d connections shown", pool, got)
		}
	}
}

func TestSetLeakLocalVariantsFailClosed(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 4})
	for _, variant := range []string{engine.PatternTxLocal, engine.PatternBatchLocal} {
		t.Run(variant, func(t *testing.T) {
			lab := sessionstest.MustCreateLab(t, m, "owner")
			st := mustRun(t, lab, "set-leak", variant, nil)
			a := requestOf(t, st, "1", variant)
			f := forgetful(t, st)
			if a.Rows != 3 || a.Leak {
				t.Errorf("tenant A's own request: %+v", a)
			}
			if f.PID != a.PID {
				t.Errorf("forgetful request ran on backend %d, want tenant A's backend %d", f.PID, a.PID)
			}
			if f.Rows != 0 || f.Leak || f.Error != "" {
				t.Errorf("want 0 rows and no error for the forgetful request, got %+v", f)
			}
			if f.SeenTenant == nil || *f.SeenTenant != "" {
				t.Errorf("want the setting '' on the reused backend, got %v", f.SeenTenant)
			}
			if st.Leaks() != 0 {
				t.Errorf("want no leak, got %d", st.Leaks())
			}
			for _, c := range st.Connections {
				if c.Tenant != nil && *c.Tenant != "" {
					t.Errorf("connection %d still holds tenant %q after the run", c.PID, *c.Tenant)
				}
			}
		})
	}
}

// TestStatePIDsAreTheServersBackends checks the connections shown on the
// run's last frame (before the lab closes the run's pool) are exactly the
// lab database's app-role backends in pg_stat_activity, and the pool counts
// agree with pgxpool.Stat's view (total = shown connections).
func TestStatePIDsAreTheServersBackends(t *testing.T) {
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 2})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	d := startDirect(t, lab, "set-leak", "session-set", map[string]string{"pool": "3"}, engine.Speed{Max: true})
	if err := d.wait(t); err != nil {
		t.Fatal(err)
	}
	defer d.env.Close()
	st := d.tr.Snapshot()
	rows, err := m.Admin().Query(context.Background(),
		"SELECT pid, coalesce(usename, '') FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' ORDER BY pid", lab.Sandbox.Database)
	if err != nil {
		t.Fatal(err)
	}
	server := map[uint32]string{}
	for rows.Next() {
		var pid int32
		var user string
		if err := rows.Scan(&pid, &user); err != nil {
			t.Fatal(err)
		}
		server[uint32(pid)] = user
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	shown := map[uint32]bool{}
	for _, c := range st.Connections {
		shown[c.PID] = true
		if server[c.PID] != lab.Sandbox.AppRole {
			t.Errorf("shown backend %d is not an app-role backend of %s on the server (server has %v)", c.PID, lab.Sandbox.Database, server)
		}
		if c.Role != lab.Sandbox.AppRole {
			t.Errorf("backend %d: role %q, want %q", c.PID, c.Role, lab.Sandbox.AppRole)
		}
	}
	for pid := range server {
		if !shown[pid] {
			t.Errorf("server backend %d of %s is not shown (shown: %v)", pid, lab.Sandbox.Database, st.Connections)
		}
	}
	if int(st.Pool.Total) != len(st.Connections) || st.Pool.Max != 3 || st.Pool.Idle != 3 || st.Pool.Acquired != 0 {
		t.Errorf("pool counts %+v, %d connections shown", st.Pool, len(st.Connections))
	}
	// The lab's own server counts come from the same view.
	if err := lab.RefreshServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sc, _ := lab.Tracker().Server(); sc.Backends != len(server) || sc.RoleConnectionLimit != sessions.DefaultConnLimit {
		t.Errorf("server counts %+v, pg_stat_activity has %d", sc, len(server))
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}
