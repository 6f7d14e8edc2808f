package web

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// cachedRecordings is how many recordings (frames included) the server
// keeps in memory for replays; a recording never changes once saved.
const cachedRecordings = 4

// runRoutes registers the recordings' endpoints.
func (s *Server) runRoutes() {
	s.mux.HandleFunc("GET /labs/{id}/runs.json", s.handleLabRunsJSON)
	s.mux.HandleFunc("GET /labs/{id}/recent-runs", s.handleLabRuns)
	s.mux.HandleFunc("GET /runs/{id}", s.handleRecording)
	s.mux.HandleFunc("GET /runs/{id}/frames/{n}", s.handleReplayFrame)
	s.mux.HandleFunc("GET /runs/{id}/export", s.handleExport)
	s.mux.HandleFunc("GET /runs/{a}/vs/{b}", s.handleCompare)
	s.mux.HandleFunc("GET /lessons/{slug}/compare", s.handleLessonCompare)
	s.mux.HandleFunc("GET /labs/{id}/compare", s.handleLabCompare)
}

// handleLessonCompare is a lesson's compare link:
// /lessons/{slug}/compare?a=VARIANT&b=VARIANT finds this browser's newest
// recordings of the two variants of the lesson's scenario (made in its
// current lab or, by its learner, in an earlier one) and redirects to them
// side by side. When a variant has not been run yet, a page says which.
func (s *Server) handleLessonCompare(w http.ResponseWriter, r *http.Request) {
	l, err := s.lessons.Get(r.PathValue("slug"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	token := cookieToken(r)
	q := sessions.RecordingQuery{Scenario: l.Scenario}
	if lab := s.labs.ForOwner(token); lab != nil {
		q.Lab = lab.ID
	}
	s.resolveCompare(ctx, w, r, q, token, views.CompareWaiting{Title: l.Title, Back: "/lessons/" + l.Slug, BackText: "Back to the lesson, to run it"})
}

// handleLabCompare is /labs/{id}/compare?a=VARIANT&b=VARIANT with
// scenario=ID or lesson=SLUG: the lab's newest recordings of the two
// variants, side by side. Recordings outlive their lab, so the lab need
// not be open; a lab neither open nor recorded is unknown.
func (s *Server) handleLabCompare(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	page := views.CompareWaiting{Back: "/labs/" + id, BackText: "Back to the lab, to run it"}
	scenario := r.URL.Query().Get("scenario")
	if slug := r.URL.Query().Get("lesson"); slug != "" {
		l, err := s.lessons.Get(slug)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if scenario != "" && scenario != l.Scenario {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "lesson %s is about scenario %s, not %s", l.Slug, l.Scenario, truncateText(scenario, 64)))
			return
		}
		scenario, page.Title = l.Scenario, l.Title
	}
	if scenario == "" {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "name the scenario (scenario=ID) or the lesson (lesson=SLUG) whose runs to compare"))
		return
	}
	if _, err := s.labs.Get(id); err != nil {
		runs, err := s.listRuns(r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if len(runs) == 0 {
			s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "no such lab: it is not open and has no recorded runs"))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	s.resolveCompare(ctx, w, r, sessions.RecordingQuery{Lab: id, Scenario: scenario}, "", page)
}

// resolveCompare checks the variants a= and b= against q's scenario, finds
// the newest recording of each that q and the learner token (may be "")
// name and redirects (303) to the
// two side by side. A variant without a recording yet gets the page that
// says to run it first (404), or a JSON error.
func (s *Server) resolveCompare(ctx context.Context, w http.ResponseWriter, r *http.Request, q sessions.RecordingQuery, token string, page views.CompareWaiting) {
	sc, err := s.labs.Catalog().Lookup(q.Scenario)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, b, err := parseCompareVariants(r.URL.Query(), sc.ID, sc.VariantNames())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if s.recordings == nil {
		s.fail(w, r, errNoTables())
		return
	}
	if page.Title == "" {
		page.Title = sc.Title
	}
	page.Scenario = sc.ID
	page.A, page.B = views.CompareSide{Variant: a}, views.CompareSide{Variant: b}
	for _, side := range []*views.CompareSide{&page.A, &page.B} {
		if q.Lab == "" && token == "" {
			break // a browser without a lab or a learner has run nothing
		}
		q.Variant = side.Variant
		rec, err := s.recordings.Newest(ctx, q, token)
		switch {
		case err == nil:
			side.Run = rec.ID
		case rlslab.ErrorCode(err) != rlslab.ENOTFOUND:
			s.fail(w, r, err)
			return
		}
	}
	if missing := page.Missing(); len(missing) > 0 {
		if wantsJSON(r) || r.Header.Get("HX-Request") != "" {
			s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "run %s first: there is no recorded run of it to compare", strings.Join(missing, " and ")))
			return
		}
		s.render(w, r, http.StatusNotFound, views.CompareWaitingPage(page))
		return
	}
	http.Redirect(w, r, "/runs/"+page.A.Run+"/vs/"+page.B.Run, http.StatusSeeOther)
}

