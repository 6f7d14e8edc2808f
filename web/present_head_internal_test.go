package web

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// TestPresenterHeadNamesFreePlay: the presenter's head names what the lab
// runs, free play and a learner's app included (the your-app scenario's
// runs by their own title), and says "Nothing has run"
// only when nothing has (it said so over a free-play request).
func TestPresenterHeadNamesFreePlay(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	for _, c := range []struct {
		st   engine.State
		want string
	}{
		{engine.State{Scenario: sessions.FreePlayScenario, Variant: "pool", Status: engine.StatusRunning}, "Free play"},
		{engine.State{Scenario: sessions.AppScenario, Variant: sessions.AppVariant, Status: engine.StatusRunning}, "An app of one's own"},
		{engine.State{Scenario: sessions.AppScenario, Variant: engine.PatternSessionSet, Status: engine.StatusDone}, "the seed's requests"},
		{engine.State{Scenario: "set-leak", Variant: "session-set", Status: engine.StatusDone}, "SET and the next request"},
		{engine.State{Status: engine.StatusIdle}, ""},
	} {
		if got := headOf(cat, c.st).Title; c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: head title %q, want one with %q", c.st.Scenario, got, c.want)
		}
	}
}

// TestPresenterChipSaysWhatTheBarSays builds the presenter's head and the
// outcome bar from the same states (before a run, queued, running with
// nothing queried, free play that failed closed so far, a leak while
// running, finished runs of every ending, a failed and a cancelled run)
// and finds the chip naming the bar's kind in each: the two read one
// outcome model. Before a run the chip says "not run" where the bar says
// "idle"; nothing else may differ.
func TestPresenterChipSaysWhatTheBarSays(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	s := func(v string) *string { return &v }
	own := engine.RequestRow{Seq: 1, Tenant: s("1"), PID: 10, SeenTenant: s("1"), Rows: 3, Phase: "released", FinishedAt: 1}
	closed := engine.RequestRow{Seq: 2, Tenant: s("2"), Pattern: "forgot", PID: 10, SeenTenant: s(""), Phase: "released", FinishedAt: 2}
	leak := engine.RequestRow{Seq: 3, Tenant: s("2"), Pattern: "forgot", PID: 10, SeenTenant: s("1"), Rows: 3, ForeignRows: 3, Leak: true, Phase: "released", FinishedAt: 3}
	failed := engine.RequestRow{Seq: 4, Tenant: s("1"), PID: 11, SeenTenant: s("1"), Error: "ERROR: syntax error (SQLSTATE 42601)", Phase: "released", FinishedAt: 4}
	started := engine.RequestRow{Seq: 5, Tenant: s("1"), PID: 11, Phase: "query"}
	run := func(status string, rows ...engine.RequestRow) engine.State {
		return engine.State{Scenario: "set-leak", Variant: "session-set", Status: status, Requests: rows}
	}
	free := func(status string, rows ...engine.RequestRow) engine.State {
		st := run(status, rows...)
		st.Scenario, st.Variant = sessions.FreePlayScenario, "pool"
		return st
	}
	cancelled := run(engine.StatusCancelled, own)
	cancelled.Error = "reset"
	queued := run(engine.StatusQueued)
	queued.Queue = &engine.Queue{Need: 3, Ahead: 1}
	broke := run(engine.StatusFailed)
	broke.Error = "the lab's database went away"
	for name, st := range map[string]engine.State{
		"idle":                          {Status: engine.StatusIdle},
		"queued":                        queued,
		"running, nothing queried":      run(engine.StatusRunning, started),
		"running, own rows so far":      run(engine.StatusRunning, own),
		"free play, failed closed":      free(engine.StatusRunning, closed),
		"free play, own and closed":     free(engine.StatusRunning, own, closed),
		"free play, an error":           free(engine.StatusRunning, failed),
		"running, a leak":               run(engine.StatusRunning, own, leak),
		"done, own rows":                run(engine.StatusDone, own),
		"done, failed closed":           run(engine.StatusDone, own, closed),
		"done, a leak":                  run(engine.StatusDone, own, closed, leak),
		"done, an error":                run(engine.StatusDone, own, failed),
		"failed, with clean requests":   run(engine.StatusFailed, own),
		"failed before any request":     broke,
		"cancelled, with clean request": cancelled,
	} {
		bar := views.NewLive(st, nil).Outcome().Kind
		chip := headOf(cat, st).ChipKind()
		if bar == "idle" && chip == views.ChipNotRun {
			continue
		}
		if chip != bar {
			t.Errorf("%s: the chip says %q, the bar %q", name, chip, bar)
		}
	}
}
