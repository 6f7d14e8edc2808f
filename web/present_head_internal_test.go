package web

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
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
		{engine.State{Scenario: "set-leak", Variant: "session-set", Status: engine.StatusDone}, "Why SET leaks"},
		{engine.State{Status: engine.StatusIdle}, ""},
	} {
		if got := headOf(cat, c.st).Title; c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("%s: head title %q, want one with %q", c.st.Scenario, got, c.want)
		}
	}
}
