package engine

import (
	"encoding/json"
	"testing"
)

func TestTimelineIsBoundedAndCopied(t *testing.T) {
	tr := NewTracker("x", nil)
	for i := range maxTimeline + 25 {
		tr.Update(func(s *State) {
			s.addTimeline("app", TimelineEvent{Kind: TimelineObserve, PID: uint32(i + 1), Read: true, Role: "app"})
		})
	}
	st := tr.Snapshot()
	tl := st.Timeline
	if tl == nil || len(tl.Events) != maxTimeline || tl.Dropped != 25 || tl.AppRole != "app" {
		t.Fatalf("timeline: %d events, %d dropped, app role %q", len(tl.Events), tl.Dropped, tl.AppRole)
	}
	if tl.Events[0].PID != 26 || tl.Events[0].At == 0 {
		t.Errorf("oldest kept event %+v, want PID 26 with a time", tl.Events[0])
	}
	// A snapshot shares nothing with the tracker's state.
	tl.Events[0].PID = 0
	if again := tr.Snapshot(); again.Timeline.Events[0].PID != 26 {
		t.Error("changing a snapshot changed the tracker's timeline")
	}
	// The timeline survives JSON, as a recording stores it.
	b, _ := json.Marshal(st)
	var back State
	if err := json.Unmarshal(b, &back); err != nil || len(back.Timeline.Events) != maxTimeline {
		t.Errorf("JSON round trip: %v", err)
	}
	tr.Begin("s", "v", "1")
	if tr.Snapshot().Timeline != nil {
		t.Error("a new run starts with the last run's timeline")
	}
}

func TestFieldReadingsAndPolicy(t *testing.T) {
	tr := NewTracker("x", nil)
	for i := range maxFieldReadings + 3 {
		tr.AddFieldReading(FieldReading{Value: "1", Seq: i + 1})
	}
	tr.SetPolicy(&Policy{Table: "invoices", Using: "(tenant_id = 1)", Enabled: true, Force: true})
	st := tr.Snapshot()
	if len(st.SharedField) != maxFieldReadings || st.SharedField[0].Seq != 4 || st.SharedField[0].At == 0 {
		t.Errorf("shared field: %d readings, first %+v", len(st.SharedField), st.SharedField[0])
	}
	if st.Policy == nil || !st.Policy.Force || st.Policy.Using != "(tenant_id = 1)" {
		t.Errorf("policy %+v", st.Policy)
	}
}
