package web

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// ownerCookieAge is how long a browser keeps its learner cookie.
const ownerCookieAge = 30 * 24 * time.Hour

// maxBody bounds the body of every POST.
const maxBody = 64 << 10

// handleHealth answers within a second: 200 with the capacity in use, or
// 503 when the database does not answer (the driver's error is logged, not
// shown).
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if err := s.labs.Ping(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": rlslab.ErrorMessage(err)})
		return
	}
	u := s.labs.Usage()
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "labs": u.Labs, "max_labs": u.MaxLabs, "spares": u.Spares,
		"run_connections": u.RunConns, "queued_runs": u.Queued, "budget": u.Budget})
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	s.render(w, r, http.StatusOK, views.Home(s.homePage(ctx, cookieToken(r))))
}

// handleLesson shows a lesson beside the learner's lab. A GET never creates
// a lab: a browser without one gets a page that asks for one with a POST.
func (s *Server) handleLesson(w http.ResponseWriter, r *http.Request) {
	p, err := s.lessonPage(r.Context(), r.PathValue("slug"), s.labs.ForOwner(cookieToken(r)))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, views.Lesson(p))
}

// lessonPage is the view model of lesson slug beside lab (nil: none yet).
func (s *Server) lessonPage(ctx context.Context, slug string, lab *sessions.Lab) (views.LessonPage, error) {
	l, err := s.lessons.Get(slug)
	if err != nil {
		return views.LessonPage{}, err
	}
	sc, err := s.labs.Catalog().Lookup(l.Scenario)
	if err != nil {
		return views.LessonPage{}, err
	}
	if lab == nil {
		return views.LessonPage{Lesson: l, Nav: s.lessonNav(l)}, nil
	}
	lab.Touch()
	variants := make([]engine.Variant, 0, len(l.Variants))
	for _, name := range l.Variants {
		for _, v := range sc.Variants {
			if v.Name == name {
				variants = append(variants, v)
			}
		}
	}
	st := lab.Tracker().Snapshot()
	ranHere := st.Scenario == l.Scenario
	if st.Scenario != "" && st.Scenario != l.Scenario {
		// The lab's last run belongs to another lesson: this page shows
		// none of it (its websocket skips those frames too).
		st = engine.State{Lab: st.Lab, Tenants: st.Tenants, Server: st.Server, Outage: st.Outage, Status: engine.StatusIdle,
			Connections: []engine.Connection{}, Requests: []engine.RequestRow{}, Series: []engine.Sample{}, Version: st.Version}
	}
	box := s.predictBox(ctx, l, lab.Owner())
	return views.LessonPage{
		Lesson:      l,
		Controls:    views.Controls{Lab: lab.ID, Owner: true, Speed: "1", InLesson: true, Scenarios: []views.ScenarioChoice{{ID: sc.ID, Title: sc.Title, Variants: variants, Params: sc.Params}}},
		Live:        views.NewLive(st, st.Tenants),
		Predict:     box,
		Nav:         s.lessonNav(l),
		ConnectHere: strings.Contains(string(l.HTML), `id="connect-your-app"`),
		Revealed:    ranHere || s.triedLesson(ctx, l, lab.Owner(), box),
	}, nil
}

// triedLesson reports whether the learner whose token is token has
// predicted (box holds their answers) or run lesson l: then the lesson's
// sections that tell what a run shows are shown unfolded. When progress
// cannot be read, they stay folded (the learner can still open them).
func (s *Server) triedLesson(ctx context.Context, l *lessons.Lesson, token string, box views.PredictBox) bool {
	for _, it := range box.Items {
		if it.State != views.PredictAsk {
			return true
		}
	}
	if s.progress == nil || token == "" {
		return false
	}
	p, err := s.progress.Of(ctx, token)
	if err != nil {
		s.log.Warn("read progress", "lesson", l.Slug, "err", err)
		return false
	}
	for _, lp := range p.Lessons {
		if lp.Slug == l.Slug && (len(lp.VariantsRun) > 0 || len(lp.Predictions) > 0) {
			return true
		}
	}
	return false
}

// createTimeout is how long a request for a lab waits by default before it
// is told the lab is being prepared (a lab waits in line for a sandbox when
// no spare is ready).
const createTimeout = 5 * time.Second