// listRuns returns the lab's recordings, newest first.
func (s *Server) listRuns(r *http.Request) ([]sessions.RecordingSummary, error) {
	if s.recordings == nil {
		return nil, errNoTables()
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	return s.recordings.List(ctx, r.PathValue("id"))
}

// handleLabRunsJSON lists a lab's recordings: they outlive the lab.
func (s *Server) handleLabRunsJSON(w http.ResponseWriter, r *http.Request) {
	runs, err := s.listRuns(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

// recentRuns is how many runs the "recent runs" fragment lists unless
// ?limit= (1 to 20) says otherwise.
const recentRuns = 10

// handleLabRuns is the "recent runs" fragment of a lab: its newest
// recordings, of one scenario with ?scenario=, at most ?limit= of them.
// For the lab's owner they are the learner's runs, in this lab and in the
// ones they had before it: runs belong to the learner, and a lab that
// expired or went with a restart does not take them along.
func (s *Server) handleLabRuns(w http.ResponseWriter, r *http.Request) {
	limit, err := parseRunsLimit(r.URL.Query().Get("limit"), recentRuns)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	scenario := r.URL.Query().Get("scenario")
	if scenario != "" {
		if _, err := s.labs.Catalog().Lookup(scenario); err != nil {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "there is no scenario %q", truncateText(scenario, 64)))
			return
		}
	}
	if s.recordings == nil {
		s.fail(w, r, errNoTables())
		return
	}
	id, token := r.PathValue("id"), ""
	if lab, err := s.labs.Get(id); err == nil && lab.IsOwner(cookieToken(r)) {
		token = cookieToken(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	// One more than shown, so that the oldest shown can still link to the
	// run before it.
	runs, err := s.recordings.Recent(ctx, sessions.RunsQuery{Lab: id, Scenario: scenario, Limit: limit + 1}, token)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, views.RunList(runs, limit))
}

// recording returns a recording, from memory when it was read lately.
func (s *Server) recording(ctx context.Context, id string) (sessions.Recording, error) {
	if rec, ok := s.recs.get(id); ok {
		return rec, nil
	}
	if s.recordings == nil {
		return sessions.Recording{}, errNoTables()
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	rec, err := s.recordings.Get(ctx, id)
	if err != nil {
		return sessions.Recording{}, err
	}
	// A recording of an older format is read once, into the current one:
	// /runs/{id}.json and the replay see only that.
	if rec, err = sessions.CurrentRecording(rec); err != nil {
		return sessions.Recording{}, rlslab.Errorf(rlslab.EINTERNAL, "%v", err)
	}
	s.recs.put(rec)
	return rec, nil
}

// handleRecording serves GET /runs/{id}.json (the recording) and GET /runs/{id}
// (its replay page).
func (s *Server) handleRecording(w http.ResponseWriter, r *http.Request) {
	id, asJSON := strings.CutSuffix(r.PathValue("id"), ".json")
	rec, err := s.recording(r.Context(), id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if asJSON {
		writeJSON(w, http.StatusOK, rec)
		return
	}
	if len(rec.Frames) == 0 {
		s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "this recording has no frames to replay"))
		return
	}
	start := 0
	if n, err := strconv.Atoi(r.URL.Query().Get("frame")); err == nil && n >= 0 && n < len(rec.Frames) {
		start = n
	}
	p, err := s.replayOf(rec, start)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if r.URL.Query().Get("embed") == "1" {
		// The one page another site may frame (see ServeHTTP).
		p.Embed = true
		allowFraming(w)
	}
	s.render(w, r, http.StatusOK, views.ReplayPage(p))
}

// replayOf is the replay page's view model of rec, showing frame start.
func (s *Server) replayOf(rec sessions.Recording, start int) (views.Replay, error) {
	st, err := frameState(rec, start)
	if err != nil {
		return views.Replay{}, err
	}
	p := views.Replay{ID: rec.ID, Lab: rec.Lab, Scenario: rec.Scenario, Variant: rec.Variant, Status: rec.Status, Kind: outcomeKind(rec),
		Leaks: rec.Leaks, Errors: rec.Errors, FinishedAt: rec.FinishedAt, PostgresVersion: rec.PostgresVersion, BouncerVersion: rec.BouncerVersion,
		Frames: len(rec.Frames), Start: start, Frame: replayFrame(rec, start, st)}
	for _, f := range rec.Frames {
		p.AtMs = append(p.AtMs, f.AtMs)
	}
	// Named as the live view names it: free play and the learner's own app
	// are outside the catalog.
	p.Title = headOf(s.labs.Catalog(), engine.State{Scenario: rec.Scenario}).Title
	return p, nil
}

// frameState decodes frame n of rec.
func frameState(rec sessions.Recording, n int) (engine.State, error) {
	d, err := sessions.DecodeFrame(rec.Format, rec.Frames[n].State)
	if err != nil {
		return engine.State{}, rlslab.Errorf(rlslab.EINTERNAL, "frame %d of recording %s cannot be read: %v", n, rec.ID, err)
	}
	return d.Engine(), nil
}

// replayFrame is the view model of frame n of rec.
func replayFrame(rec sessions.Recording, n int, st engine.State) views.ReplayFrame {
	return views.ReplayFrame{Index: n, Total: len(rec.Frames), AtMs: rec.Frames[n].AtMs, Live: views.NewLive(st, st.Tenants)}
}

// handleReplayFrame serves one frame of a recording as a fragment.
func (s *Server) handleReplayFrame(w http.ResponseWriter, r *http.Request) {
	rec, err := s.recording(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	n, err := strconv.Atoi(r.PathValue("n"))
	if err != nil || n < 0 || n >= len(rec.Frames) {
		s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "this recording has frames 0 to %d", len(rec.Frames)-1))
		return
	}
	st, err := frameState(rec, n)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, views.ReplayFrameView(replayFrame(rec, n, st)))
}

