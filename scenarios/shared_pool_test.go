package scenarios_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// crowdLabCounts reads, in the lab's database, the tenants and invoices and the
// app role's backends.
func crowdLabCounts(t *testing.T, m *sessions.Manager, lab *sessions.Lab) (tenants, invoices, backends int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := conn.QueryRow(ctx, "SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM invoices)").Scan(&tenants, &invoices); err != nil {
		t.Fatal(err)
	}
	if err := m.Admin().QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = $2",
		lab.Sandbox.Database, lab.Sandbox.AppRole).Scan(&backends); err != nil {
		t.Fatal(err)
	}
	return tenants, invoices, backends
}

// crowdLabObjects reads the roles of the lab and the policies in its database.
func crowdLabObjects(t *testing.T, m *sessions.Manager, lab *sessions.Lab) (roles, policies int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Admin().QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", lab.Sandbox.Database+"%").Scan(&roles); err != nil {
		t.Fatal(err)
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_policies").Scan(&policies); err != nil {
		t.Fatal(err)
	}
	return roles, policies
}

// crowdServedOwnRows checks every request that did not fail got exactly its
// own tenant's three invoices, under its own tenant setting.
func crowdServedOwnRows(t *testing.T, st engine.State) (served int) {
	t.Helper()
	for _, r := range st.Requests {
		if r.Error != "" {
			continue
		}
		served++
		if r.Rows != 3 || r.ForeignRows != 0 || r.Leak || r.SeenTenant == nil || r.Tenant == nil || *r.SeenTenant != *r.Tenant || r.PID == 0 {
			t.Errorf("request #%d: want its own tenant's 3 rows, got %+v", r.Seq, r)
		}
	}
	return served
}

func TestSharedPoolConnPerUserIsRefusedOnEveryRun(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// Two waves, each of more users online at once than the role's
	// CONNECTION LIMIT: both waves run into it.
	const waves = 2
	online := sessions.DefaultConnLimit + 6
	users := waves * online
	params := map[string]string{"users": strconv.Itoa(users), "tenants": "10", "online": strconv.Itoa(online)}
	for run := range 2 {
		st := mustRun(t, lab, "shared-pool", scenarios.SharedPoolConnPerUser, params)
		if st.Status != engine.StatusDone {
			t.Fatalf("run %d: status %q (%s)", run, st.Status, st.Error)
		}
		if len(st.Requests) != users {
			t.Fatalf("run %d: want %d request rows, got %d", run, users, len(st.Requests))
		}
		refused := 0
		want := `too many connections for role "` + lab.Sandbox.AppRole + `"`
		for _, r := range st.Requests {
			if r.Error == "" {
				continue
			}
			refused++
			if r.SQLState != "53300" || !strings.Contains(r.Error, want) {
				t.Errorf("run %d: request #%d failed with %q (SQLSTATE %q), want %s (53300)", run, r.Seq, r.Error, r.SQLState, want)
			}
		}
		served := crowdServedOwnRows(t, st)
		// Every wave has online users against the limit: at least
		// online − limit of them refused per wave.
		if refused < waves*(online-sessions.DefaultConnLimit) || served == 0 || served+refused != users {
			t.Errorf("run %d: served %d, refused %d", run, served, refused)
		}
		if got := mustMetric(t, st, "users refused (53300)"); int(got) != refused {
			t.Errorf("run %d: metric says %v refused, the log %d", run, got, refused)
		}
		if peak := mustMetric(t, st, "peak connections"); peak > sessions.DefaultConnLimit || peak == 0 {
			t.Errorf("run %d: peak connections %v, limit %d", run, peak, sessions.DefaultConnLimit)
		}
		if st.Leaks() != 0 {
			t.Errorf("run %d: %d leaks", run, st.Leaks())
		}
		tenants, invoices, backends := crowdLabCounts(t, m, lab)
		if tenants != 3 || invoices != 9 || backends != 0 {
			t.Errorf("run %d: after the run: %d tenants, %d invoices, %d app-role backends; want 3, 9, 0", run, tenants, invoices, backends)
		}
	}
}

