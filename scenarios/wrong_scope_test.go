package scenarios_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestWrongScopeGlobalGivesAnotherTenantsRowsOnEveryRun(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, delay := range []string{"0", "40", "0"} {
		st := mustRun(t, lab, "wrong-scope", scenarios.WrongScopeGlobal, map[string]string{"delay_ms": delay})
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("delay %s: status %q (%s), %d requests", delay, st.Status, st.Error, len(st.Requests))
		}
		first, second := st.Requests[0], st.Requests[1]
		if *first.Tenant != "1" || *second.Tenant != "2" {
			t.Fatalf("delay %s: want requests of tenants 1 and 2, got %s and %s", delay, *first.Tenant, *second.Tenant)
		}
		if !first.Leak || first.Rows != 3 || first.ForeignRows != 3 || first.SeenTenant == nil || *first.SeenTenant != "2" {
			t.Errorf("delay %s: want Acme's request to run under '2' and get Globex's 3 rows, got %+v", delay, first)
		}
		if second.Leak || second.Rows != 3 || second.SeenTenant == nil || *second.SeenTenant != "2" {
			t.Errorf("delay %s: want Globex's request to get its own 3 rows, got %+v", delay, second)
		}
		if st.Leaks() != 1 {
			t.Errorf("delay %s: want 1 leak, got %d", delay, st.Leaks())
		}
		// The shared field over time: #1 wrote Acme, #2 overwrote it with
		// Globex, and both read Globex back before their queries.
		var got []string
		for _, f := range st.SharedField {
			verb := "read"
			if f.Wrote {
				verb = "wrote"
			}
			got = append(got, fmt.Sprintf("#%d %s %s", f.Seq, verb, f.Value))
			if f.At == 0 {
				t.Errorf("delay %s: reading %+v has no time", delay, f)
			}
		}
		if want := []string{"#1 wrote 1", "#2 wrote 2", "#1 read 2", "#2 read 2"}; !slices.Equal(got, want) {
			t.Errorf("delay %s: shared field %v, want %v", delay, got, want)
		}
		for _, r := range st.Requests {
			if r.Pattern != engine.PatternTxLocal {
				t.Errorf("delay %s: request #%d labelled %q: it scopes with BEGIN; set_config(..., true)", delay, r.Seq, r.Pattern)
			}
		}
	}
}

func TestWrongScopeContextKeepsEachTenant(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, delay := range []string{"0", "40", "0"} {
		st := mustRun(t, lab, "wrong-scope", scenarios.WrongScopeContext, map[string]string{"delay_ms": delay})
		if st.Status != engine.StatusDone || len(st.Requests) != 2 {
			t.Fatalf("delay %s: status %q (%s), %d requests", delay, st.Status, st.Error, len(st.Requests))
		}
		if len(st.SharedField) != 0 {
			t.Errorf("delay %s: no shared field in this variant, got %+v", delay, st.SharedField)
		}
		for _, r := range st.Requests {
			if r.Leak || r.Error != "" || r.Rows != 3 || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
				t.Errorf("delay %s: request #%d: want its own 3 rows, got %+v", delay, r.Seq, r)
			}
		}
	}
}

