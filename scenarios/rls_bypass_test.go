package scenarios_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// onlyRequest returns the request of the run with the given pool and tenant.
func bypassRow(t *testing.T, st engine.State, pool, tenant string) engine.RequestRow {
	t.Helper()
	for _, r := range st.Requests {
		if r.Pool == pool && r.Tenant != nil && *r.Tenant == tenant {
			return r
		}
	}
	t.Fatalf("no request on pool %q for tenant %s in %+v", pool, tenant, st.Requests)
	return engine.RequestRow{}
}

// labLeftovers lists what the lab holds beyond what the sandbox created:
// extra roles with the lab's prefix, extra policies, whether invoices is
// still forced with the original policy, extra tables, memberships of the
// app role, and rows beyond the seed.
func labLeftovers(t *testing.T, m *sessions.Manager, lab *sessions.Lab) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	rows, err := m.Admin().Query(ctx, `SELECT rolname FROM pg_roles WHERE rolname LIKE $1 AND rolname NOT IN ($2, $3)`,
		"lab\\_"+lab.ID+"\\_%", lab.Sandbox.AppRole, lab.Sandbox.OwnerRole)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, "role "+n)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	prow, err := conn.Query(ctx, `SELECT policyname, qual FROM pg_policies WHERE tablename = 'invoices'`)
	if err != nil {
		t.Fatal(err)
	}
	for prow.Next() {
		var name, qual string
		if err := prow.Scan(&name, &qual); err != nil {
			t.Fatal(err)
		}
		if name != "tenant_isolation" || qual != originalQual {
			out = append(out, "policy "+name+": "+qual)
		}
	}
	if prow.Err() != nil {
		t.Fatal(prow.Err())
	}
	var enabled, forced bool
	if err := conn.QueryRow(ctx, `SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'invoices'::regclass`).Scan(&enabled, &forced); err != nil {
		t.Fatal(err)
	}
	if !enabled || !forced {
		out = append(out, "invoices not enabled+forced")
	}
	var tables int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 2 {
		out = append(out, fmt.Sprintf("public tables: %d", tables))
	}
	var members int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1`, lab.Sandbox.AppRole).Scan(&members); err != nil {
		t.Fatal(err)
	}
	if members != 0 {
		out = append(out, "app role is still a member of other roles")
	}
	var tenants, invoices int
	if err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM tenants), (SELECT count(*) FROM invoices)`).Scan(&tenants, &invoices); err != nil {
		t.Fatal(err)
	}
	if tenants != 3 || invoices != 9 {
		out = append(out, fmt.Sprintf("%d tenants and %d invoices, not the seed's 3 and 9", tenants, invoices))
	}
	return out
}

// originalQual is the sandbox's policy as pg_policies shows it.
const originalQual = "(tenant_id = (NULLIF(current_setting('app.current_tenant'::text, true), ''::text))::integer)"

func TestRLSBypassVariants(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	sb := lab.Sandbox
	cases := []struct {
		variant       string
		rows, foreign int
		role          string
		force         bool // FORCE as the query's transaction saw it
	}{
		{"owner", 9, 6, sb.OwnerRole, false},
		{"owner-forced", 3, 0, sb.OwnerRole, true},
		{"superuser", 9, 6, "", true},
		{"bypassrls", 9, 6, "lab_" + lab.ID + "_bypass", true},
		{"owner", 9, 6, sb.OwnerRole, false}, // the owner variant leaks every time, the forced one never
		{"owner-forced", 3, 0, sb.OwnerRole, true},
	}
	for _, c := range cases {
		st := mustRun(t, lab, "rls-bypass", c.variant, nil)
		if st.Status != engine.StatusDone {
			t.Fatalf("%s: status %q (%s)", c.variant, st.Status, st.Error)
		}
		if p := st.Policy; p == nil || p.Table != "invoices" || p.Using != originalQual || !p.Enabled || p.Force != c.force {
			t.Errorf("%s: policy in force %+v, want invoices, enabled, FORCE %v, USING %s", c.variant, p, c.force, originalQual)
		}
		r := bypassRow(t, st, "admin", "1")
		if r.Rows != c.rows || r.ForeignRows != c.foreign || r.Error != "" || r.SeenTenant == nil || *r.SeenTenant != "1" {
			t.Errorf("%s: want %d rows (%d foreign) under setting '1', got %+v", c.variant, c.rows, c.foreign, r)
		}
		if c.role != "" && r.Role != c.role {
			t.Errorf("%s: ran as %q, want %q", c.variant, r.Role, c.role)
		}
		if c.role == "" && (r.Role == sb.OwnerRole || r.Role == sb.AppRole || r.Role == "") {
			t.Errorf("%s: ran as %q, want the superuser", c.variant, r.Role)
		}
		if r.Leak != (c.foreign > 0) || st.Leaks() != bypassCount(c.foreign > 0) {
			t.Errorf("%s: leak %v, leaks %d", c.variant, r.Leak, st.Leaks())
		}
		if r.PID == 0 || len(st.Notes) == 0 {
			t.Errorf("%s: pid %d, notes %v", c.variant, r.PID, st.Notes)
		}
		if left := labLeftovers(t, m, lab); len(left) > 0 {
			t.Errorf("%s left: %v", c.variant, left)
		}
		t.Logf("%s: %v", c.variant, st.Notes)
	}

	st := mustRun(t, lab, "rls-bypass", "app-role", nil)
	if p := st.Policy; p == nil || p.Using != originalQual || !p.Force {
		t.Errorf("app-role: policy in force %+v", p)
	}
	a := bypassRow(t, st, "app", "1")
	if a.Rows != 3 || a.Leak || a.Role != sb.AppRole || a.Error != "" {
		t.Errorf("app-role: want Acme's 3 rows as %s, got %+v", sb.AppRole, a)
	}
	if g := bypassRow(t, st, "app", "2"); g.Rows != 0 || g.Leak || g.SeenTenant == nil || *g.SeenTenant != "" {
		t.Errorf("app-role: the unscoped request after it: %+v", g)
	}

	st = mustRun(t, lab, "rls-bypass", "row-security-off", nil)
	r := bypassRow(t, st, "app", "1")
	if r.SQLState != "42501" || !strings.Contains(r.Error, `query would be affected by row-level security policy for table "invoices"`) || r.Rows != 0 {
		t.Errorf("row-security-off: want 42501, got %+v", r)
	}

	t.Logf("row-security-off: %v", st.Notes)
	st = mustRun(t, lab, "rls-bypass", "insert-foreign", nil)
	r = bypassRow(t, st, "app", "1")
	if r.SQLState != "42501" || !strings.Contains(r.Error, `new row violates row-level security policy for table "invoices"`) || r.PID == 0 {
		t.Errorf("insert-foreign: want 42501, got %+v", r)
	}
	if g := bypassRow(t, st, "app", "2"); g.Rows != 3 || g.Leak {
		t.Errorf("insert-foreign: Globex afterwards: %+v", g)
	}

	t.Logf("insert-foreign: %v", st.Notes)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lab.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if left := labLeftovers(t, m, lab); len(left) > 0 {
		t.Errorf("after reset: %v", left)
	}
}

func TestRLSBypassCancelledLeavesNothing(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	// bypassrls: the role exists in the open transaction. owner: the table
	// is unforced in the open transaction.
	cancelAt(t, m, lab, "rls-bypass", "bypassrls", nil, narrationStarts("GRANT USAGE"))
	cancelAt(t, m, lab, "rls-bypass", "owner", nil, narrationStarts("SET LOCAL ROLE"))
}

func bypassCount(b bool) int {
	if b {
		return 1
	}
	return 0
}
