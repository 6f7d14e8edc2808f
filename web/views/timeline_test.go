package views

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// setLeakState is the state a set-leak session-set run ends with on a
// pool of two: Acme scopes backend 100 with a session-level SET and
// releases it; Globex forgets to scope, gets backend 100 and Acme's rows.
func setLeakState() engine.State {
	acme, globex, initech := ptr("1"), ptr("2"), ptr("3")
	app := "lab_x_app"
	ev := func(kind string, slot int, pid uint32, read bool, tenant *string, seq int) engine.TimelineEvent {
		return engine.TimelineEvent{Kind: kind, Pool: "app", Slot: slot, PID: pid, Read: read, Tenant: tenant, Role: app, Seq: seq}
	}
	return engine.State{Lab: "x", Status: engine.StatusDone, Scenario: "set-leak", Variant: "session-set",
		Timeline: &engine.Timeline{AppRole: app, Events: []engine.TimelineEvent{
			ev(engine.TimelineConnect, 1, 100, true, nil, 0),
			ev(engine.TimelineConnect, 2, 200, true, nil, 0),
			ev(engine.TimelineAcquire, 1, 100, false, nil, 1),
			ev(engine.TimelineAcquire, 2, 200, false, nil, 2),
			ev(engine.TimelineObserve, 0, 100, true, acme, 1),
			ev(engine.TimelineRelease, 1, 100, true, acme, 0),
			ev(engine.TimelineAcquire, 1, 100, false, acme, 3),
			ev(engine.TimelineObserve, 0, 100, true, acme, 3),
			ev(engine.TimelineRelease, 1, 100, true, acme, 0),
			ev(engine.TimelineObserve, 0, 200, true, initech, 2),
			ev(engine.TimelineRelease, 2, 200, true, initech, 0),
		}},
		Requests: []engine.RequestRow{
			{Seq: 1, Tenant: acme, Pattern: "session-set", PID: 100, SeenTenant: acme, Role: app, Rows: 3, FinishedAt: 1, Phase: "released"},
			{Seq: 2, Tenant: initech, Pattern: "session-set", PID: 200, SeenTenant: initech, Role: app, Rows: 3, FinishedAt: 3, Phase: "released"},
			{Seq: 3, Tenant: globex, Pattern: "forgot", PID: 100, SeenTenant: acme, Role: app, Rows: 3, ForeignRows: 3, Leak: true, FinishedAt: 2, Phase: "released"},
		},
	}
}

var tenants = []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}, {ID: 3, Name: "Initech"}}

func TestTimelinePutsTheForgetfulRequestOnTheLaneAcmeScoped(t *testing.T) {
	d := NewLive(setLeakState(), tenants).Timeline()
	if d == nil || len(d.Lanes) != 2 || d.Lanes[0].PID != 100 || d.Lanes[1].PID != 200 {
		t.Fatalf("lanes: %+v", d)
	}
	lane := d.Lanes[0]
	var forgot *TLBlock
	for i, b := range lane.Blocks {
		if b.Seq == 3 {
			forgot = &lane.Blocks[i]
		}
	}
	if forgot == nil || !forgot.Leak || *forgot.Tenant != "2" || !strings.Contains(forgot.Text, "LEAK") {
		t.Fatalf("the forgetful request's block on backend 100: %+v", lane.Blocks)
	}
	mid := forgot.X + forgot.W/2
	var under *TLBand
	for i, b := range lane.Bands {
		if b.X <= mid && mid < b.X+b.W {
			under = &lane.Bands[i]
		}
	}
	if under == nil || under.Tenant == nil || *under.Tenant != "1" || under.Text != "Acme" {
		t.Fatalf("the band under the forgetful request is %+v, want Acme's", under)
	}
	// Acme's own block starts where the backend still held NULL.
	if lane.Bands[0].Tenant != nil {
		t.Errorf("the first band of backend 100 is %v, want NULL (read at connect)", *lane.Bands[0].Tenant)
	}
}

