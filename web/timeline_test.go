package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
	"github.com/rlslab/rlslab/web/views"
)

// drawTimeline renders st's timeline, after a trip through JSON as a
// recording would store it, and checks that the drawing is the same.
func drawTimeline(t *testing.T, st engine.State) *views.TimelineDrawing {
	t.Helper()
	render := func(s engine.State) string {
		var buf bytes.Buffer
		if err := views.TimelinePanel(views.NewLive(s, sessions.Tenants())).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var stored engine.State
	if err := json.Unmarshal(b, &stored); err != nil {
		t.Fatal(err)
	}
	if live, replay := render(st), render(stored); live != replay {
		t.Errorf("the timeline of a stored state differs from the live one")
	}
	d := views.NewLive(stored, sessions.Tenants()).Timeline()
	if d == nil {
		t.Fatalf("%s/%s: no timeline", st.Scenario, st.Variant)
	}
	return d
}

// checkRoles checks that every request whose query returned carries the
// role it ran as.
func checkRoles(t *testing.T, st engine.State) {
	t.Helper()
	for _, r := range st.Requests {
		if r.FinishedAt != 0 && r.Role == "" {
			t.Errorf("%s/%s: request #%d returned rows but has no role: %+v", st.Scenario, st.Variant, r.Seq, r)
		}
	}
}

// TestTimelineOfRealRuns draws the timeline of real runs: split-calls'
// set_config and query on two backends joined by an arrow, and PgBouncer's
// requests on the server that ran their query.
func TestTimelineOfRealRuns(t *testing.T) {
	t.Parallel()
	labs := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1})
	lab := sessionstest.MustCreateLab(t, labs, "timeline-owner-00000000000000000")

	t.Run("split-calls", func(t *testing.T) {
		st := sessionstest.MustRun(t, lab, "split-calls", "split", nil)
		checkRoles(t, st)
		d := drawTimeline(t, st)
		blocks := map[int][]views.TLBlock{}
		lanes := map[uint32]bool{}
		for _, l := range d.Lanes {
			lanes[l.PID] = true
			for _, b := range l.Blocks {
				if b.PID != l.PID {
					t.Errorf("block of request #%d for backend %d drawn on lane %d", b.Seq, b.PID, l.PID)
				}
				blocks[b.Seq] = append(blocks[b.Seq], b)
			}
		}
		arrows := map[int]views.TLArrow{}
		for _, a := range d.Arrows {
			arrows[a.Seq] = a
		}
		for _, r := range st.Requests {
			var call, query *views.TLBlock
			for i, b := range blocks[r.Seq] {
				if b.Observed {
					query = &blocks[r.Seq][i]
				} else {
					call = &blocks[r.Seq][i]
				}
			}
			if call == nil || query == nil {
				t.Errorf("request #%d: want a block for its set_config call and one for its query: %+v", r.Seq, blocks[r.Seq])
				continue
			}
			if query.PID != r.PID || query.Leak != r.Leak {
				t.Errorf("request #%d: query block on %d (leak %t), the request log says %d (leak %t)", r.Seq, query.PID, query.Leak, r.PID, r.Leak)
			}
			a, ok := arrows[r.Seq]
			switch {
			case call.PID != query.PID && !ok:
				t.Errorf("request #%d: set_config on %d, query on %d, and no arrow", r.Seq, call.PID, query.PID)
			case ok && (a.X1 != call.X+call.W || a.X2 != query.X):
				t.Errorf("request #%d: the arrow %+v does not join the call %+v to the query %+v", r.Seq, a, call, query)
			}
		}
		if len(d.Arrows) != len(st.Requests) || len(lanes) != 2 {
			t.Errorf("split: %d arrows for %d requests on %d lanes; the scenario puts every query on another backend of 2", len(d.Arrows), len(st.Requests), len(lanes))
		}
	})

	t.Run("pgbouncer-tx", func(t *testing.T) {
		st, err := sessionstest.Run(lab, "pgbouncer-tx", engine.PatternSessionSet, nil)
		if err != nil {
			t.Skipf("pgbouncer-tx did not run here: %v", err)
		}
		checkRoles(t, st)
		d := drawTimeline(t, st)
		onLane := map[int]uint32{}
		onClient := map[int]string{}
		serverY := map[uint32]float64{}
		var clients []string
		for _, l := range d.Lanes {
			switch l.Kind {
			case views.LaneBackend:
				if l.Label != "server, via PgBouncer" {
					t.Errorf("lane %d is labelled %q", l.PID, l.Label)
				}
				serverY[l.PID] = l.Y
				for _, b := range l.Blocks {
					onLane[b.Seq] = l.PID
				}
			case views.LaneClient:
				clients = append(clients, l.Client)
				for _, b := range l.Blocks {
					onClient[b.Seq] = l.Client
				}
			default:
				t.Errorf("a %s lane in a PgBouncer run", l.Kind)
			}
		}
		// One lane per client connection (each app instance has one), each
		// request on its client's lane, joined to the server lane its query
		// ran on.
		if want := []string{"app-1 #1", "app-2 #1", "app-3 #1"}; !slices.Equal(clients, want) {
			t.Errorf("client lanes %v, want %v", clients, want)
		}
		pairs := map[int]views.TLArrow{}
		for _, p := range d.Pairs {
			pairs[p.Seq] = p
		}
		for _, r := range st.Requests {
			if r.FinishedAt != 0 && onLane[r.Seq] != r.PID {
				t.Errorf("request #%d ran its query on server %d, drawn on %d", r.Seq, r.PID, onLane[r.Seq])
			}
			if onClient[r.Seq] != r.Pool+" #1" {
				t.Errorf("request #%d was sent by %s, drawn on client lane %q", r.Seq, r.Pool, onClient[r.Seq])
			}
			if p, ok := pairs[r.Seq]; !ok || p.Y2 != serverY[r.PID]+4 {
				t.Errorf("request #%d: pair line %+v does not reach server lane %d (y %v)", r.Seq, p, r.PID, serverY[r.PID])
			}
		}
		if len(d.Arrows) != 0 {
			t.Errorf("PgBouncer: %d arrows; a client's last reading names no server, so none are drawn", len(d.Arrows))
		}
	})
}
