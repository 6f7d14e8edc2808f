package web

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// sqlWait bounds how long a free-play call waits for its pool (opening it
// within the connection budget, a busy connection); the statement itself is
// bounded by rlslab's time limit, not by this.
const sqlWait = 15 * time.Second

// maxTimes bounds how many copies of one call a request may send at once.
const maxTimes = sessions.MaxFreePlayConns

// sqlRequest is the body of POST /labs/{id}/sql, as JSON.
type sqlRequest struct {
	Connection *int   `json:"connection"`
	PID        *int64 `json:"pid"`
	SQL        string `json:"sql"`
	Tenant     string `json:"tenant"`
	Pattern    string `json:"pattern"`
	PoolSize   *int   `json:"pool_size"`
	Times      *int   `json:"times"`
}

// readSQLRequest reads a free-play call from a JSON body or a urlencoded
// form (the panel's), and how many copies of it to send at once (1 unless
// "times" says otherwise). Only the shape is checked here (lengths, ranges,
// UTF-8); the lab checks tenants and patterns against itself. Every error
// is EINVALID.
func readSQLRequest(contentType string, body []byte) (sessions.SQLRequest, int, error) {
	var raw sqlRequest
	if strings.HasPrefix(contentType, "application/json") {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&raw); err != nil {
			return sessions.SQLRequest{}, 0, rlslab.Errorf(rlslab.EINVALID, "the body is not the JSON of a free-play call: {\"connection\": N, \"sql\": \"...\", \"tenant\": \"...\", \"pattern\": \"...\"}")
		}
		if _, err := dec.Token(); err != io.EOF {
			return sessions.SQLRequest{}, 0, rlslab.Errorf(rlslab.EINVALID, "the body holds more than one JSON value")
		}
	} else {
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return sessions.SQLRequest{}, 0, rlslab.Errorf(rlslab.EINVALID, "the form cannot be read")
		}
		raw.SQL, raw.Tenant, raw.Pattern = form.Get("sql"), form.Get("tenant"), form.Get("pattern")
		for name, dst := range map[string]**int{"connection": &raw.Connection, "pool_size": &raw.PoolSize, "times": &raw.Times} {
			if v := strings.TrimSpace(form.Get(name)); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return sessions.SQLRequest{}, 0, rlslab.Errorf(rlslab.EINVALID, "%s must be a number", name)
				}
				*dst = &n
			}
		}
		if v := strings.TrimSpace(form.Get("pid")); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return sessions.SQLRequest{}, 0, rlslab.Errorf(rlslab.EINVALID, "pid must be a number")
			}
			raw.PID = &n
		}
	}
	var q sessions.SQLRequest
	times := 1
	if raw.Times != nil {
		if *raw.Times < 1 || *raw.Times > maxTimes {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "times %d: send a call 1 to %d times at once", *raw.Times, maxTimes)
		}
		times = *raw.Times
	}
	if raw.Connection != nil {
		if *raw.Connection < 1 || *raw.Connection > sessions.MaxFreePlayConns {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "connection %d: want 1 to %d, or none to let the pool choose", *raw.Connection, sessions.MaxFreePlayConns)
		}
		q.Connection = *raw.Connection
	}
	if raw.PoolSize != nil {
		if *raw.PoolSize < 1 || *raw.PoolSize > sessions.MaxFreePlayConns {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "pool_size %d: want 1 to %d", *raw.PoolSize, sessions.MaxFreePlayConns)
		}
		q.PoolSize = *raw.PoolSize
	}
	if raw.PID != nil {
		if *raw.PID < 1 || *raw.PID > 1<<31-1 {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "pid %d is not a backend's", *raw.PID)
		}
		if q.Connection != 0 {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "give a connection of the free-play pool or the pid of a paused run's backend, not both")
		}
		q.PID = uint32(*raw.PID)
		if times > 1 {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "a look at a paused run's connection runs once, not %d times", times)
		}
	}
	if len(raw.SQL) > sessions.MaxSQLLen {
		return q, 0, rlslab.Errorf(rlslab.EINVALID, "the SQL is %d bytes; free play takes at most %d", len(raw.SQL), sessions.MaxSQLLen)
	}
	if !utf8.ValidString(raw.SQL) || strings.ContainsRune(raw.SQL, 0) {
		return q, 0, rlslab.Errorf(rlslab.EINVALID, "the SQL must be UTF-8 text without NUL bytes")
	}
	q.SQL = raw.SQL
	q.Tenant = strings.TrimSpace(raw.Tenant)
	if len(q.Tenant) > 64 || !utf8.ValidString(q.Tenant) {
		return q, 0, rlslab.Errorf(rlslab.EINVALID, "tenant: a tenant's name or id, at most 64 bytes")
	}
	q.Pattern = strings.TrimSpace(raw.Pattern)
	if q.Pattern != "" {
		ok := false
		for _, p := range sessions.FreePlayPatterns {
			ok = ok || p == q.Pattern
		}
		if !ok {
			return q, 0, rlslab.Errorf(rlslab.EINVALID, "pattern %q: want one of %s", truncateText(q.Pattern, 32), strings.Join(sessions.FreePlayPatterns, ", "))
		}
	}
	return q, times, nil
}