func TestTimelineDrawsASplitRequestsArrow(t *testing.T) {
	acme := ptr("1")
	st := engine.State{Lab: "x", Timeline: &engine.Timeline{AppRole: "app", Events: []engine.TimelineEvent{
		{Kind: engine.TimelineConnect, Pool: "app", Slot: 1, PID: 100, Read: true, Role: "app"},
		{Kind: engine.TimelineConnect, Pool: "app", Slot: 2, PID: 200, Read: true, Role: "app"},
		{Kind: engine.TimelineAcquire, Pool: "app", Slot: 1, PID: 100, Seq: 1},
		{Kind: engine.TimelineRelease, Pool: "app", Slot: 1, PID: 100, Read: true, Tenant: acme, Role: "app"},
		{Kind: engine.TimelineAcquire, Pool: "app", Slot: 2, PID: 200, Seq: 1},
		{Kind: engine.TimelineObserve, Pool: "app", PID: 200, Read: true, Role: "other_role", Seq: 1},
		{Kind: engine.TimelineRelease, Pool: "app", Slot: 2, PID: 200, Read: true, Role: "app"},
	}}, Requests: []engine.RequestRow{{Seq: 1, Tenant: acme, Pattern: "split", PID: 200, FinishedAt: 1, Phase: "released"}}}
	d := NewLive(st, tenants).Timeline()
	if len(d.Arrows) != 1 || d.Arrows[0].X1 >= d.Arrows[0].X2 || d.Arrows[0].Y1 >= d.Arrows[0].Y2 {
		t.Fatalf("arrows %+v", d.Arrows)
	}
	roles := 0
	for _, b := range d.Lanes[1].Bands {
		if b.Role == "other_role" {
			roles++
		}
	}
	if roles != 1 {
		t.Errorf("the reading under another role is not marked: %+v", d.Lanes[1].Bands)
	}
	var buf bytes.Buffer
	if err := LiveView(NewLive(st, tenants)).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `class="tl-arrow" data-seq="1"`) {
		t.Error("the arrow is not drawn")
	}
}

func TestOutcomeSaysWhatTheRunShowed(t *testing.T) {
	st := setLeakState()
	if o := NewLive(st, tenants).Outcome(); o.Kind != "leak" || o.Head != "LEAK: Globex got Acme's 3 rows on backend 100 (request #3)." {
		t.Errorf("leak outcome %+v", o)
	}
	st.Requests[2].Leak, st.Requests[2].ForeignRows, st.Requests[2].Rows = false, 0, 0
	o := NewLive(st, tenants).Outcome()
	if o.Kind != "failed-closed" || o.Label != "failed closed" || o.Head != "1 request got 0 rows, 2 got only their own rows; no leak." {
		t.Errorf("failed-closed outcome %+v", o)
	}
	if f := NewLive(st, tenants).FinalLine(); !strings.HasPrefix(f, "Outcome, failed closed: 1 request got 0 rows") {
		t.Errorf("final line %q", f)
	}
	// What a scenario recorded from the database heads the bar: the
	// other tenants' rows TRUNCATE wiped, though every request got only
	// its own rows.
	st.Requests[2].Rows = 3
	if o := NewLive(st, tenants).Outcome(); o.Kind != "none" || o.Label != "no leak" || !strings.HasPrefix(o.Head, "3 requests") {
		t.Errorf("no-leak outcome %+v", o)
	}
	st.Findings = []engine.Finding{{Kind: engine.KindBreach, Text: "Breach: Acme's request wiped 4 of the other tenants' 4 contacts."}}
	if o := NewLive(st, tenants).Outcome(); o.Kind != "breach" || o.Label != "breach" || o.Head != "Acme's request wiped 4 of the other tenants' 4 contacts." || o.Detail != "Requests: 3 requests got only their own rows." {
		t.Errorf("breach outcome %+v", o)
	}
	st.Findings = []engine.Finding{{Kind: engine.KindDisclosure, Text: "Disclosure: Acme learned that ceo@globex.example exists."}}
	if o := NewLive(st, tenants).Outcome(); o.Kind != "disclosure" || strings.Contains(o.Head, "No leak") {
		t.Errorf("disclosure outcome %+v", o)
	}
	st.Findings = []engine.Finding{{Kind: engine.KindMeasurement, Text: "Scoping costs 3.1× the bare query.", Lead: true}}
	st.Requests[2].Leak, st.Requests[2].ForeignRows = true, 3
	if o := NewLive(st, tenants).Outcome(); o.Kind != "measurement" || o.Head != "Scoping costs 3.1× the bare query." {
		t.Errorf("measurement outcome %+v", o)
	}
	st.Findings, st.Requests[2].Leak, st.Requests[2].ForeignRows = nil, false, 0
	st.Requests[2].Error, st.Requests[2].SQLState = "syntax error at or near \"$1\"", "42601"
	if o := NewLive(st, tenants).Outcome(); o.Kind != "error" || !strings.HasPrefix(o.Head, "1 request failed with an error (SQLSTATE 42601)") {
		t.Errorf("error outcome %+v", o)
	}
	running := st
	running.Status, running.Requests = engine.StatusRunning, []engine.RequestRow{{Seq: 1, Phase: "waiting"}}
	if o := NewLive(running, tenants).Outcome(); o.Kind != "running" {
		t.Errorf("a run before its first query: %+v", o)
	}
	if h := (Head{Scenario: "set-leak", Status: engine.StatusRunning, Requests: 1}); h.Outcome() != "running" || h.OutcomeClass() != "outcome ph-chip ph-chip-running" {
		t.Errorf("the presenter's chip before a query: %q %q", h.Outcome(), h.OutcomeClass())
	}
	if h := (Head{Scenario: "side-channels", Status: engine.StatusDone, Requests: 1, Kind: engine.KindBreach}); h.Outcome() != "breach" || h.OutcomeClass() != "outcome ph-chip ph-chip-breach outcome-leak" {
		t.Errorf("the presenter's chip after a breach: %q %q", h.Outcome(), h.OutcomeClass())
	}
	st.Status, st.Queue = engine.StatusQueued, &engine.Queue{Need: 3, Ahead: 1}
	if o := NewLive(st, tenants).Outcome(); o.Kind != "queued" || !strings.Contains(o.Detail, "needs 3 connections") || !strings.Contains(o.Detail, "1 run ahead") {
		t.Errorf("queued outcome %+v", o)
	}
	st.Outage = "the database is not answering"
	if o := NewLive(st, tenants).Outcome(); o.Kind != "outage" {
		t.Errorf("outage outcome %+v", o)
	}
}