// handleCreateLab gives this browser its lab (one per browser: the one it
// has, or a new one). With ?lesson=SLUG it answers htmx with the lesson's
// lab panel, and a plain form with a redirect to the lesson.
func (s *Server) handleCreateLab(w http.ResponseWriter, r *http.Request) {
	token := s.ownerToken(w, r)
	ctx, cancel := context.WithTimeout(r.Context(), s.createWait)
	defer cancel()
	// Outside a workshop an address holds a few labs at most, so a script
	// cannot take every lab from the people who come next.
	lab, err := s.labs.CreateFor(ctx, token, clientIP(r))
	if rlslab.ErrorCode(err) == rlslab.EPREPARING {
		s.preparing(w, r, err)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.rememberLab(w, r, lab.ID)
	if slug := r.URL.Query().Get("lesson"); slug != "" && !wantsJSON(r) {
		if r.Header.Get("HX-Request") == "" {
			http.Redirect(w, r, "/lessons/"+url.PathEscape(slug), http.StatusSeeOther)
			return
		}
		p, err := s.lessonPage(ctx, slug, lab)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		s.render(w, r, http.StatusOK, views.LabSide(p))
		return
	}
	if wantsJSON(r) {
		w.Header().Set("Location", "/labs/"+lab.ID)
		writeJSON(w, http.StatusCreated, map[string]string{"id": lab.ID})
		return
	}
	http.Redirect(w, r, "/labs/"+lab.ID, http.StatusSeeOther)
}

// handleLab shows a lab: controls for its owner, the live view for all.
func (s *Server) handleLab(w http.ResponseWriter, r *http.Request) {
	lab, err := s.labs.Get(r.PathValue("id"))
	if rlslab.ErrorCode(err) == rlslab.ENOTFOUND && !wantsJSON(r) {
		// A gone lab's owner, who has another lab by now, goes there.
		cur := s.labs.ForOwner(cookieToken(r))
		if cur != nil && hadLab(r, r.PathValue("id")) {
			http.Redirect(w, r, "/labs/"+cur.ID, http.StatusSeeOther)
			return
		}
		if r.Header.Get("HX-Request") == "" {
			// A bookmark of a lab that is gone: the way on is this
			// browser's lab, or a new one.
			gone := views.LabGone{Message: rlslab.ErrorMessage(err)}
			if cur != nil {
				gone.Current = cur.ID
			}
			s.render(w, r, http.StatusNotFound, views.LabGonePage(gone))
			return
		}
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	owner := lab.IsOwner(cookieToken(r))
	if !owner {
		s.renderWatch(w, r, lab)
		return
	}
	s.rememberLab(w, r, lab.ID)
	lab.Touch()
	var choices []views.ScenarioChoice
	for _, sc := range s.labs.Catalog().All() {
		choices = append(choices, views.ScenarioChoice{ID: sc.ID, Title: sc.Title, Variants: sc.Variants, Params: sc.Params})
	}
	st := lab.Tracker().Snapshot()
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	s.render(w, r, http.StatusOK, views.Lab(views.LabPage{
		Controls: views.Controls{Lab: lab.ID, Owner: owner, Speed: "1", Scenarios: choices},
		Live:     views.NewLive(st, st.Tenants),
		WatchURL: scheme + "://" + r.Host + "/labs/" + lab.ID,
		Connect:  s.connectPanel(r, lab),
	}))
}

// handleState serves the lab's live state as JSON (state.json's own type,
// see statejson.go), with fresh server counts.
func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	lab, err := s.controls(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, stateJSONOf(lab.State(r.Context())))
}

// handleRun starts a run: 202, or 400 for an unknown scenario, variant,
// speed or parameter, 409 while a run is going.
func (s *Server) handleRun(w http.ResponseWriter, r *http.Request, id string, lab controlLab) {
	f, err := readRunForm(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if f.Scenario == "" || f.Variant == "" {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "scenario and variant are required"))
		return
	}
	speed, err := parseSpeed(f.Speed)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	live, err := livePacing(f.Pacing)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := lab.Start(sessions.RunRequest{Scenario: f.Scenario, Variant: f.Variant, Speed: speed, Params: f.Params, Live: live}); err != nil {
		s.fail(w, r, err)
		return
	}
	s.answer(w, r, http.StatusAccepted, map[string]string{"lab": id, "scenario": f.Scenario, "variant": f.Variant, "speed": speed.String(), "status": engine.StatusRunning},
		"Started "+f.Scenario+" / "+f.Variant+" at speed "+speed.String()+".")
}

// handleReset stops the lab's run, if any, and empties its live view.
func (s *Server) handleReset(w http.ResponseWriter, r *http.Request, id string, lab controlLab) {
	if err := lab.Reset(context.WithoutCancel(r.Context())); err != nil {
		s.fail(w, r, err)
		return
	}
	s.answer(w, r, http.StatusOK, map[string]string{"lab": id, "status": engine.StatusIdle}, "The lab is reset: no run, no connection.")
}