// handleSQL runs one free-play call in the lab (owner only): JSON in, the
// result as JSON; the panel's htmx form gets the result as an HTML
// fragment.
func (s *Server) handleSQL(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	lab, err := s.labs.Get(id)
	if rlslab.ErrorCode(err) == rlslab.ENOTFOUND {
		lab, err = s.resumeLab(w, r, id) // a gone lab: the learner's new one
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !lab.IsOwner(cookieToken(r)) {
		s.fail(w, r, rlslab.Errorf(rlslab.EFORBIDDEN, "only the browser that created lab %s may run SQL in it", lab.ID))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "the body is larger than %d KB", maxBody>>10))
		return
	}
	q, times, err := readSQLRequest(r.Header.Get("Content-Type"), body)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), sqlWait)
	defer cancel()
	panel := r.Header.Get("HX-Request") != "" && !wantsJSON(r)
	if times > 1 {
		s.sendAtOnce(ctx, w, r, lab, q, times, panel)
		return
	}
	res, err := lab.SQL(ctx, q)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if panel {
		s.render(w, r, http.StatusOK, views.FreePlayResult(freePlayView(res, lab.ID)))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// sendAtOnce sends times copies of the free-play call q at once, each a
// request of its own on the pool, and answers with every result in the
// order they were sent: a list in JSON, one after the other in the panel.
// A copy that could not run (the pool stayed busy) says why in its place;
// when none could, the answer is the first one's error.
func (s *Server) sendAtOnce(ctx context.Context, w http.ResponseWriter, r *http.Request, lab *sessions.Lab, q sessions.SQLRequest, times int, panel bool) {
	results := make([]sessions.SQLResult, times)
	errs := make([]error, times)
	var wg sync.WaitGroup
	for i := range times {
		wg.Go(func() { results[i], errs[i] = lab.SQL(ctx, q) })
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			results[i] = sessions.SQLResult{Error: rlslab.ErrorMessage(err), Columns: []string{}, Rows: [][]*string{}}
		}
	}
	if failed == times {
		s.fail(w, r, errs[0])
		return
	}
	if !panel {
		writeJSON(w, http.StatusOK, results)
		return
	}
	out := make([]views.FreePlayView, times)
	for i, res := range results {
		out[i] = freePlayView(res, lab.ID)
		out[i].NotRun = errs[i] != nil
	}
	s.render(w, r, http.StatusOK, views.FreePlayResults(out))
}

// freePlayView is the panel's view of a result in lab labID: the role as
// the pool boxes and the timeline name it ("app", not "lab_…_app").
func freePlayView(res sessions.SQLResult, labID string) views.FreePlayView {
	return views.FreePlayView{
		Connection: res.Connection, Request: res.Request, PID: res.PID, TenantBefore: res.TenantBefore, TenantAfter: res.TenantAfter,
		Role: views.ShortRole(res.Role, labID), Columns: res.Columns, Rows: res.Rows, RowCount: res.RowCount, Truncated: res.Truncated, Tag: res.Tag,
		ForeignRows: res.ForeignRows, Leak: res.Leak, Refused: res.Refused, Error: res.Error, SQLState: res.SQLState, Notice: res.Notice, MS: res.MS,
	}
}
