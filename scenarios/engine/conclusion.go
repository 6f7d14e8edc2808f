package engine

import (
	"context"
	"strings"
)

// Conclusion states in one sentence what a request log shows: whose rows
// went to whom ("Globex got 3 of Acme's rows: leak."), or how the requests
// ended ("Failed closed: 4 requests got 0 rows; no leak."). It is the
// headline Judge gives a run with no findings; name turns a tenant
// setting into the tenant's name.
func Conclusion(rows []RequestRow, name func(string) string) string {
	return Judge(State{Requests: rows}, name).Headline
}

// upperFirst capitalises the first letter of s.
func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Conclude ends a run with its last frame: the headline of the run's
// verdict (Judge of what it observed), then detail (what else the run
// established, or "").
func (e *Env) Conclude(ctx context.Context, detail string) error {
	return e.Step(ctx, e.ConclusionText(detail))
}

// ConclusionText is the narration Conclude shows: the headline of the
// run's verdict so far, then detail.
func (e *Env) ConclusionText(detail string) string {
	s := Judge(e.tracker.Snapshot(), e.Sandbox.TenantName).Headline
	if detail = strings.TrimSpace(detail); detail != "" {
		s += " " + detail
	}
	return s
}