// handleSpeed changes the pace of the lab's run: 400 for a bad speed, 409
// when no run is going.
func (s *Server) handleSpeed(w http.ResponseWriter, r *http.Request, id string, lab controlLab) {
	speed, err := readSpeedForm(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := lab.SetSpeed(speed); err != nil {
		s.fail(w, r, err)
		return
	}
	s.answer(w, r, http.StatusOK, map[string]string{"lab": id, "speed": speed.String()}, "Speed "+speed.String()+".")
}

// handleStep lets a run in single-step mode show its next frame.
func (s *Server) handleStep(w http.ResponseWriter, r *http.Request, id string, lab controlLab) {
	if err := lab.Step(); err != nil {
		s.fail(w, r, err)
		return
	}
	s.answer(w, r, http.StatusOK, map[string]string{"lab": id}, "One step.")
}

// answer answers a control: htmx gets a sentence as an HTML fragment for
// the controls' message line, everyone else (and htmx asking for JSON) the
// JSON body.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, status int, body any, text string) {
	if r.Header.Get("HX-Request") != "" && !wantsJSON(r) {
		s.render(w, r, status, views.ControlMessage(true, text))
		return
	}
	writeJSON(w, status, body)
}

// controlLab is what state.json and the control endpoints (run, reset,
// speed, step) need of a lab; *sessions.Lab is one. Pages that show a lab
// use the manager's *sessions.Lab itself.
type controlLab interface {
	State(ctx context.Context) engine.State
	IsOwner(token string) bool
	Touch()
	Start(sessions.RunRequest) error
	Reset(ctx context.Context) error
	SetSpeed(engine.Speed) error
	Step() error
}

// controlLabs finds the lab with an id for state.json or a control
// endpoint: an error with code ENOTFOUND when there is none.
type controlLabs func(id string) (controlLab, error)

// managerLabs returns the control lookup over the lab manager, the one a
// server uses unless a test gives it another.
func managerLabs(m *sessions.Manager) controlLabs {
	return func(id string) (controlLab, error) {
		lab, err := m.Get(id)
		if err != nil {
			return nil, err // not a typed nil inside the interface
		}
		return lab, nil
	}
}

// owner wraps a control endpoint: 404 for an unknown lab, 403 unless the
// request carries the owner cookie of the browser that created the lab.
// The handler gets the lab's id (the one in the path, which is how the
// manager keys its labs) and the lab.
func (s *Server) owner(h func(w http.ResponseWriter, r *http.Request, id string, lab controlLab)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		lab, err := s.controls(id)
		if rlslab.ErrorCode(err) == rlslab.ENOTFOUND && s.labs != nil {
			var l *sessions.Lab
			if l, err = s.resumeLab(w, r, id); err == nil {
				id, lab = l.ID, l
			}
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !lab.IsOwner(cookieToken(r)) {
			s.fail(w, r, rlslab.Errorf(rlslab.EFORBIDDEN, "only the browser that created lab %s may control it", id))
			return
		}
		lab.Touch()
		h(w, r, id, lab)
	}
}

// resumeLab is the lab a control of lab id acts on when that lab is gone
// (it expired, its workshop ended, or rlslab restarted): the learner's lab
// in its place, new if need be (Manager.Resume), so that the learner's
// next action works instead of failing. The page that sent it shows the
// gone lab, so htmx is told to load it again (HX-Redirect) with the lab
// the action went to; a JSON client finds its id in Location. Without a
// learner cookie it fails with ENOTFOUND.
func (s *Server) resumeLab(w http.ResponseWriter, r *http.Request, id string) (*sessions.Lab, error) {
	ctx, cancel := context.WithTimeout(r.Context(), s.createWait)
	defer cancel()
	owner := cookieToken(r)
	if !hadLab(r, id) {
		// Only the browser that held the gone lab carries on in another;
		// any other id is an unknown lab.
		owner = ""
	}
	lab, replaced, err := s.labs.Resume(ctx, id, owner, clientIP(r))
	if rlslab.ErrorCode(err) == rlslab.EPREPARING && r.Header.Get("HX-Request") != "" {
		// The page, loaded again, waits for the lab being prepared.
		w.Header().Set("HX-Redirect", pageAfterResume(r, id, ""))
	}
	if err != nil {
		return nil, err
	}
	if replaced {
		s.rememberLab(w, r, lab.ID)
		w.Header().Set("Location", "/labs/"+lab.ID)
		if r.Header.Get("HX-Request") != "" {
			w.Header().Set("HX-Redirect", pageAfterResume(r, id, lab.ID))
		}
	}
	return lab, nil
}

