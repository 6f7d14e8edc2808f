package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// TestFreePlayPanelNamesTheRoleAsTheBoxesDo: the free-play panel's result
// says the request ran "as app", as the pool boxes and the timeline name
// the lab's app role, not as lab_<id>_app.
func TestFreePlayPanelNamesTheRoleAsTheBoxesDo(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, ts)
	code, frag := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/sql", "application/x-www-form-urlencoded", "sql=SELECT+1&tenant=1", "HX-Request", "true")
	if code != http.StatusOK {
		t.Fatalf("free play: %d %s", code, frag)
	}
	if !strings.Contains(frag, "as <code>app</code>") || strings.Contains(frag, "lab_"+lab.ID) {
		t.Errorf("the panel names the role otherwise than the boxes: %s", frag)
	}
}

// TestFreePlayLocalRoleLeavesNothingBehind drives the local-role pattern
// through POST /labs/{id}/sql on a lab that never ran the set-role lesson:
// on a connection left holding Globex, a local-role request as Acme runs as
// Acme's role and sees only Acme's rows, even with the tenant setting
// cleared inside its transaction (the role alone scopes it); the request
// log shows that role; afterwards the connection holds the role and the
// setting it held before. The roles and their policy go when the pool
// closes.
func TestFreePlayLocalRoleLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	ctx := context.Background()
	acmeRole := "lab_" + lab.ID + "_t1"
	globex := postSQL(t, s, c, lab.ID, sqlBody(1, "Globex", "session-set", ""))
	if globex.Error != "" || str(globex.TenantAfter) != "2" || globex.Role != lab.Sandbox.AppRole {
		t.Fatalf("Globex, session-set on connection 1: %+v", globex)
	}
	res := postSQL(t, s, c, lab.ID, sqlBody(1, "Acme", "local-role",
		"SELECT set_config('app.current_tenant', '', true); SELECT id, tenant_id, customer, current_user AS who FROM invoices ORDER BY id"))
	if res.Error != "" || res.Refused || res.PID != globex.PID || res.RowCount != 3 || res.Leak || res.ForeignRows != 0 {
		t.Fatalf("local-role as Acme on connection 1: %+v; want Acme's 3 rows on backend %d", res, globex.PID)
	}
	for _, row := range res.Rows {
		if str(row[1]) != "1" || str(row[3]) != acmeRole {
			t.Errorf("local-role as Acme returned %v; want only tenant 1's rows, read as %s", row, acmeRole)
		}
	}
	// Nothing left behind: role and setting after are as before.
	if str(res.TenantBefore) != "2" || str(res.TenantAfter) != str(res.TenantBefore) || res.Role != globex.Role {
		t.Errorf("local-role: setting %s before, %s after, role %s after; want '2' both times and %s", str(res.TenantBefore), str(res.TenantAfter), res.Role, globex.Role)
	}
	if !strings.Contains(res.Notice, "ran as "+acmeRole) {
		t.Errorf("the notice does not say the query ran as %s: %q", acmeRole, res.Notice)
	}
	st := getState(t, s, lab.ID)
	if row := st.Requests[len(st.Requests)-1]; row.Pattern != "local-role" || row.Role != acmeRole || row.Leak || row.Rows != 3 {
		t.Errorf("request log row of the local-role call: %+v; want role %s, 3 rows, no leak", row, acmeRole)
	}
	next := postSQL(t, s, c, lab.ID, sqlBody(1, "", "forgot", "SELECT current_user::text, current_setting('app.current_tenant', true), current_setting('role'), now() = statement_timestamp()"))
	if next.Error != "" || next.PID != globex.PID || len(next.Rows) != 1 {
		t.Fatalf("the next call on connection 1: %+v", next)
	}
	if r := next.Rows[0]; str(r[0]) != lab.Sandbox.AppRole || str(r[1]) != "2" || str(r[2]) != "none" || str(r[3]) != "t" {
		t.Errorf("connection 1 after local-role: %v; want %s, '2', role none, no transaction open", r, lab.Sandbox.AppRole)
	}
	// A role of another lab, or the owner, stays out of reach.
	other := sessionstest.MustCreateLab(t, s.Labs, "other")
	for _, role := range []string{"lab_" + other.ID + "_t1", lab.Sandbox.OwnerRole} {
		if r := postSQL(t, s, c, lab.ID, sqlBody(1, "", "forgot", "SET ROLE "+role)); !r.Refused {
			t.Errorf("SET ROLE %s: %+v, want a refusal", role, r)
		}
	}
	// The pool closes with the reset: the roles and their policy go.
	if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/reset", "", "", "Accept", ctJSON); code >= 300 {
		t.Fatalf("reset: %d %s", code, body)
	}
	var roles, policies int
	if err := s.Labs.Admin().QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE starts_with(rolname, $1)", "lab_"+lab.ID+"_t").Scan(&roles); err != nil {
		t.Fatal(err)
	}
	conn, release, err := lab.Sandbox.Admin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_policies WHERE policyname = 'tenant_by_role'").Scan(&policies); err != nil {
		t.Fatal(err)
	}
	if roles != 0 || policies != 0 {
		t.Errorf("after the pool closed: %d tenant roles, %d tenant_by_role policies; want none", roles, policies)
	}
}

// TestFreePlaySendsSeveralAtOnce sends one request several times at once,
// from the panel's form and as JSON: each copy is a request of its own on
// the pool, the copies run at the same time (each waits, within the time
// limit, until the other has arrived too), and the answer holds every
// result in order.
func TestFreePlaySendsSeveralAtOnce(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, s)
	code, frag := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", ctForm, "tenant=Acme&times=3&pool_size=2", "HX-Request", "true")
	if code != http.StatusOK || strings.Count(frag, `class="free-play-out`) != 3 {
		t.Fatalf("three at once from the panel: %d %s", code, frag)
	}
	if st := getState(t, s, lab.ID); len(st.Requests) != 3 {
		t.Errorf("three at once: %d requests in the log, want 3", len(st.Requests))
	}
	// A barrier: each copy marks its backend as arrived (application_name,
	// which every backend of the role sees and which stays) and waits for
	// two marked backends (reading pg_stat_activity afresh each time: a
	// transaction otherwise keeps its first reading). Sent one after the other, the first would wait
	// alone until rlslab's time limit.
	mark := "rlslab " + lab.ID + " arrived"
	both := "DO $$ BEGIN PERFORM set_config('application_name', '" + mark + "', false); " +
		"WHILE (SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + mark + "') < 2 LOOP PERFORM pg_sleep(0.01); PERFORM pg_stat_clear_snapshot(); END LOOP; END $$"
	code, out := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", `{"tenant": "Globex", "pattern": "tx-local", "times": 2, "sql": `+strconv.Quote(both)+`}`)
	if code != http.StatusOK {
		t.Fatalf("two at once as JSON: %d %s", code, out)
	}
	var res []sessions.SQLResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(res) != 2 || res[0].Error != "" || res[1].Error != "" || res[0].PID == res[1].PID || res[0].Request == res[1].Request {
		t.Fatalf("two at once: %+v; want both done, on two backends, as two requests", res)
	}
	for _, bad := range []string{`{"pid": 5, "times": 2}`, `{"times": 11}`, `{"tenant": "Umbrella", "times": 2}`} {
		if code, body := do(t, c, "POST", s.URL+"/labs/"+lab.ID+"/sql", "application/json", bad); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", bad, code, body)
		}
	}
}