func TestWrongScopeConnPerUserRunsOutOfConnections(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	params := map[string]string{"users": "6", "pool": "3", "acquire_timeout_ms": "200"}
	for run := range 2 {
		start := time.Now()
		st := mustRun(t, lab, "wrong-scope", scenarios.WrongScopeConnPerUser, params)
		if st.Status != engine.StatusDone {
			t.Fatalf("run %d: status %q (%s)", run, st.Status, st.Error)
		}
		if took := time.Since(start); took < 200*time.Millisecond {
			t.Errorf("run %d: took %s, less than the acquire timeout", run, took)
		}
		var held, refused, perRequest []engine.RequestRow
		for _, r := range st.Requests {
			switch {
			case r.Pattern == scenarios.WrongScopeContext:
				perRequest = append(perRequest, r)
			case r.Error != "":
				refused = append(refused, r)
			default:
				held = append(held, r)
			}
		}
		if len(held) != 3 || len(refused) != 3 || len(perRequest) != 6 {
			t.Fatalf("run %d: want 3 held, 3 refused, 6 per-request rows; got %d, %d, %d: %+v", run, len(held), len(refused), len(perRequest), st.Requests)
		}
		pids := map[uint32]bool{}
		for _, r := range held {
			pids[r.PID] = true
			if r.Leak || r.Rows != 3 || r.SeenTenant == nil || *r.SeenTenant != *r.Tenant {
				t.Errorf("run %d: held user's request: want its own 3 rows, got %+v", run, r)
			}
		}
		if len(pids) != 3 {
			t.Errorf("run %d: want the 3 logged-in users on 3 different backends, got %v", run, pids)
		}
		for _, r := range refused {
			if !strings.Contains(r.Error, "context deadline exceeded") || r.SQLState != "" || r.Rows != 0 {
				t.Errorf("run %d: refused user: want an acquire timeout, got %+v", run, r)
			}
		}
		for _, r := range perRequest {
			if r.Error != "" || r.Leak || r.Rows != 3 || !pids[r.PID] {
				t.Errorf("run %d: per-request: want own 3 rows on one of the pool's backends %v, got %+v", run, pids, r)
			}
		}
		if got := mustMetric(t, st, "most requests waiting in Acquire"); got != 3 {
			t.Errorf("run %d: most waiting %v, want 3", run, got)
		}
		if got := mustMetric(t, st, "acquires timed out"); got != 3 {
			t.Errorf("run %d: timed out %v, want 3", run, got)
		}
		if got := mustMetric(t, st, "pool: cancelled acquires (pgxpool.Stat)"); got != 3 {
			t.Errorf("run %d: pgxpool cancelled acquires %v, want 3", run, got)
		}
		if got := mustMetric(t, st, "per-request: users served"); got != 6 {
			t.Errorf("run %d: per-request served %v, want 6", run, got)
		}
		if got := mustMetric(t, st, "held connections idle on the server"); got != 2 {
			t.Errorf("run %d: idle held backends on the server %v, want 2 (the third ran the count)", run, got)
		}
		if st.Pool.Max != 3 || st.Pool.Total != 3 || len(st.Connections) != 3 {
			t.Errorf("run %d: pool %+v, %d connections shown", run, st.Pool, len(st.Connections))
		}
	}
}

func TestWrongScopeRejectsParamsOutOfBounds(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	for _, p := range []map[string]string{{"users": "51"}, {"users": "1"}, {"delay_ms": "2001"}, {"delay_ms": "-1"}, {"pool": "9"}, {"acquire_timeout_ms": "50"}} {
		err := lab.Start(sessions.RunRequest{Scenario: "wrong-scope", Variant: scenarios.WrongScopeConnPerUser, Speed: engine.Speed{Max: true}, Params: p})
		var e *rlslab.Error
		if !errors.As(err, &e) || rlslab.ErrorCode(err) != rlslab.EINVALID {
			t.Errorf("params %v: want EINVALID, got %v", p, err)
		}
	}
}

func TestWrongScopeLeavesNothingBehind(t *testing.T) {
	t.Parallel()
	m := mustManager(t)
	lab := sessionstest.MustCreateLab(t, m, "owner")
	small := map[string]string{"users": "4", "pool": "2", "acquire_timeout_ms": "100", "delay_ms": "0"}
	for _, v := range scenarios.WrongScope().VariantNames() {
		p4CheckClean(t, m, lab, "wrong-scope", v, small)
	}
	// Cancelled while logged-in users hold the pool's connections.
	checkCancel(t, m, lab, "wrong-scope", scenarios.WrongScopeConnPerUser, map[string]string{"users": "4", "pool": "2", "acquire_timeout_ms": "100"},
		narrationStarts("User 2's connection is scoped once"))
}
