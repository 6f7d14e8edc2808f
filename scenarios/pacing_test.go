package scenarios_test

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestEveryScenarioSaysItsPacing checks that every scenario of the catalog
// says how a run at a teaching pace uses its connections: replayed from a
// run at full speed, or live with a reason. A new scenario that says
// neither fails here.
func TestEveryScenarioSaysItsPacing(t *testing.T) {
	replay, live := 0, 0
	for _, sc := range scenarios.DefaultCatalog().All() {
		switch sc.Pacing {
		case engine.PacingReplay:
			replay++
			if sc.LiveWhy != "" {
				t.Errorf("%s is replayed but says why it plays live: %q", sc.ID, sc.LiveWhy)
			}
		case engine.PacingLive:
			live++
			if strings.TrimSpace(sc.LiveWhy) == "" {
				t.Errorf("%s plays live but does not say why (LiveWhy)", sc.ID)
			}
		default:
			t.Errorf("%s says no pacing (%q): want engine.PacingReplay or engine.PacingLive", sc.ID, sc.Pacing)
		}
	}
	// Lesson 1 is what a room runs together: it must not hold connections
	// for the whole paced run.
	sc, err := scenarios.DefaultCatalog().Lookup("set-leak")
	if err != nil {
		t.Fatal(err)
	}
	if !sc.Replayable(engine.Speed{Factor: 1}) || sc.Replayable(engine.Speed{Single: true}) || sc.Replayable(engine.Speed{Max: true}) {
		t.Errorf("set-leak: replayable at 1× %v, in single-step mode %v, at full speed %v; want true, false, false",
			sc.Replayable(engine.Speed{Factor: 1}), sc.Replayable(engine.Speed{Single: true}), sc.Replayable(engine.Speed{Max: true}))
	}
	t.Logf("%d scenarios replayed, %d live", replay, live)
}
