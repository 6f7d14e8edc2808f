package views

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// TestTimelineMarksInferredSettings: an app's setting inferred from the
// statements it sent (inside a transaction) is drawn as a band of its own,
// marked inferred, until a reading of the same value confirms it.
func TestTimelineMarksInferredSettings(t *testing.T) {
	acme := ptr("1")
	app := "lab_x_app"
	st := engine.State{Lab: "x", Scenario: "your-app", Variant: "live", Status: engine.StatusRunning,
		Timeline: &engine.Timeline{AppRole: app, Events: []engine.TimelineEvent{
			{Kind: engine.TimelineConnect, Pool: "app", Slot: 1, PID: 100, Role: app},
			{Kind: engine.TimelineRelease, Pool: "app", Slot: 1, PID: 100, Read: true, Role: app},
			{Kind: engine.TimelineRelease, Pool: "app", Slot: 1, PID: 100, Inferred: true, Tenant: acme, Role: app},
			{Kind: engine.TimelineObserve, Pool: "app", Slot: 1, PID: 100, Inferred: true, Tenant: acme, Role: app, Seq: 1},
			{Kind: engine.TimelineRelease, Pool: "app", Slot: 1, PID: 100, Read: true, Tenant: acme, Role: app},
		}},
		Requests: []engine.RequestRow{{Seq: 1, Pattern: "app", PID: 100, SeenTenant: acme, Role: app, Phase: "done"}},
	}
	d := NewLive(st, tenants).Timeline()
	if d == nil || len(d.Lanes) != 1 {
		t.Fatalf("lanes: %+v", d)
	}
	bands := d.Lanes[0].Bands
	if len(bands) != 3 || bands[0].Inferred || !bands[1].Inferred || bands[2].Inferred {
		t.Fatalf("want a read band, an inferred one, then a confirmed one: %+v", bands)
	}
	if !strings.Contains(bands[1].Title, "inferred") || *bands[1].Tenant != "1" {
		t.Errorf("the inferred band: %+v", bands[1])
	}
}
