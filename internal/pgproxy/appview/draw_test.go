package appview

import (
	"testing"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// openedDrawer returns a drawer of a lab with one tenant, its tracker, and
// the app connection it has drawn opened.
func openedDrawer() (*Drawer, *engine.Tracker, pgproxy.ConnInfo) {
	sb := engine.Sandbox{Lab: "l", AppRole: "lab_app", Tenants: []engine.Tenant{{ID: 1, Name: "Acme"}}}
	tr := engine.NewTracker("l", sb.Tenants)
	tr.Begin("your-app", "live", "")
	d := New(engine.NewEnv(sb, nil, tr, engine.NewPace(engine.Speed{Max: true}), nil), Options{Max: 2})
	c := pgproxy.ConnInfo{ID: 1, PID: 100}
	d.Opened(c)
	return d, tr, c
}

// TestRoleInferredIsDrawnInferred: a role the proxy inferred from a SET
// ROLE (not yet read) shows on the box at once, and its timeline event is
// marked inferred, like an inferred tenant setting; the reading that
// confirms it is drawn as read.
func TestRoleInferredIsDrawnInferred(t *testing.T) {
	d, tr, c := openedDrawer()
	read := pgproxy.Setting{Known: true, Value: "1", Role: "lab_app"}
	d.Setting(c, read)
	inferred := read
	inferred.Role, inferred.RoleInferred = "tenant_acme", true
	d.Setting(c, inferred)
	confirmed := inferred
	confirmed.RoleInferred = false
	d.Setting(c, confirmed)
	st := tr.Snapshot()
	if len(st.Connections) != 1 || st.Connections[0].Role != "tenant_acme" {
		t.Fatalf("boxes %+v, want one as tenant_acme", st.Connections)
	}
	var got []engine.TimelineEvent
	for _, ev := range st.Timeline.Events {
		if ev.Kind == engine.TimelineRelease {
			got = append(got, ev)
		}
	}
	if len(got) != 3 || got[0].Inferred || !got[0].Read || !got[1].Inferred || got[1].Read || got[1].Role != "tenant_acme" || got[2].Inferred || !got[2].Read {
		t.Errorf("timeline %+v, want read lab_app, inferred tenant_acme, read tenant_acme", got)
	}
	if pc := d.Counts(); pc.Total != 1 || pc.Idle != 1 || pc.Max != 2 {
		t.Errorf("counts %+v", pc)
	}
}

// TestCommandsAreNotJudgedAsQueries: an app's SET and its client's ping
// return no rows by their nature; they are drawn as commands, and a
// session of such commands and one query with its own rows is "no leak",
// not "failed closed" (a psql session was badged failed closed for its SET).
func TestCommandsAreNotJudgedAsQueries(t *testing.T) {
	d, tr, c := openedDrawer()
	set := pgproxy.Setting{Known: true, Value: "1", Role: "lab_app"}
	for i, st := range []struct {
		sql     string
		columns []string
		rows    int
	}{
		{"SET app.current_tenant = '1'", nil, 0},
		{";", nil, 0},
		{"SELECT id, tenant_id FROM invoices", []string{"id", "tenant_id"}, 3},
	} {
		id := uint64(i + 1)
		d.Sent(c, pgproxy.Statement{ID: id, Text: st.sql})
		d.Finished(c, pgproxy.Result{ID: id, Text: st.sql, Columns: st.columns, Rows: st.rows, TenantColumn: st.columns != nil, Tenant: "1", Setting: set})
	}
	state := tr.Snapshot()
	if len(state.Requests) != 3 || state.Requests[0].Phase != engine.PhaseCommand || state.Requests[1].Phase != engine.PhaseCommand || state.Requests[2].Phase == engine.PhaseCommand {
		t.Fatalf("requests %+v, want two commands and a query", state.Requests)
	}
	if v := engine.Judge(state, nil); v.Kind != engine.KindNone {
		t.Errorf("verdict %+v, want no leak (the commands' 0 rows are not a refusal)", v)
	}
}

// TestTagText: a request's sentence names what the command tag counted, not
// the tag ("SELECT 1" read like the query SELECT 1).
func TestTagText(t *testing.T) {
	for tag, want := range map[string]string{
		"SELECT 1": "1 row", "SELECT 3": "3 rows", "INSERT 0 2": "2 rows inserted", "DELETE 4": "4 rows deleted",
		"UPDATE 1": "1 row updated", "SET": "SET", "": "an empty statement (a client's ping)",
	} {
		if got := tagText(tag); got != want {
			t.Errorf("tagText(%q) = %q, want %q", tag, got, want)
		}
	}
}
