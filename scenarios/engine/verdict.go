package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// Outcome kinds: what a run showed, in the words the outcome bar, state.json,
// recordings and predictions share.
const (
	// KindLeak is a run in which a request read rows of another tenant.
	KindLeak = "leak"
	// KindBreach is a run in which a request wrote or deleted another
	// tenant's rows (or wrote against them).
	KindBreach = "breach"
	// KindDisclosure is a run in which an error or a count revealed
	// another tenant's data without returning its rows.
	KindDisclosure = "disclosure"
	// KindFailedClosed is a run in which no request crossed tenants and at
	// least one was refused: 0 rows, or an error from the protection
	// itself (a privilege, a policy, a constraint, the tenant setting's
	// cast).
	KindFailedClosed = "failed-closed"
	// KindError is a run that failed, or one in which a request failed for
	// another reason than the protection (a syntax error, a statement the
	// server does not know, a refused connection).
	KindError = "error"
	// KindMeasurement is a run whose point is a measurement: its headline
	// is the measurement.
	KindMeasurement = "measurement"
	// KindNone is a run in which every request got only its own rows and
	// nothing else crossed tenants.
	KindNone = "none"
)

// Finding is something a scenario observed in the database besides its
// request log: rows of another tenant written or deleted (KindBreach),
// another tenant's data revealed by an error or a count (KindDisclosure),
// or the measurement the run is about (KindMeasurement). Text is the
// sentence that says what was observed, with the numbers.
type Finding struct {
	Kind string `json:"kind"`
	Text string `json:"text"`
	// Lead is set on a measurement that heads the outcome even when a
	// request also leaked: the run is about the measurement.
	Lead bool `json:"lead,omitempty"`
}

// Verdict names what a run showed: its kind and the sentence that heads
// the outcome.
type Verdict struct {
	Kind     string `json:"kind"`
	Headline string `json:"headline"`
}

// Breach records that the run observed another tenant's rows written or
// deleted; text says whose, by whom and how many, as counted in the
// database.
func (t *Tracker) Breach(text string) { t.find(Finding{Kind: KindBreach, Text: text}) }

// Disclose records that the run observed another tenant's data revealed
// by an error or a count; text says what was revealed and how.
func (t *Tracker) Disclose(text string) { t.find(Finding{Kind: KindDisclosure, Text: text}) }

// Measured records the measurement a run is about; text states it with
// its numbers. With lead, it heads the outcome even over a leak (a
// measurement lesson); without, a leak, breach or disclosure comes first.
func (t *Tracker) Measured(text string, lead bool) {
	t.find(Finding{Kind: KindMeasurement, Text: text, Lead: lead})
}

// find appends a finding, replacing an earlier one of the same kind (a
// measurement is restated as it firms up).
func (t *Tracker) find(f Finding) {
	f.Text = Scrub(strings.TrimSpace(f.Text))
	t.Update(func(s *State) {
		for i := range s.Findings {
			if s.Findings[i].Kind == f.Kind {
				s.Findings[i] = f
				return
			}
		}
		s.Findings = append(s.Findings, f)
	})
}

// FailedClosed reports whether a request that failed with SQLSTATE code
// was refused by the protection itself, so that it got nothing: an
// insufficient privilege or a policy's WITH CHECK (42501), a data
// exception such as the tenant setting's cast of ” (class 22), an
// integrity constraint (class 23), an unknown setting read without
// missing_ok (42704), a table that is not on the search path, as when a
// schema-per-tenant request chose no schema (42P01), or a raised exception
// (P0001). Any other failure, and one without a SQLSTATE, is an error.
func FailedClosed(code string) bool {
	switch {
	case code == "42501", code == "42704", code == "42P01", code == "P0001":
		return true
	case len(code) == 5 && (strings.HasPrefix(code, "22") || strings.HasPrefix(code, "23")):
		return true
	}
	return false
}

