package web_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

var (
	// chipRE finds the presenter chip's kind and words.
	chipRE = regexp.MustCompile(`data-testid="outcome" data-kind="([^"]*)">([^<]*)<`)
	// barRE finds the outcome bar's kind and its head.
	barRE = regexp.MustCompile(`(?s)id="outcome"[^>]*data-outcome="([^"]*)".*?<b>([^<]*)</b>`)
)

// presenterOutcome returns what the presenter view of lab says about the
// outcome: the chip's kind and words, and the bar's kind and head.
func presenterOutcome(t *testing.T, ts *testServer, c *http.Client, lab string) (chipKind, chip, barKind, bar string) {
	t.Helper()
	code, page := do(t, c, "GET", ts.URL+"/labs/"+lab+"/present", "", "")
	if code != http.StatusOK {
		t.Fatalf("presenter view: %d %.300s", code, page)
	}
	m, n := chipRE.FindStringSubmatch(page), barRE.FindStringSubmatch(page)
	if m == nil || n == nil {
		t.Fatalf("no chip (%v) or no outcome bar (%v) in the presenter view: %.2000s", m, n, page)
	}
	return m[1], strings.TrimSpace(m[2]), n[1], strings.TrimSpace(n[2])
}

// TestPresenterChipAgreesWithTheBarInFreePlay runs free-play SQL that
// fails closed (no tenant set: the policy lets nothing through) and one
// that reads the tenant's own rows, and reads the presenter view after
// each: while free play goes on, the chip and the outcome bar say the
// same thing, "running" and "No leak so far" (the chip said "failed
// closed" over the bar's "No leak so far"). A scenario's finished run
// names its kind in both.
func TestPresenterChipAgreesWithTheBarInFreePlay(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c, lab := newOwnedLab(t, ts)
	for _, q := range []struct{ what, form string }{
		{"SQL without a tenant", "sql=SELECT+*+FROM+invoices"},
		{"SQL scoped to Acme", "sql=SELECT+*+FROM+invoices&tenant=1&pattern=session-set"},
	} {
		if code, body := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/sql", "application/x-www-form-urlencoded", q.form, "HX-Request", "true"); code != http.StatusOK {
			t.Fatalf("%s: %d %.300s", q.what, code, body)
		}
		st := lab.Tracker().Snapshot()
		if st.Scenario != sessions.FreePlayScenario || st.Status != engine.StatusRunning {
			t.Fatalf("%s: the lab is %s %s, want free play running", q.what, st.Scenario, st.Status)
		}
		v, _ := st.Outcome()
		chipKind, chip, barKind, bar := presenterOutcome(t, ts, c, lab.ID)
		if chipKind != "running" || chip != "running" || barKind != "running" || bar != "No leak so far." {
			t.Errorf("after %s (judged %s so far) the presenter's chip says %q (%s), its bar %q (%s); want both still running", q.what, v.Kind, chip, chipKind, bar, barKind)
		}
	}
	if v, _ := lab.Tracker().Snapshot().Outcome(); v.Kind != engine.KindFailedClosed {
		t.Errorf("the free-play log judged %q, want failed-closed: the test no longer shows the case it guards", v.Kind)
	}

	runToEnd(t, ts, c, lab.ID, "set-leak", engine.PatternTxLocal)
	if chipKind, chip, barKind, _ := presenterOutcome(t, ts, c, lab.ID); chipKind != barKind || chip != engine.KindLabel(barKind) || barKind == "running" {
		t.Errorf("after a tx-local run the chip says %q (%s), the bar's kind is %s; want the run's kind in both", chip, chipKind, barKind)
	}
}