// pageAfterResume is the page to load in place of the one htmx says it is
// on (HX-Current-URL) once gone lab is replaced by lab ("" while it is
// being prepared): a lesson page again, a lab's page (or its presenter
// view) for the new lab. Only the path and query of the page are kept, so
// the answer never leads to another site.
func pageAfterResume(r *http.Request, gone, lab string) string {
	u, err := url.Parse(r.Header.Get("HX-Current-URL"))
	if err != nil || u.Path == "" {
		u = &url.URL{Path: "/"}
	}
	page := &url.URL{Path: u.Path, RawQuery: u.RawQuery}
	if rest, ok := strings.CutPrefix(u.Path, "/labs/"+gone); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
		if lab == "" {
			return "/"
		}
		page.Path = "/labs/" + lab + rest
	} else if !strings.HasPrefix(u.Path, "/lessons/") {
		if lab == "" {
			return "/"
		}
		return "/labs/" + lab
	}
	return page.String()
}

// tokenPattern is what a learner token looks like (random, URL-safe).
var tokenPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{22,64}$`)

// cookieToken returns the learner token the browser sent, or "".
func cookieToken(r *http.Request) string {
	c, err := r.Cookie(OwnerCookie)
	if err != nil || !tokenPattern.MatchString(c.Value) {
		return ""
	}
	return c.Value
}

// ownerToken returns the browser's learner token, giving it a new one (in an
// HttpOnly cookie) if it has none. Nothing is written to rlslab's tables:
// the learner is stored once it has something to keep (a prediction, a
// finished run).
func (s *Server) ownerToken(w http.ResponseWriter, r *http.Request) string {
	if t := cookieToken(r); t != "" {
		return t
	}
	t := sessions.NewToken()
	s.setLearnerCookie(w, r, t)
	return t
}

// LabCookie names the cookie that remembers the labs a browser was given
// (its newest few), so that once one is gone (it expired, or rlslab
// restarted) that browser, and only it, carries on in a new lab from the
// old lab's page.
const LabCookie = "rlslab_labs"

// labsRemembered is how many lab ids the lab cookie keeps.
const labsRemembered = 8

// rememberLab adds id to the browser's lab cookie.
func (s *Server) rememberLab(w http.ResponseWriter, r *http.Request, id string) {
	had := labsOf(r)
	if len(had) > 0 && had[0] == id {
		return
	}
	keep := []string{id}
	for _, h := range had {
		if h != id && len(keep) < labsRemembered {
			keep = append(keep, h)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: LabCookie, Value: strings.Join(keep, "."), Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil, MaxAge: int(ownerCookieAge / time.Second)})
}

// labsOf returns the lab ids in the browser's lab cookie, newest first;
// anything that is not a lab id is left out.
func labsOf(r *http.Request) []string {
	c, err := r.Cookie(LabCookie)
	if err != nil {
		return nil
	}
	var ids []string
	for _, id := range strings.Split(c.Value, ".") {
		if validLabID(id) && len(ids) < labsRemembered {
			ids = append(ids, id)
		}
	}
	return ids
}

// hadLab says whether the browser was given the lab with that id.
func hadLab(r *http.Request, id string) bool {
	return slices.Contains(labsOf(r), id)
}

// setLearnerCookie keeps token in the browser's learner cookie. It is Lax,
// so that a participant arriving from a link in a chat keeps their lab;
// every control request is a POST, which Lax does not send across sites,
// and ServeHTTP also refuses foreign origins.
func (s *Server) setLearnerCookie(w http.ResponseWriter, r *http.Request, token string) {
	http.SetCookie(w, &http.Cookie{Name: OwnerCookie, Value: token, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode,
		Secure: r.TLS != nil, MaxAge: int(ownerCookieAge / time.Second)})
}

// dbTimeout bounds a request's work in rlslab's own tables.
const dbTimeout = 3 * time.Second

// preparing answers a request for a lab that is still waiting in line for
// its database: 202, and a page or fragment that asks again by itself.
func (s *Server) preparing(w http.ResponseWriter, r *http.Request, err error) {
	msg := rlslab.ErrorMessage(err)
	w.Header().Set("Retry-After", "1")
	switch {
	case wantsJSON(r):
		writeJSON(w, http.StatusAccepted, map[string]string{"status": "preparing", "message": msg})
	case r.Header.Get("HX-Request") != "":
		s.render(w, r, http.StatusAccepted, views.LabPreparing(r.URL.RequestURI(), msg))
	default:
		s.render(w, r, http.StatusAccepted, views.LabPreparingPage(r.URL.RequestURI(), msg))
	}
}

// validLabID says whether s has the shape of a lab id: 8 lower-case hex
// digits.
func validLabID(s string) bool {
	if len(s) != 8 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
