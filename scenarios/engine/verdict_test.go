package engine

import "testing"

// TestJudgeNamesWhatHappened: the kind of a run's outcome comes from its
// request log and its findings, worst first, and a leading measurement
// heads it even over a leak.
func TestJudgeNamesWhatHappened(t *testing.T) {
	s := func(v string) *string { return &v }
	tenants := []Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}}
	own := RequestRow{Tenant: s("1"), SeenTenant: s("1"), Rows: 3, FinishedAt: 1}
	leak := RequestRow{Tenant: s("2"), SeenTenant: s("1"), Rows: 3, ForeignRows: 3, Leak: true, FinishedAt: 2}
	closed := RequestRow{Tenant: s("2"), SeenTenant: s(""), FinishedAt: 3}
	duplicate := RequestRow{Tenant: s("1"), Error: "duplicate key value violates unique constraint", SQLState: "23505", FinishedAt: 4}
	syntax := RequestRow{Tenant: s("1"), Error: "syntax error at or near \"$1\"", SQLState: "42601"}
	breach := Finding{Kind: KindBreach, Text: "Breach: Acme's request wiped 4 of the other tenants' 4 contacts."}
	disclosure := Finding{Kind: KindDisclosure, Text: "Disclosure: Acme learned that ceo@globex.example exists."}
	lead := Finding{Kind: KindMeasurement, Text: "Scoping costs 3.1× the bare query.", Lead: true}
	aside := Finding{Kind: KindMeasurement, Text: "RESET ALL left 4 of 6 pieces of session state."}
	for _, c := range []struct {
		name     string
		st       State
		kind     string
		headline string
	}{
		{"own rows only", State{Requests: []RequestRow{own, own}}, KindNone, "No leak: 2 requests got only their own rows."},
		{"a leak", State{Requests: []RequestRow{own, leak}}, KindLeak, "Globex got 3 of Acme's rows: leak."},
		{"failed closed", State{Requests: []RequestRow{own, closed}}, KindFailedClosed, "Failed closed: 1 request got 0 rows, 1 got only its own rows; no leak."},
		{"a syntax error", State{Requests: []RequestRow{syntax, own}}, KindError, "Error: 1 request failed with an error (SQLSTATE 42601), 1 got only its own rows."},
		{"TRUNCATE wiped others' rows", State{Requests: []RequestRow{own}, Findings: []Finding{breach}}, KindBreach, breach.Text},
		{"a breach outranks a leak", State{Requests: []RequestRow{leak}, Findings: []Finding{breach}}, KindBreach, breach.Text},
		{"the duplicate key tells", State{Requests: []RequestRow{duplicate}, Findings: []Finding{disclosure}}, KindDisclosure, disclosure.Text},
		{"a leak outranks a disclosure", State{Requests: []RequestRow{leak}, Findings: []Finding{disclosure}}, KindLeak, "Globex got 3 of Acme's rows: leak."},
		{"a measurement lesson", State{Requests: []RequestRow{leak}, Findings: []Finding{lead}}, KindMeasurement, lead.Text},
		{"a measurement beside a leak", State{Requests: []RequestRow{leak}, Findings: []Finding{aside}}, KindLeak, "Globex got 3 of Acme's rows: leak."},
		{"a measurement over failures", State{Requests: []RequestRow{closed, syntax}, Findings: []Finding{aside}}, KindMeasurement, aside.Text},
		{"the run failed", State{Status: StatusFailed, Error: "boom", Requests: []RequestRow{own}}, KindError, "The run failed: boom"},
	} {
		c.st.Tenants = tenants
		if got := Judge(c.st, nil); got.Kind != c.kind || got.Headline != c.headline {
			t.Errorf("%s: Judge = %q %q, want %q %q", c.name, got.Kind, got.Headline, c.kind, c.headline)
		}
	}
}

// TestStateOutcomeWaitsForSomethingToJudge: an idle lab, a queued run and
// a run before its first query have no outcome; a first query or a finding
// gives one.
func TestStateOutcomeWaitsForSomethingToJudge(t *testing.T) {
	for _, st := range []State{{Status: StatusIdle}, {Status: StatusQueued}, {Status: StatusRunning, Requests: []RequestRow{{Phase: "waiting"}}}} {
		if v, ok := st.Outcome(); ok {
			t.Errorf("%s with %d requests: outcome %+v", st.Status, len(st.Requests), v)
		}
	}
	st := State{Status: StatusRunning, Findings: []Finding{{Kind: KindBreach, Text: "Breach."}}}
	if v, ok := st.Outcome(); !ok || v.Kind != KindBreach {
		t.Errorf("a running run with a breach: %+v %v", v, ok)
	}
	st = State{Status: StatusDone}
	if v, ok := st.Outcome(); !ok || v.Kind != KindNone {
		t.Errorf("a finished run with nothing in it: %+v %v", v, ok)
	}
}

// TestFindingsReplaceTheirKind: a finding restated (a measurement as it
// firms up) replaces the earlier one of its kind, and a new run starts
// without findings.
func TestFindingsReplaceTheirKind(t *testing.T) {
	tr := NewTracker("lab", nil)
	tr.Begin("s", "v", "max")
	tr.Measured("1.5×", true)
	tr.Measured("1.4×", true)
	tr.Disclose("Disclosure: x exists.")
	if st := tr.Snapshot(); len(st.Findings) != 2 || st.Findings[0].Text != "1.4×" {
		t.Errorf("findings %+v", st.Findings)
	}
	tr.Begin("s", "v", "max")
	if st := tr.Snapshot(); len(st.Findings) != 0 {
		t.Errorf("a new run kept findings %+v", st.Findings)
	}
}

// TestFailedClosedCodes: the protection's own refusals fail closed; a
// syntax error, an unknown statement and no SQLSTATE are errors.
func TestFailedClosedCodes(t *testing.T) {
	for code, want := range map[string]bool{"42501": true, "22P02": true, "23503": true, "23505": true, "42704": true, "P0001": true,
		"42601": false, "26000": false, "42P05": false, "53300": false, "": false, "2": false} {
		if FailedClosed(code) != want {
			t.Errorf("FailedClosed(%q) = %v", code, !want)
		}
	}
}
