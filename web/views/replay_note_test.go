package views

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestStatusBarSaysARunIsShownAtItsPace: a replayed run's status bar says
// how long the run took and at what speed it is shown, and carries the
// frame number; a live run's says nothing of the kind.
func TestStatusBarSaysARunIsShownAtItsPace(t *testing.T) {
	render := func(st engine.State) string {
		var buf bytes.Buffer
		if err := StatusBar(NewFrame(st, nil)).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	st := engine.State{Lab: "abc", Status: engine.StatusRunning, Scenario: "set-leak", Variant: "session-set", Speed: "1", Frame: 3,
		Replay: &engine.Replay{RanMS: 212}}
	html := render(st)
	for _, want := range []string{`data-frame="3"`, `data-testid="replay-note"`, `Ran in 212 ms, shown at 1×`} {
		if !strings.Contains(html, want) {
			t.Errorf("status bar of a replayed run lacks %q: %s", want, html)
		}
	}
	st.Replay = nil
	if html := render(st); strings.Contains(html, "replay-note") {
		t.Errorf("status bar of a live run has a replay note: %s", html)
	}
}