// Judge names what the state's run showed so far, from its request log and
// its findings. Precedence: the run's own failure; a leading measurement;
// a breach; a leak; a disclosure; another measurement; a request that
// failed with an error; requests that failed closed; otherwise none. name
// turns a tenant setting into the tenant's name (nil: the state's
// tenants). Requests that never queried and never failed are left out; a
// run with nothing to judge is "No leak: no request queried." (the live
// view says "running" or "no run yet" instead, from the status).
func Judge(st State, name func(string) string) Verdict {
	if name == nil {
		name = func(v string) string { return tenantNameIn(st.Tenants, v) }
	}
	switch st.Status {
	case StatusFailed:
		return Verdict{Kind: KindError, Headline: "The run failed: " + st.Error}
	case StatusCancelled:
		return Verdict{Kind: KindError, Headline: "The run was cancelled before it ended."}
	}
	find := func(kind string, lead bool) (Finding, bool) {
		for _, f := range st.Findings {
			if f.Kind == kind && (!lead || f.Lead) {
				return f, true
			}
		}
		return Finding{}, false
	}
	if f, ok := find(KindMeasurement, true); ok {
		return Verdict{Kind: KindMeasurement, Headline: f.Text}
	}
	if f, ok := find(KindBreach, false); ok {
		return Verdict{Kind: KindBreach, Headline: f.Text}
	}
	c := count(st.Requests)
	if c.leaks > 0 {
		return Verdict{Kind: KindLeak, Headline: leakSentence(st.Requests, name)}
	}
	if f, ok := find(KindDisclosure, false); ok {
		return Verdict{Kind: KindDisclosure, Headline: f.Text}
	}
	if f, ok := find(KindMeasurement, false); ok {
		return Verdict{Kind: KindMeasurement, Headline: f.Text}
	}
	switch {
	case c.errors > 0:
		return Verdict{Kind: KindError, Headline: "Error: " + c.sentence() + "."}
	case c.closed+c.refused > 0:
		return Verdict{Kind: KindFailedClosed, Headline: "Failed closed: " + c.sentence() + "; no leak."}
	case c.own > 0:
		return Verdict{Kind: KindNone, Headline: "No leak: " + c.sentence() + "."}
	}
	return Verdict{Kind: KindNone, Headline: "No leak: no request queried."}
}

// PhaseCommand is the phase of a finished request that ran a command, not
// a query: a statement that returns no rows by its nature (SET, BEGIN,
// COMMIT, an INSERT without RETURNING, a client's empty ping). Its 0 rows
// say nothing of the protection, so it is judged only as a leak or an
// error, never as failing closed.
const PhaseCommand = "command"

// requestCounts are a request log's requests by how they ended.
type requestCounts struct {
	leaks, own, closed, refused, errors int
	codes                               []string // SQLSTATEs of the errors, in order, each once
}

