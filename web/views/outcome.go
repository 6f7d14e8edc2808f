package views

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab/scenarios/engine"
)

// Connection and RequestRow are the engine's, named here for the templates.
type (
	Connection = engine.Connection
	RequestRow = engine.RequestRow
)

// OutcomeLeak is one leak in words, with who got whose rows.
type OutcomeLeak struct {
	Seq    int
	PID    uint32
	Reader string // the tenant whose request got the rows
	Victim string // the tenant whose rows they were ("" when unknown)
	Text   string
}

// Outcome is what the outcome bar says. Kind is the run's outcome kind
// (engine.Judge: leak, breach, disclosure, failed-closed, error,
// measurement, none) once there is one, else what the lab is doing: idle,
// queued, outage, running. Label is the short word of its chip.
type Outcome struct {
	Kind   string
	Label  string
	Head   string
	Detail string
	Leaks  []OutcomeLeak
}

// maxOutcomeLeaks bounds the leaks the outcome bar lists one by one.
const maxOutcomeLeaks = 5

// Outcome puts what the run has shown so far into one sentence: an outage
// or a place in the admission queue first, then the verdict of what the
// run observed (engine.Judge): its leaks (whose rows went to whom, on which
// backend), a breach, a disclosure, its measurement, an error, or that no
// request leaked and how the requests ended.
func (v Live) Outcome() Outcome {
	var o Outcome
	for _, r := range v.Requests {
		if r.Leak {
			o.Leaks = append(o.Leaks, v.leakOf(r))
		}
	}
	_, judged := v.State.Outcome()
	verdict, named := ShownOutcome(v.State) // the presenter's chip names the same
	switch {
	case v.Outage != "":
		o.Kind, o.Head, o.Detail = "outage", "The database is not answering.", outageDetail(v.Outage)
		o.Leaks = nil
		return o
	case v.Status == engine.StatusQueued && v.Queue != nil:
		runs := "runs"
		if v.Queue.Ahead == 1 {
			runs = "run"
		}
		o.Kind, o.Head = "queued", "Waiting in the admission queue."
		o.Detail = fmt.Sprintf("This run needs %d connections of the server's budget; %d %s ahead of it. It starts by itself.", v.Queue.Need, v.Queue.Ahead, runs)
		o.Leaks = nil
		return o
	case v.Status == engine.StatusFailed:
		o.Kind, o.Head, o.Detail = engine.KindError, "The run failed.", v.Error
	case v.Status == engine.StatusCancelled:
		o.Kind, o.Head, o.Detail = engine.KindError, "The run was cancelled before it ended.", v.Error
	case v.Status == engine.StatusIdle:
		o.Kind, o.Head = "idle", "No run yet."
		o.Detail = "Press Run: the outcome appears here."
		o.Leaks = nil
		return o
	case !judged:
		o.Kind, o.Head = "running", "Running: no request has queried yet."
		o.Leaks = nil
		return o
	case !named: // still going, nothing crossed tenants or failed so far
		o.Kind, o.Head = "running", "No leak so far."
		o.Detail = upperFirst(engine.Tally(v.Requests)) + "."
		o.Leaks = nil
		return o
	case verdict.Kind == engine.KindLeak:
		o.Kind = engine.KindLeak
		o.Head = o.Leaks[0].Text
		if n := len(o.Leaks); n > 1 {
			o.Head = fmt.Sprintf("%d LEAKS: %d requests got another tenant's rows.", n, n)
		}
		if len(o.Leaks) == 1 {
			o.Leaks = nil // the head says it all
		} else if len(o.Leaks) > maxOutcomeLeaks {
			o.Detail = fmt.Sprintf("The first %d are listed; the request log has them all.", maxOutcomeLeaks)
			o.Leaks = o.Leaks[:maxOutcomeLeaks]
		}
	default:
		o.Kind, o.Head = verdict.Kind, verdict.Headline
		switch verdict.Kind {
		case engine.KindBreach, engine.KindDisclosure, engine.KindMeasurement:
			if t := engine.Tally(v.Requests); t != "" {
				o.Detail = "Requests: " + t + "."
			}
		}
	}
	o.Label = engine.KindLabel(o.Kind)
	if o.Kind == engine.KindLeak {
		o.Label = "" // the head says LEAK itself, with the backend
	} else if p := o.Label + ": "; strings.HasPrefix(strings.ToLower(o.Head), p) {
		o.Head = upperFirst(o.Head[len(p):]) // the chip says it
	}
	return o
}

