package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Conclusion states in one sentence what the request log shows: whose rows
// went to whom ("Globex got 3 of Acme's rows: leak."), or that nothing
// leaked and how the requests ended ("No leak: 4 requests failed closed
// (0 rows)."). name turns a tenant setting into the tenant's name. Requests
// that never queried and never failed are left out.
func Conclusion(rows []RequestRow, name func(string) string) string {
	type pair struct{ reader, victim string }
	var order []pair
	leaked := map[pair][2]int{} // requests, rows
	leaks, own, closed, failed := 0, 0, 0, 0
	for _, r := range rows {
		switch {
		case r.Leak:
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
		case r.Error != "":
			failed++
		case r.FinishedAt == 0:
			// never queried
		case r.Rows == 0:
			closed++
		default:
			own++
		}
	}
	if leaks > 0 {
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
	var parts []string
	add := func(n int, what string) {
		if n == 0 {
			return
		}
		req := "requests"
		if n == 1 {
			req = "request"
		}
		if len(parts) > 0 {
			req = ""
		}
		parts = append(parts, strings.Join(strings.Fields(fmt.Sprintf("%d %s %s", n, req, what)), " "))
	}
	whose := "their"
	if own == 1 {
		whose = "its"
	}
	add(own, "got only "+whose+" own rows")
	add(closed, "failed closed (0 rows)")
	add(failed, "failed with an error")
	if len(parts) == 0 {
		return "No leak: no request queried."
	}
	return "No leak: " + strings.Join(parts, ", ") + "."
}

// upperFirst capitalises the first letter of s.
func upperFirst(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// Conclude ends a run with its last frame: the Conclusion of its request
// log, then detail (what else the run established, or "").
func (e *Env) Conclude(ctx context.Context, detail string) error {
	return e.Step(ctx, e.ConclusionText(detail))
}

// ConclusionText is the narration Conclude shows: the Conclusion of the
// run's request log so far, then detail.
func (e *Env) ConclusionText(detail string) string {
	e.tracker.mu.Lock()
	rows := append([]RequestRow(nil), e.tracker.st.Requests...)
	e.tracker.mu.Unlock()
	s := Conclusion(rows, e.Sandbox.TenantName)
	if detail = strings.TrimSpace(detail); detail != "" {
		s += " " + detail
	}
	return s
}