// count sorts a request log's rows by how they ended.
func count(rows []RequestRow) requestCounts {
	var c requestCounts
	for _, r := range rows {
		switch {
		case r.Leak:
			c.leaks++
		case r.Error != "" && FailedClosed(r.SQLState):
			c.refused++
		case r.Error != "":
			c.errors++
			code := r.SQLState
			if code == "" {
				code = "no SQLSTATE"
			}
			if !contains(c.codes, code) {
				c.codes = append(c.codes, code)
			}
		case r.FinishedAt == 0 || r.Phase == PhaseCommand:
			// never queried
		case r.Rows == 0:
			c.closed++
		default:
			c.own++
		}
	}
	return c
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// sentence says how the requests that did not leak ended: "1 request
// failed with an error (SQLSTATE 42601), 1 got only its own rows".
func (c requestCounts) sentence() string {
	var parts []string
	add := func(n int, what string) {
		if n == 0 {
			return
		}
		req := "requests "
		if n == 1 {
			req = "request "
		}
		if len(parts) > 0 {
			req = ""
		}
		parts = append(parts, fmt.Sprintf("%d %s%s", n, req, what))
	}
	if c.errors > 0 {
		add(c.errors, "failed with an error (SQLSTATE "+strings.Join(c.codes, ", ")+")")
	}
	add(c.refused, "refused by the database")
	add(c.closed, "got 0 rows")
	whose := "their"
	if c.own == 1 {
		whose = "its"
	}
	add(c.own, "got only "+whose+" own rows")
	return strings.Join(parts, ", ")
}

// leakSentence says whose rows went to whom: "Globex got 3 of Acme's rows:
// leak."
func leakSentence(rows []RequestRow, name func(string) string) string {
	type pair struct{ reader, victim string }
	var order []pair
	leaked := map[pair][2]int{} // requests, rows
	leaks := 0
	for _, r := range rows {
		if !r.Leak {
			continue
		}
		leaks++
		p := pair{reader: "a request without a tenant"}
		if r.Tenant != nil {
			p.reader = name(*r.Tenant)
		}
		if r.SeenTenant != nil && *r.SeenTenant != "" && (r.Tenant == nil || *r.SeenTenant != *r.Tenant) {
			p.victim = name(*r.SeenTenant)
		}
		if _, ok := leaked[p]; !ok {
			order = append(order, p)
		}
		n := leaked[p]
		leaked[p] = [2]int{n[0] + 1, n[1] + r.ForeignRows}
	}
	var parts []string
	for _, p := range order {
		n := leaked[p]
		whose := "other tenants'"
		if p.victim != "" {
			whose = p.victim + "'s"
		}
		if n[0] == 1 {
			parts = append(parts, fmt.Sprintf("%s got %d of %s rows", p.reader, n[1], whose))
		} else {
			parts = append(parts, fmt.Sprintf("%s got %d of %s rows in %d requests", p.reader, n[1], whose, n[0]))
		}
	}
	verdict := "leak"
	if leaks > 1 {
		verdict = strconv.Itoa(leaks) + " leaks"
	}
	return upperFirst(strings.Join(parts, "; ")) + ": " + verdict + "."
}

// tenantNameIn returns the name of the tenant of tenants whose setting
// value is v, or v itself.
func tenantNameIn(tenants []Tenant, v string) string {
	for _, t := range tenants {
		if t.Setting() == v {
			return t.Name
		}
	}
	return v
}

// Outcome returns the state's verdict and true once there is something to
// judge: a run that ended (done, failed, cancelled), or a running one in
// which a request has queried or failed, or a finding was recorded. An
// idle lab, a queued run and a run before its first query have none.
func (s State) Outcome() (Verdict, bool) {
	switch s.Status {
	case StatusDone, StatusFailed, StatusCancelled:
		return Judge(s, nil), true
	case StatusRunning:
		if len(s.Findings) > 0 {
			return Judge(s, nil), true
		}
		for _, r := range s.Requests {
			if r.Leak || r.Error != "" || r.FinishedAt != 0 {
				return Judge(s, nil), true
			}
		}
	}
	return Verdict{}, false
}

// Tally says how a request log's requests that did not leak ended: "1
// request failed with an error (SQLSTATE 42601), 1 got only its own rows"
// ("" when none has ended).
func Tally(rows []RequestRow) string { return count(rows).sentence() }

// kindLabels are the short words a chip shows for each kind.
var kindLabels = map[string]string{
	KindLeak:         "leak",
	KindBreach:       "breach",
	KindDisclosure:   "disclosure",
	KindFailedClosed: "failed closed",
	KindError:        "error",
	KindMeasurement:  "measured",
	KindNone:         "no leak",
}

// KindLabel is the short word a chip shows for kind ("" for an unknown
// one).
func KindLabel(kind string) string { return kindLabels[kind] }

// Crossed reports whether kind is one in which a tenant's data reached
// another tenant: a leak, a breach or a disclosure.
func Crossed(kind string) bool {
	return kind == KindLeak || kind == KindBreach || kind == KindDisclosure
}