// ShownOutcome is the verdict the outcome bar and the presenter's chip
// both show for st, and whether they show one: st.Outcome(), except while
// a run (free play included) is still going and nothing has crossed
// tenants or failed with an error so far (none, failed closed), when the
// bar says "No leak so far" and the chip "running". It is the one place
// that decides, so the two cannot disagree (the chip said "failed closed"
// over a bar's "No leak so far" during free play).
func ShownOutcome(st engine.State) (engine.Verdict, bool) {
	v, ok := st.Outcome()
	if !ok || provisional(st, v) {
		return engine.Verdict{}, false
	}
	return v, true
}

// provisional reports whether verdict v of st is only what a run still
// going has shown so far without anything crossing tenants (none, failed
// closed): not yet an outcome to name.
func provisional(st engine.State, v engine.Verdict) bool {
	return st.Status == engine.StatusRunning && (v.Kind == engine.KindNone || v.Kind == engine.KindFailedClosed)
}

// outageHead is how an outage's message starts when it only repeats the
// outcome bar's head.
const outageHead = "the database is not answering"

// outageDetail is what an outage's message adds to the bar's head, "The
// database is not answering." ("the database is not answering; retrying"
// adds "Retrying."), as a sentence.
func outageDetail(msg string) string {
	msg = strings.TrimSpace(msg)
	if len(msg) >= len(outageHead) && strings.EqualFold(msg[:len(outageHead)], outageHead) {
		msg = strings.TrimLeft(msg[len(outageHead):], ";:,. ")
	}
	if msg == "" {
		return ""
	}
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return upperFirst(msg)
}

// upperFirst capitalises the first letter of s.
func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// plural says "1 request" or "3 requests".
func plural(n int, word string) string { return engine.CountOf(n, word, word+"s") }

// leakOf puts one leaking request into words: "LEAK: Globex got Acme's 3
// rows on backend 4242".
func (v Live) leakOf(r RequestRow) OutcomeLeak {
	l := OutcomeLeak{Seq: r.Seq, PID: r.PID, Reader: v.TenantName(r.Tenant)}
	whose := "another tenant's"
	if r.SeenTenant != nil && *r.SeenTenant != "" && (r.Tenant == nil || *r.SeenTenant != *r.Tenant) {
		l.Victim = v.TenantName(r.SeenTenant)
		whose = l.Victim + "'s"
	}
	rows := "rows"
	if r.ForeignRows == 1 {
		rows = "row"
	}
	l.Text = fmt.Sprintf("LEAK: %s got %s %d %s on backend %d", l.Reader, whose, r.ForeignRows, rows, r.PID)
	if r.ForeignRows == 0 {
		// An app's statement whose tag named another tenant than the
		// setting its backend held: a leak by the setting, not by rows.
		setting := "another tenant's setting"
		if l.Victim != "" {
			setting = l.Victim + "'s setting"
		}
		l.Text = fmt.Sprintf("LEAK: %s's statement ran under %s on backend %d", l.Reader, setting, r.PID)
	}
	if v.OtherRole(r.Role) {
		l.Text += " as role " + ShortRole(r.Role, v.Lab)
	}
	l.Text += " (request #" + strconv.Itoa(r.Seq) + ")."
	return l
}