// finishedAt maps each request's sequence number to the first frame in
// which that request had finished.
func finishedAt(rec sessions.Recording) map[int]int {
	out := map[int]int{}
	for i, f := range rec.Frames {
		var st struct {
			Requests []struct {
				Seq        int   `json:"seq"`
				FinishedAt int64 `json:"finished_at"`
			} `json:"requests"`
		}
		if json.Unmarshal(f.State, &st) != nil {
			continue
		}
		for _, q := range st.Requests {
			if _, ok := out[q.Seq]; !ok && q.FinishedAt != 0 {
				out[q.Seq] = i
			}
		}
	}
	return out
}

// learnersOwn says whether a recording's scenario is the learner's own
// requests (free play, or their app through the proxy), which compare with
// a run of any scenario: "does our app do what the lesson's run did?"
func learnersOwn(scenario string) bool {
	return scenario == sessions.FreePlayScenario || scenario == sessions.AppScenario
}

// handleCompare shows two recordings of one scenario side by side, aligned
// on the requests' sequence numbers, with the rows that differ marked.
func (s *Server) handleCompare(w http.ResponseWriter, r *http.Request) {
	a, err := s.recording(r.Context(), r.PathValue("a"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.recording(r.Context(), r.PathValue("b"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if a.Scenario != b.Scenario && !learnersOwn(a.Scenario) && !learnersOwn(b.Scenario) {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "run %s is of scenario %s and run %s of %s: only runs of the same scenario compare, or free play and your app's sessions with any run", a.ID, a.Scenario, b.ID, b.Scenario))
		return
	}
	if len(a.Frames) == 0 || len(b.Frames) == 0 {
		s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "a recording without frames cannot be compared"))
		return
	}
	sa, err := frameState(a, len(a.Frames)-1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	sb, err := frameState(b, len(b.Frames)-1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	la, lb := views.NewLive(sa, sa.Tenants), views.NewLive(sb, sb.Tenants)
	fa, fb := finishedAt(a), finishedAt(b)
	rows := map[int]*views.CompareRow{}
	side := func(v views.Live, fin map[int]int, left bool) {
		for _, q := range v.Requests {
			row := rows[q.Seq]
			if row == nil {
				row = &views.CompareRow{Seq: q.Seq, FrameA: -1, FrameB: -1}
				rows[q.Seq] = row
			}
			c := &views.CompareCell{Tenant: v.TenantLabel(q.Tenant), TenantClass: views.TenantClass(q.Tenant), Pattern: q.Pattern,
				PID: views.PIDText(q.PID), Seen: v.TenantLabel(q.SeenTenant), SeenClass: views.TenantClass(q.SeenTenant),
				Rows: q.Rows, Foreign: q.ForeignRows, Verdict: views.Verdict(q), Leak: q.Leak, Class: views.RowClass(q)}
			if q.Pattern == sessions.AppPattern {
				c.Statement = q.Why
			}
			if left {
				row.A = c
				if f, ok := fin[q.Seq]; ok {
					row.FrameA = f
				}
			} else {
				row.B = c
				if f, ok := fin[q.Seq]; ok {
					row.FrameB = f
				}
			}
		}
	}
	side(la, fa, true)
	side(lb, fb, false)
	p := views.Compare{A: summaryOf(a), B: summaryOf(b), Scenario: a.Scenario}
	cat := s.labs.Catalog()
	p.Title = headOf(cat, engine.State{Scenario: a.Scenario, Variant: a.Variant}).Title
	if b.Scenario != a.Scenario {
		// The learner's own requests beside a run of a lesson's scenario.
		p.Title += ", beside " + headOf(cat, engine.State{Scenario: b.Scenario, Variant: b.Variant}).Title
		p.Scenario += " / " + b.Scenario
	}
	for _, row := range rows {
		row.Differs = row.A == nil || row.B == nil || row.A.Leak != row.B.Leak || row.A.Verdict != row.B.Verdict ||
			row.A.Seen != row.B.Seen || row.A.Rows != row.B.Rows || row.A.Foreign != row.B.Foreign || row.A.Tenant != row.B.Tenant
		if row.Differs {
			p.Differ++
		}
		p.Rows = append(p.Rows, *row)
	}
	slices.SortFunc(p.Rows, func(x, y views.CompareRow) int { return x.Seq - y.Seq })
	s.render(w, r, http.StatusOK, views.ComparePage(p))
}

// outcomeKind is the kind of a recording's outcome (engine.Judge's), ""
// for a recording made before outcomes had one.
func outcomeKind(rec sessions.Recording) string {
	var out struct {
		Kind string `json:"kind"`
	}
	_ = json.Unmarshal(rec.Outcome, &out) // an outcome without a kind (or none) leaves it ""
	return out.Kind
}

// summaryOf is one side's heading in a comparison.
func summaryOf(rec sessions.Recording) views.RunSummary {
	return views.RunSummary{ID: rec.ID, Variant: rec.Variant, Status: rec.Status, Kind: outcomeKind(rec), Leaks: rec.Leaks, Errors: rec.Errors, Frames: len(rec.Frames)}
}

// recordingCache keeps the last few recordings read, newest last.
type recordingCache struct {
	mu   sync.Mutex
	recs []sessions.Recording
}

// newRecordingCache returns an empty cache.
func newRecordingCache() *recordingCache { return &recordingCache{} }

// get returns the cached recording with that id, now the newest.
func (c *recordingCache) get(id string) (sessions.Recording, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.recs {
		if r.ID == id {
			c.recs = append(append(c.recs[:i:i], c.recs[i+1:]...), r)
			return r, true
		}
	}
	return sessions.Recording{}, false
}

// put caches r as the newest, dropping the oldest beyond cachedRecordings.
func (c *recordingCache) put(r sessions.Recording) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, old := range c.recs {
		if old.ID == r.ID {
			c.recs = append(c.recs[:i:i], c.recs[i+1:]...)
			break
		}
	}
	c.recs = append(c.recs, r)
	if len(c.recs) > cachedRecordings {
		c.recs = c.recs[len(c.recs)-cachedRecordings:]
	}
}
