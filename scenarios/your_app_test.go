package scenarios_test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// readPID matches the PID a your-app request read itself, in its note.
var readPID = regexp.MustCompile(`^Request \d: .* ran on backend (\d+) \(the PID it read itself\) and got (.*)\.$`)

// TestYourAppThroughTheProxy runs the your-app scenario's two variants:
// the seed's four requests, one after the other, from a pgx pool of two
// through a proxy of the run's own, drawn from what the proxy observed.
// Both: two boxes, every statement a row on the one backend whose PID the
// client read for all four requests, the timeline's events on that
// backend. Session-set: the forgetful request's two statements are the
// only leaks, the proxy shows that backend holding Acme's setting, and its
// find got Acme's 3 invoices. Tx-local: no leak, and the forgetful
// request's statements ran under the empty setting, its find got no rows.
func TestYourAppThroughTheProxy(t *testing.T) {
	t.Parallel()
	if scenarios.YourAppID != sessions.AppScenario {
		t.Errorf("the scenario is %q and app sessions are recorded as %q: they would not compare", scenarios.YourAppID, sessions.AppScenario)
	}
	m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, variant := range []string{engine.PatternSessionSet, engine.PatternTxLocal} {
		st := mustRun(t, lab, scenarios.YourAppID, variant, nil)
		if st.Status != engine.StatusDone {
			t.Fatalf("%s: status %q (%s)", variant, st.Status, st.Error)
		}
		// What the client read itself, from the run's notes.
		var pids []string
		var got []string
		for _, n := range st.Notes {
			if m := readPID.FindStringSubmatch(n); m != nil {
				pids, got = append(pids, m[1]), append(got, m[2])
			}
		}
		if len(pids) != 4 || pids[0] == "0" || strings.Count(strings.Join(pids, ","), pids[0]) != 4 {
			t.Fatalf("%s: the four requests read backends %v, want one backend for all (one after the other, the pool gives the last one back): %q", variant, pids, st.Notes)
		}
		pid, _ := strconv.Atoi(pids[0])
		// What the proxy observed.
		boxes := 0
		seenBox := false
		for _, c := range st.Connections {
			if c.Pool == sessions.AppPool {
				boxes++
				seenBox = seenBox || int(c.PID) == pid
			}
		}
		if boxes != 2 || !seenBox {
			t.Errorf("%s: boxes %+v, want the pool's 2 connections, one of them backend %d", variant, st.Connections, pid)
		}
		var forgot []engine.RequestRow
		for _, r := range st.Requests {
			if r.Pattern != sessions.AppPattern || int(r.PID) != pid || (r.Phase != "done" && r.Phase != engine.PhaseCommand) {
				t.Errorf("%s: a statement not drawn as the app's on backend %d: %+v", variant, pid, r)
			}
			if str(r.Tenant) == `"0"` {
				forgot = append(forgot, r)
			} else if r.Leak {
				t.Errorf("%s: a leak outside the forgetful request: %+v", variant, r)
			}
		}
		if len(forgot) != 2 {
			t.Fatalf("%s: %d statements tagged tenant 0, want the forgetful request's 2: %+v", variant, len(forgot), st.Requests)
		}
		timeline := 0
		if st.Timeline != nil {
			for _, ev := range st.Timeline.Events {
				if ev.Pool == sessions.AppPool && int(ev.PID) == pid && ev.Kind == engine.TimelineObserve {
					timeline++
				}
			}
		}
		if timeline != len(st.Requests) {
			t.Errorf("%s: %d statement events on backend %d's timeline, want one per statement (%d)", variant, timeline, pid, len(st.Requests))
		}
		find := forgot[1]
		switch variant {
		case engine.PatternSessionSet:
			for _, r := range forgot {
				if !r.Leak || str(r.SeenTenant) != `"1"` {
					t.Errorf("session-set: the forgetful request's statement %q: leak %v under %s, want a leak under Acme's 1", r.Why, r.Leak, str(r.SeenTenant))
				}
			}
			if find.Rows != 3 || find.ForeignRows != 3 || st.Leaks() != 2 || got[2] != "3 of Acme's invoices" {
				t.Errorf("session-set: the forgetful find got %d rows (%d foreign), the client says %q, %d leaks in all; want Acme's 3, 2 leaks", find.Rows, find.ForeignRows, got[2], st.Leaks())
			}
		case engine.PatternTxLocal:
			for _, r := range forgot {
				if r.Leak || str(r.SeenTenant) != `""` {
					t.Errorf("tx-local: the forgetful request's statement %q: leak %v under %s, want no leak under the empty setting", r.Why, r.Leak, str(r.SeenTenant))
				}
			}
			if find.Rows != 0 || st.Leaks() != 0 || got[2] != "no invoices" {
				t.Errorf("tx-local: the forgetful find got %d rows, the client says %q, %d leaks; want none", find.Rows, got[2], st.Leaks())
			}
		}
		sessionstest.WaitNoBackends(t, m, lab)
	}
}

// str shows a tenant setting: NULL, or the value quoted.
func str(p *string) string {
	if p == nil {
		return "NULL"
	}
	return strconv.Quote(*p)
}