func TestFramePartsCarryStableIDs(t *testing.T) {
	parts, err := FrameParts(NewLive(setLeakState(), tenants))
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, p := range parts {
		if ids[p.ID] {
			t.Errorf("part %s twice", p.ID)
		}
		ids[p.ID] = true
		if !bytes.Contains(p.HTML, []byte(`id="`+p.ID+`"`)) && p.Wrap != "svg" {
			t.Errorf("part %s does not carry its id: %.80s", p.ID, p.HTML)
		}
		if p.Wrap != "svg" && !bytes.Contains(p.HTML, []byte(`hx-swap-oob="true"`)) {
			t.Errorf("part %s is not swapped out of band: %.80s", p.ID, p.HTML)
		}
	}
	for _, want := range []string{"outcome", "status", "timeline", "requests", "req-3", "tl-lane-100", "tl-lane-200"} {
		if !ids[want] {
			t.Errorf("no part %s", want)
		}
	}
}

func TestCleanTitle(t *testing.T) {
	for in, want := range map[string]string{`"Belt and braces: reset"`: "Belt and braces: reset", "plain": "plain", `'q'`: "q", `say "x"`: `say "x"`} {
		if got := CleanTitle(in); got != want {
			t.Errorf("CleanTitle(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTimelineDrawsTheSharedField draws wrong-scope's shared field as a
// lane above the backends: Acme's band from request #1's write until #2
// overwrites it with Globex, and both requests' reads under Globex's band.
func TestTimelineDrawsTheSharedField(t *testing.T) {
	tr := engine.NewTracker("x", nil)
	tr.Begin("wrong-scope", "global", "1x")
	tr.AddFieldReading(engine.FieldReading{Value: "1", Seq: 1, Wrote: true})
	tr.AddFieldReading(engine.FieldReading{Value: "2", Seq: 2, Wrote: true})
	tr.AddFieldReading(engine.FieldReading{Value: "2", Seq: 1})
	tr.AddFieldReading(engine.FieldReading{Value: "2", Seq: 2})
	st := tr.Snapshot()
	d := NewLive(st, tenants).Timeline()
	if d == nil || len(d.Lanes) != 1 || d.Lanes[0].Kind != LaneField {
		t.Fatalf("lanes: %+v", d)
	}
	l := d.Lanes[0]
	if len(l.Bands) != 2 || *l.Bands[0].Tenant != "1" || *l.Bands[1].Tenant != "2" || l.Bands[0].X+l.Bands[0].W != l.Bands[1].X {
		t.Fatalf("bands %+v, want Acme's then Globex's, end to end", l.Bands)
	}
	var texts []string
	for _, m := range l.Marks {
		texts = append(texts, m.Text)
		if m.Text[0] == 'R' && !(m.X >= l.Bands[1].X) {
			t.Errorf("read %+v drawn before Globex's write", m)
		}
	}
	if strings.Join(texts, " ") != "W#1 W#2 R#1 R#2" {
		t.Errorf("marks %v", texts)
	}
	var buf bytes.Buffer
	if err := TimelinePanel(NewLive(st, tenants)).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `id="tl-lane-field"`) || !strings.Contains(buf.String(), "<b>shared field</b>") {
		t.Errorf("the field lane is not in the page")
	}
}

// TestFinalLineNotRepeated: a run whose last narration states its outcome
// gets no second line saying it again; one that does not (a recording
// made before runs concluded so) still does.
func TestFinalLineNotRepeated(t *testing.T) {
	st := setLeakState()
	v := NewLive(st, tenants)
	if c := v.Conclusion(); c != "Globex got 3 of Acme's rows: leak." {
		t.Fatalf("conclusion %q", c)
	}
	st.Narration = v.Conclusion() + " The timeline shows it."
	if f := NewLive(st, tenants).FinalLine(); f != "" {
		t.Errorf("final line %q repeats the narration", f)
	}
	st.Narration = "Done."
	if f := NewLive(st, tenants).FinalLine(); !strings.HasPrefix(f, "Outcome: LEAK: Globex got Acme's 3 rows") {
		t.Errorf("final line %q after an old narration", f)
	}
}

// TestTimelineDrawsPgBouncerClients lays out a PgBouncer run: a lane per
// client above the server's, each request on its client's lane joined to
// the server block where its query ran, and the admin console's link as a
// mark on the client's lane.
func TestTimelineDrawsPgBouncerClients(t *testing.T) {
	acme := ptr("1")
	ev := func(kind, pool string, pid uint32, tenant *string, seq int) engine.TimelineEvent {
		return engine.TimelineEvent{Kind: kind, Pool: pool, Slot: 1, PID: pid, Read: kind != engine.TimelineAcquire, Tenant: tenant, Seq: seq}
	}
	st := engine.State{Lab: "x", Status: engine.StatusDone, Pairing: &engine.Pairing{Mode: "transaction"},
		Timeline: &engine.Timeline{Events: []engine.TimelineEvent{
			ev(engine.TimelineConnect, "app-1", 500, nil, 0),
			ev(engine.TimelineAcquire, "app-1", 500, nil, 1),
			{Kind: engine.TimelineLink, Pool: "app-1", PID: 500},
			{Kind: engine.TimelineObserve, PID: 500, Read: true, Tenant: acme, Seq: 1},
			ev(engine.TimelineRelease, "app-1", 500, acme, 0),
			ev(engine.TimelineClose, "app-1", 500, nil, 0),
		}},
		Requests: []engine.RequestRow{{Seq: 1, Tenant: acme, Pattern: "session-set", Pool: "app-1", PID: 500, SeenTenant: acme, Rows: 3, FinishedAt: 1}},
	}
	d := NewLive(st, tenants).Timeline()
	if d == nil || len(d.Lanes) != 2 || d.Lanes[0].Kind != LaneClient || d.Lanes[0].Client != "app-1 #1" || d.Lanes[1].Kind != LaneBackend || d.Lanes[1].PID != 500 {
		t.Fatalf("lanes %+v", d)
	}
	c, s := d.Lanes[0], d.Lanes[1]
	if len(c.Blocks) != 1 || c.Blocks[0].Seq != 1 || !c.Blocks[0].Client || len(s.Blocks) != 1 {
		t.Fatalf("client blocks %+v, server blocks %+v", c.Blocks, s.Blocks)
	}
	if len(d.Pairs) != 1 || d.Pairs[0].Y1 != c.Blocks[0].Y+tlBlockH || d.Pairs[0].Y2 != s.Blocks[0].Y {
		t.Errorf("pair %+v does not join %+v to %+v", d.Pairs, c.Blocks[0], s.Blocks[0])
	}
	if len(c.Marks) != 1 || c.Marks[0].PID != 500 || c.Marks[0].Text != "→ 500" {
		t.Errorf("link marks %+v", c.Marks)
	}
	// The pool's close takes no column: the drawing ends at the release.
	if end := s.Bands[len(s.Bands)-1]; end.X+end.W != tlLabelW+5*tlColW {
		t.Errorf("the server's last band ends at %v, want column 5 (six events, the close takes none)", end.X+end.W)
	}
}