// FinalLine is the last line of the narration once a run has ended: its
// outcome, unless the run's own last narration already states it (every
// scenario ends with its verdict's headline; a recording made before may
// not).
func (v Live) FinalLine() string {
	if v.Status != engine.StatusDone && v.Status != engine.StatusFailed && v.Status != engine.StatusCancelled {
		return ""
	}
	if v.Status == engine.StatusDone && strings.HasPrefix(v.Narration, v.Conclusion()) {
		return ""
	}
	o := v.Outcome()
	s := "Outcome: " + o.Head
	if o.Label != "" {
		s = "Outcome, " + o.Label + ": " + o.Head
	}
	if len(o.Leaks) > 1 {
		// Several leaks: the first one, in words (the bar lists them all).
		s += " The first: " + strings.TrimPrefix(o.Leaks[0].Text, "LEAK: ")
	}
	if o.Detail != "" {
		s += " " + o.Detail
	}
	return s
}

// Conclusion is the headline of engine.Judge's verdict on the state, with
// the lab's tenant names: the sentence a run's last narration starts with.
func (v Live) Conclusion() string {
	return engine.Judge(v.State, func(s string) string { return v.TenantName(&s) }).Headline
}

// OtherRole reports whether role is a role other than the lab's app role
// (as the timeline recorded it); "" is not.
func (v Live) OtherRole(role string) bool {
	if role == "" {
		return false
	}
	if tl := v.State.Timeline; tl != nil && tl.AppRole != "" {
		return role != tl.AppRole
	}
	return v.Lab != "" && role != "lab_"+v.Lab+"_app"
}

// ConnID is the element id of a connection box.
func ConnID(c Connection) string {
	return "conn-" + idPart(c.Pool) + "-" + strconv.Itoa(c.Slot)
}

// RowID is the element id of a request log row.
func RowID(r RequestRow) string { return "req-" + strconv.Itoa(r.Seq) }

// idPart makes s usable inside an element id.
func idPart(s string) string {
	var b strings.Builder
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// tenantAttr is a tenant setting value for a data attribute ("NULL" for
// NULL).
func tenantAttr(t *string) string {
	if t == nil {
		return "NULL"
	}
	return *t
}

// patternTitles says what each pattern sends to the server.
var patternTitles = map[string]string{
	engine.PatternSessionSet: "set_config('app.current_tenant', $1, false): a session-level SET",
	engine.PatternTxLocal:    "BEGIN; set_config('app.current_tenant', $1, true); query; COMMIT",
	engine.PatternBatchLocal: "set_config(..., true) and the query in one pgx.Batch (one round trip)",
	engine.PatternForgot:     "no scoping at all: the query runs under whatever the backend holds",
	"split":                  "set_config and the query sent as two separate pool calls",
	"set-param":              "SET app.current_tenant = $1 with a bind parameter (extended protocol)",
	"set-param-simple":       "SET app.current_tenant = $1 under pgx's simple protocol: the value is written into the SQL on the client",
	"reset":                  "RESET app.current_tenant, then the query with no scoping of its own",
	"bare":                   "the query alone, on a connection scoped once beforehand",
	"four-trips":             "BEGIN; set_config(..., true); query; COMMIT: four round trips",
	"batch":                  "set_config(..., true) and the query in one pgx.Batch: one round trip",
	"role":                   "SET ROLE to the tenant's role: lasts for the Postgres session",
	"local-role":             "SET LOCAL ROLE inside BEGIN ... COMMIT",
}

// PatternTitle explains a pattern in a tooltip ("" for an unknown one).
func PatternTitle(p string) string { return patternTitles[p] }

// CleanTitle drops the quotes a title written as a quoted string in a
// lesson's front matter keeps ("…" or '…').
func CleanTitle(t string) string {
	t = strings.TrimSpace(t)
	if len(t) >= 2 && (t[0] == '"' && t[len(t)-1] == '"' || t[0] == '\'' && t[len(t)-1] == '\'') {
		return strings.TrimSpace(t[1 : len(t)-1])
	}
	return t
}