func TestSharedPoolServesEveryUser(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for run := range 2 {
		st := mustRun(t, lab, "shared-pool", scenarios.SharedPoolShared, nil)
		if st.Status != engine.StatusDone {
			t.Fatalf("run %d: status %q (%s)", run, st.Status, st.Error)
		}
		if len(st.Requests) != 300 || st.Errors() != 0 {
			t.Fatalf("run %d: want 300 requests and no error, got %d requests, %d errors", run, len(st.Requests), st.Errors())
		}
		if served := crowdServedOwnRows(t, st); served != 300 {
			t.Errorf("run %d: %d served", run, served)
		}
		pids := map[uint32]bool{}
		tenants := map[string]bool{}
		for _, r := range st.Requests {
			pids[r.PID] = true
			tenants[*r.Tenant] = true
		}
		if len(pids) > 10 || len(tenants) != 30 {
			t.Errorf("run %d: %d backends served %d tenants; want at most 10 backends and 30 tenants", run, len(pids), len(tenants))
		}
		if st.Pool.Max != 10 || st.Pool.Total > 10 {
			t.Errorf("run %d: pool counts %+v", run, st.Pool)
		}
		if got := mustMetric(t, st, "users served"); got != 300 {
			t.Errorf("run %d: users served %v", run, got)
		}
		if got := mustMetric(t, st, "users refused (53300)"); got != 0 {
			t.Errorf("run %d: users refused %v", run, got)
		}
		for _, name := range []string{"requests/s", "latency p50", "latency p99"} {
			if mustMetric(t, st, name) <= 0 {
				t.Errorf("run %d: metric %s not positive", run, name)
			}
		}
		charts := map[string]bool{}
		for _, c := range st.Charts {
			charts[c.Title] = true
		}
		for _, c := range []string{"Connections at the wave's peak", "Requests waiting for a pooled connection (peak)", "Latency of served requests", "Requests served per second"} {
			if !charts[c] {
				t.Errorf("run %d: no chart %q (charts: %v)", run, c, charts)
			}
		}
		if tenants, invoices, _ := crowdLabCounts(t, m, lab); tenants != 3 || invoices != 9 {
			t.Errorf("run %d: after the run: %d tenants, %d invoices; want the seed's 3 and 9", run, tenants, invoices)
		}
	}
}

// TestSharedPoolPoolNeverExceedsTheRoleLimit asks for a pool bigger than the
// role's CONNECTION LIMIT.
func TestSharedPoolPoolNeverExceedsTheRoleLimit(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	st := mustRun(t, lab, "shared-pool", scenarios.SharedPoolShared, map[string]string{"users": "60", "pool": "50", "tenants": "3"})
	if st.Pool.Max != int32(lab.Sandbox.ConnLimit) || st.Errors() != 0 {
		t.Errorf("pool max %d (limit %d), %d errors", st.Pool.Max, lab.Sandbox.ConnLimit, st.Errors())
	}
	crowdServedOwnRows(t, st)
}

// TestSharedPoolCancelledLeavesNothingBehind cancels each variant in its
// first wave, once the run's extra tenants exist and (conn-per-user) the
// users hold their own connections, and checks, without resetting the lab,
// that the tenants, invoices and backends the run added are gone.
func TestSharedPoolCancelledLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	roles0, policies0 := crowdLabObjects(t, m, lab)
	for _, variant := range []string{scenarios.SharedPoolConnPerUser, scenarios.SharedPoolShared} {
		st := cancelAt(t, m, lab, "shared-pool", variant, map[string]string{"tenants": "20"}, narrationStarts("Wave 1"))
		if len(st.Requests) == 0 {
			t.Errorf("%s: cancelled before any request", variant)
		}
		tenants, invoices, backends := crowdLabCounts(t, m, lab)
		roles, policies := crowdLabObjects(t, m, lab)
		if tenants != 3 || invoices != 9 || backends != 0 || roles != roles0 || policies != policies0 {
			t.Errorf("%s: after cancel: %d tenants, %d invoices, %d backends, %d roles, %d policies; want 3, 9, 0, %d, %d",
				variant, tenants, invoices, backends, roles, policies, roles0, policies0)
		}
	}
}
