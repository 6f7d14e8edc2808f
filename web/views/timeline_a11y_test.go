package views

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestTimelineSummaryNamesTheLeak checks the sentence a screen reader gets
// for the timeline: the backends drawn, and the leaking request with the
// backend it ran on and whose rows it read.
func TestTimelineSummaryNamesTheLeak(t *testing.T) {
	v := NewLive(setLeakState(), tenants)
	got := v.TimelineSummary(v.Timeline())
	want := "The timeline draws 2 backends: 100 (app #1), 200 (app #2). Request 3 (Globex) on backend 100 read 3 rows of Acme."
	if got != want {
		t.Errorf("summary:\n got %q\nwant %q", got, want)
	}
	var buf bytes.Buffer
	if err := TimelinePanel(v).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	for _, s := range []string{`<p id="timeline-summary" class="sr-only">` + want + `</p>`, `aria-describedby="timeline-summary"`} {
		if !strings.Contains(html, s) {
			t.Errorf("the timeline panel lacks %s", s)
		}
	}

	st := setLeakState()
	st.Requests[2].Leak, st.Requests[2].ForeignRows, st.Requests[2].SeenTenant = false, 0, ptr("2")
	v = NewLive(st, tenants)
	if got := v.TimelineSummary(v.Timeline()); !strings.HasSuffix(got, " No request read another tenant's rows.") {
		t.Errorf("summary of a run without a leak: %q", got)
	}
}

// TestTimelineTitlesUseShortRoles checks that the timeline's tooltips name
// the role the way the boxes and the request log do ("app", not
// "lab_x_app").
func TestTimelineTitlesUseShortRoles(t *testing.T) {
	d := NewLive(setLeakState(), tenants).Timeline()
	n := 0
	for _, l := range d.Lanes {
		for _, b := range l.Bands {
			n++
			if strings.Contains(b.Title, "lab_x_") || !strings.HasSuffix(b.Title, " as role app") {
				t.Errorf("band title %q", b.Title)
			}
		}
	}
	if n == 0 {
		t.Fatal("no bands drawn")
	}
}

// TestPresenterChipIsNeutralUntilARunShowsSomething checks the presenter's
// outcome chip: no green "no leak" before a run or while its queries have
// not answered.
func TestPresenterChipIsNeutralUntilARunShowsSomething(t *testing.T) {
	for _, c := range []struct {
		h          Head
		kind, text string
	}{
		{Head{}, ChipNotRun, "not run yet"},
		{Head{Scenario: "set-leak", Status: engine.StatusIdle}, ChipNotRun, "not run yet"},
		{Head{Scenario: "set-leak", Status: engine.StatusQueued}, ChipQueued, "queued"},
		{Head{Scenario: "set-leak", Status: engine.StatusRunning}, ChipRunning, "running"},
		{Head{Scenario: "set-leak", Status: engine.StatusRunning, Requests: 3}, ChipRunning, "running"},
		{Head{Scenario: "set-leak", Status: engine.StatusRunning, Requests: 3, Leaks: 1, Kind: engine.KindLeak}, engine.KindLeak, engine.KindLabel(engine.KindLeak)},
		{Head{Scenario: "set-leak", Status: engine.StatusDone, Requests: 3, Leaks: 2, Kind: engine.KindLeak}, engine.KindLeak, "2 leaks"},
		{Head{Scenario: "set-leak", Status: engine.StatusDone, Requests: 3, Kind: engine.KindNone}, engine.KindNone, engine.KindLabel(engine.KindNone)},
		{Head{Scenario: "side-channels", Status: engine.StatusDone, Requests: 2, Kind: engine.KindBreach}, engine.KindBreach, engine.KindLabel(engine.KindBreach)},
		{Head{Scenario: "set-leak", Status: engine.StatusFailed, Requests: 1, Kind: engine.KindError}, engine.KindError, engine.KindLabel(engine.KindError)},
	} {
		if k, s := c.h.ChipKind(), c.h.Outcome(); k != c.kind || s != c.text {
			t.Errorf("%+v: chip %s %q, want %s %q", c.h, k, s, c.kind, c.text)
		}
	}
}
