package web

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/live"
	"github.com/rlslab/rlslab/web/views"
)

// FacilitatorCookie holds a workshop's facilitator secret; its path is the
// workshop's own (/workshops/{id}), so each workshop has its own.
const FacilitatorCookie = "rlslab_facilitator"

// dashboardEvery is how often a watched workshop's board is read again
// (its cards are sent only when they changed).
const dashboardEvery = 300 * time.Millisecond

// dashReadTimeout bounds the read of a workshop's board for the first
// frame of its dashboard (later reads are bounded by the hub).
const dashReadTimeout = time.Second

// workshopRoutes registers the workshop endpoints.
func (s *Server) workshopRoutes() {
	s.mux.HandleFunc("POST /workshops", s.handleCreateWorkshop)
	s.mux.HandleFunc("GET /join", s.handleJoinByCode)
	s.mux.HandleFunc("GET /workshops/{id}", s.handleDashboard)
	s.mux.HandleFunc("GET /workshops/{id}/state.json", s.facilitator(s.handleWorkshopState))
	s.mux.HandleFunc("GET /workshops/{id}/ws", s.facilitator(s.handleDashboardWS))
	s.mux.HandleFunc("POST /workshops/{id}/lesson", s.facilitator(s.handleSetLesson))
	s.mux.HandleFunc("POST /workshops/{id}/end", s.facilitator(s.handleEndWorkshop))
	s.mux.HandleFunc("GET /workshops/{id}/join", s.handleJoinForm)
	s.mux.HandleFunc("POST /workshops/{id}/join", s.handleJoin)
	s.mux.HandleFunc("GET /me/workshop", s.handleWorkshopNotice)
	s.mux.HandleFunc("GET /workshops/new", s.handleNewWorkshop)
	s.mux.HandleFunc("GET /workshops/{id}/room", s.facilitator(s.handleRoom))
	s.mux.HandleFunc("GET /workshops/{id}/room/live", s.facilitator(s.handleRoom))
	s.mux.HandleFunc("GET /workshops/{id}/participants.csv", s.facilitator(s.handleParticipantsCSV))
	s.mux.HandleFunc("POST /workshops/{id}/participants/reset", s.facilitator(s.handleResetLab))
}

// handleNewWorkshop is the facilitator's form.
func (s *Server) handleNewWorkshop(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, views.NewWorkshopPage(s.lessons.All()))
}

// joinQR is the join link as an SVG QR code, "" (logged) if it cannot be
// one.
func (s *Server) joinQR(link string) string {
	qr, err := views.QRSVG(link, "QR code of the join link")
	if err != nil {
		s.log.Warn("join link has no QR code", "err", err)
		return ""
	}
	return qr
}

// workshopForm is what POST /workshops reads.
type workshopForm struct {
	Title   string   `json:"title"`
	Lessons []string `json:"lessons"`
	// Expected is how many participants the facilitator expects (0: not
	// said); rlslab prepares their labs ahead.
	Expected int `json:"expected"`
}

// readWorkshopForm reads a workshop from JSON or a form. In a form, lessons
// may repeat or be separated by commas or spaces.
func readWorkshopForm(w http.ResponseWriter, r *http.Request) (workshopForm, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var f workshopForm
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(r.Body)
		if err := dec.Decode(&f); err != nil {
			return f, rlslab.Errorf(rlslab.EINVALID, "the body is not a workshop as JSON: %s", shortJSONError(err))
		}
		return f, nil
	}
	if err := r.ParseForm(); err != nil {
		return f, rlslab.Errorf(rlslab.EINVALID, "the form could not be read")
	}
	f.Title = r.PostForm.Get("title")
	if v := strings.TrimSpace(r.PostForm.Get("expected")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return f, rlslab.Errorf(rlslab.EINVALID, "expected participants %q: want a whole number", truncateText(v, 32))
		}
		f.Expected = n
	}
	for _, v := range r.PostForm["lessons"] {
		f.Lessons = append(f.Lessons, strings.FieldsFunc(v, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t' })...)
	}
	return f, nil
}

// shortJSONError names what was wrong with a JSON body without echoing it.
func shortJSONError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return "it is empty"
	case errors.As(err, &se):
		return "a syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		return "field " + strconv.Quote(te.Field) + " has the wrong type"
	}
	return "it could not be read"
}

// handleCreateWorkshop creates a workshop: the page with its two links, or
// 201 with them as JSON.
func (s *Server) handleCreateWorkshop(w http.ResponseWriter, r *http.Request) {
	if !s.needWorkshops(w, r) {
		return
	}
	f, err := readWorkshopForm(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	ws, secret, err := s.workshops.Create(ctx, f.Title, f.Lessons, f.Expected)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	base := baseURL(r)
	join := base + "/workshops/" + ws.ID + "/join?code=" + ws.Code
	fac := base + "/workshops/" + ws.ID + "?key=" + url.QueryEscape(secret)
	s.setFacilitatorCookie(w, r, ws.ID, secret)
	if wantsJSON(r) {
		w.Header().Set("Location", "/workshops/"+ws.ID)
		writeJSON(w, http.StatusCreated, map[string]string{"id": ws.ID, "code": ws.Code, "join_url": join, "facilitator_url": fac})
		return
	}
	s.render(w, r, http.StatusCreated, views.WorkshopCreated(views.WorkshopLinks{ID: ws.ID, Title: ws.Title, Code: ws.Code, JoinURL: join,
		FacilitatorURL: fac, QR: s.joinQR(join)}))
}

// baseURL is the scheme and host the request came to.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// truncateText cuts s to at most n bytes (for quoting bad input in errors).
func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// setFacilitatorCookie keeps a workshop's facilitator secret in a cookie
// sent only to that workshop's pages.
func (s *Server) setFacilitatorCookie(w http.ResponseWriter, r *http.Request, id, secret string) {
	http.SetCookie(w, &http.Cookie{Name: FacilitatorCookie, Value: secret, Path: "/workshops/" + id, HttpOnly: true,
		SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil, MaxAge: int(ownerCookieAge / time.Second)})
}

// facilitatorSecret returns the secret the request carries for the
// workshop: its ?key= or its cookie.
func facilitatorSecret(r *http.Request) string {
	if k := r.URL.Query().Get("key"); k != "" {
		return k
	}
	if c, err := r.Cookie(FacilitatorCookie); err == nil {
		return c.Value
	}
	return ""
}

// checkFacilitator returns the workshop in the path if the request carries
// its facilitator secret: ENOTFOUND for an unknown workshop, EFORBIDDEN
// otherwise.
func (s *Server) checkFacilitator(ctx context.Context, r *http.Request) (sessions.Workshop, error) {
	return s.workshops.Facilitate(ctx, r.PathValue("id"), facilitatorSecret(r))
}

// facilitator wraps an endpoint only the workshop's facilitator may use.
func (s *Server) facilitator(h func(http.ResponseWriter, *http.Request, sessions.Workshop)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.needWorkshops(w, r) {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
		ws, err := s.checkFacilitator(ctx, r)
		cancel()
		if err != nil {
			s.fail(w, r, err)
			return
		}
		h(w, r, ws)
	}
}

// handleDashboard shows the facilitator's dashboard. Opened with ?key=, it
// keeps the key in a cookie and redirects to the address without it.
func (s *Server) handleDashboard(w http.ResponseWriter, r *http.Request) {
	if !s.needWorkshops(w, r) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	ws, err := s.checkFacilitator(ctx, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if k := r.URL.Query().Get("key"); k != "" {
		s.setFacilitatorCookie(w, r, ws.ID, k)
		http.Redirect(w, r, "/workshops/"+ws.ID, http.StatusSeeOther)
		return
	}
	b, err := s.workshops.Board(ctx, ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := s.dashboard(b, baseURL(r))
	d.QR = s.joinQR(d.JoinURL)
	s.render(w, r, http.StatusOK, views.DashboardPage(d.Apply(views.ParseDashView(r.URL.Query()))))
}

// dashboard is the view model of a workshop's dashboard.
func (s *Server) dashboard(b sessions.Board, base string) views.Dashboard {
	ws, u := b.Workshop, b.Usage
	d := views.Dashboard{ID: ws.ID, Title: ws.Title, Code: ws.Code, Current: ws.CurrentLesson, Ended: ws.Ended(),
		JoinURL:  base + "/workshops/" + ws.ID + "/join?code=" + ws.Code,
		Capacity: views.Capacity{Labs: u.Labs, MaxLabs: u.MaxLabs, Conns: u.RunConns, Budget: u.Budget, Queued: u.Queued},
		Counts:   views.WorkshopCounts{Joined: b.Counts.Joined, Running: b.Counts.Running, Leaked: b.Counts.Leaked, Fixed: b.Counts.Fixed},
		Cards:    []views.Card{}}
	for i, slug := range ws.Lessons {
		d.Lessons = append(d.Lessons, views.LessonRef{Index: i, Slug: slug, Title: s.lessonTitle(slug)})
	}
	if ws.Expected > 0 && !ws.Ended() {
		// An ended workshop has no labs to get ready.
		d.Counts.Expected, d.Counts.LabsReady = ws.Expected, b.Ready
		for _, c := range b.Cards {
			if c.Lab != "" && c.Status != "lab closed" {
				d.Counts.LabsReady++
			}
		}
		d.Counts.LabsReady = min(d.Counts.LabsReady, ws.Expected)
	}
	for _, c := range b.Cards {
		v := views.Card{Name: c.Name, Lab: c.Lab, LessonSlug: c.Lesson, Lesson: s.lessonTitle(c.Lesson), Status: c.Status, Running: c.Running,
			LiveRun: c.LiveRun, LeakSeen: c.LeakSeen, FixRun: c.FixRun, Predictions: "–", PredRight: c.PredRight, PredTotal: c.PredTotal,
			QueueAhead: c.QueueAhead, Idle: c.Idle, LastActive: c.LastActive, VariantsRun: c.VariantsRun}
		if c.LastRun != nil {
			v.LastRun = &views.CardRun{Scenario: c.LastRun.Scenario, Variant: c.LastRun.Variant, Status: c.LastRun.Status, Leaks: c.LastRun.Leaks, Outcome: c.LastRun.Outcome}
		}
		if c.PredTotal > 0 {
			v.Predictions = strconv.Itoa(c.PredRight) + "/" + strconv.Itoa(c.PredTotal) + " right"
		}
		d.Cards = append(d.Cards, v)
	}
	return d
}

// lessonTitle returns the title of the lesson slug, or the slug.
func (s *Server) lessonTitle(slug string) string {
	if l, err := s.lessons.Get(slug); err == nil {
		return l.Title
	}
	return slug
}

// workshopState is GET /workshops/{id}/state.json.
type workshopState struct {
	ID           string               `json:"id"`
	Title        string               `json:"title"`
	Code         string               `json:"code"`
	Lesson       string               `json:"lesson"` // the workshop's current lesson
	Ended        bool                 `json:"ended"`
	Counts       views.WorkshopCounts `json:"counts"`
	Capacity     views.Capacity       `json:"capacity"`
	Participants []participantState   `json:"participants"`
}

// participantState is one participant in workshopState.
type participantState struct {
	Name        string          `json:"name"`
	Lab         string          `json:"lab"`
	Lesson      string          `json:"lesson"`
	Status      string          `json:"status"` // the lab's live status
	LeakSeen    bool            `json:"leak_seen"`
	FixRun      bool            `json:"fix_run"`
	LastRun     *views.CardRun  `json:"last_run"`
	Predictions predictionScore `json:"predictions"`
}

// predictionScore is how many of a participant's checked predictions were
// right, of how many.
type predictionScore struct {
	Right int `json:"right"`
	Total int `json:"total"`
}

func (s *Server) handleWorkshopState(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	b, err := s.workshops.Board(ctx, ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := s.dashboard(b, baseURL(r))
	out := workshopState{ID: d.ID, Title: d.Title, Code: d.Code, Ended: d.Ended, Counts: d.Counts, Capacity: d.Capacity, Participants: []participantState{}}
	if ws.CurrentLesson < len(ws.Lessons) {
		out.Lesson = ws.Lessons[ws.CurrentLesson]
	}
	for _, c := range d.Cards {
		out.Participants = append(out.Participants, participantState{Name: c.Name, Lab: c.Lab, Lesson: c.LessonSlug, Status: c.Status,
			LeakSeen: c.LeakSeen, FixRun: c.FixRun, LastRun: c.LastRun, Predictions: predictionScore{Right: c.PredRight, Total: c.PredTotal}})
	}
	writeJSON(w, http.StatusOK, out)
}

// handleDashboardWS keeps the dashboard's cards live: it streams the
// frames of the workshop's hub, which every tab of the workshop shares.
func (s *Server) handleDashboardWS(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	conn := s.upgradeWS(w, r)
	if conn == nil {
		return
	}
	watcher := s.dashboards.Watch(ws.ID)
	defer watcher.Close()
	view := views.ParseDashView(r.URL.Query())
	var last []byte
	streamWS(s, r, conn, watcher, stream[dashFrame]{what: []any{"workshop", ws.ID}, bye: "rlslab is stopping",
		message: func(f dashFrame) []byte {
			if view.IsDefault() || f.dash == nil {
				return f.html
			}
			// This tab's own sort and filter: rendered for it alone.
			var buf bytes.Buffer
			if err := views.DashboardLive(f.dash.Apply(view), true).Render(r.Context(), &buf); err != nil {
				s.log.Error("render dashboard", "workshop", ws.ID, "err", err)
				return nil
			}
			if bytes.Equal(buf.Bytes(), last) {
				return nil
			}
			last = buf.Bytes()
			return last
		}})
}

// dashFrame is one frame of a workshop's dashboard, as its hub hands it to
// every websocket watching the workshop: the live part of the dashboard
// (swapped in by id) in the default view, nil before the workshop could be
// read once, and the dashboard it shows, for a tab with a view of its own.
// Both are shared by every watcher and never changed.
type dashFrame struct {
	html []byte
	dash *views.Dashboard
}

// dashSource renders one workshop's dashboard frames for its hub: Refresh
// reads the workshop's board (every dashboardEvery, while anyone watches),
// Frame renders the board read last. However many tabs show the
// dashboard, the board is read once per interval.
type dashSource struct {
	s  *Server
	id string

	mu    sync.Mutex
	board sessions.Board // the board read last
	reads uint64         // boards read so far
	err   error          // why the last read failed; nil after a good one

	// Owned by the hub's goroutine (Frame).
	started bool
	framed  uint64           // the read rendered last
	last    []byte           // the HTML sent last
	dash    *views.Dashboard // the dashboard of last
}

// openDashSource is the source of the dashboard hub of workshop id.
func (s *Server) openDashSource(id string) live.Source[dashFrame] { return &dashSource{s: s, id: id} }

// Changes returns nil: the board is read every dashboardEvery.
func (src *dashSource) Changes() (<-chan struct{}, func()) { return nil, func() {} }

// Done returns nil: an ended workshop's dashboard still shows it ended.
func (src *dashSource) Done() <-chan struct{} { return nil }

// Refresh reads the workshop's board. A failed read keeps the board read
// before (the cards stay as they were) and is logged once, when the
// outage starts; an ended workshop, once read, is not read again.
func (src *dashSource) Refresh(ctx context.Context) {
	src.mu.Lock()
	ended := src.reads > 0 && src.board.Workshop.Ended()
	src.mu.Unlock()
	if ended {
		return
	}
	b, err := src.s.workshops.Board(ctx, src.id)
	src.mu.Lock()
	defer src.mu.Unlock()
	if err != nil {
		if src.err == nil && !errors.Is(err, context.Canceled) {
			src.s.log.Warn("dashboard: the workshop cannot be read; its cards stay as they were", "workshop", src.id, "err", err)
		}
		src.err = err
		return
	}
	if src.err != nil {
		src.s.log.Info("dashboard: the workshop is read again", "workshop", src.id)
	}
	src.board, src.err = b, nil
	src.reads++
}

// Frame renders the board read last, and returns false when no board was
// read since the last frame or the cards look the same. Its first call
// reads the board at once (within dashReadTimeout), so that the first tab
// gets the cards without waiting for the first Refresh; when that read
// fails, the first frame is empty (nothing is sent) and the cards come
// with the first good read.
func (src *dashSource) Frame(ctx context.Context) (dashFrame, bool) {
	first := !src.started
	if first {
		src.started = true
		rctx, cancel := context.WithTimeout(ctx, dashReadTimeout)
		src.Refresh(rctx)
		cancel()
	}
	src.mu.Lock()
	b, n := src.board, src.reads
	src.mu.Unlock()
	if n == 0 || n == src.framed {
		return dashFrame{html: src.last, dash: src.dash}, first
	}
	src.framed = n
	var buf bytes.Buffer
	// The base address only makes the join link, which the live part does
	// not show.
	d := src.s.dashboard(b, "")
	if err := views.DashboardLive(d.Apply(views.ParseDashView(nil)), true).Render(ctx, &buf); err != nil {
		src.s.log.Error("render dashboard", "workshop", src.id, "err", err)
		return dashFrame{html: src.last, dash: src.dash}, false
	}
	if bytes.Equal(buf.Bytes(), src.last) {
		return dashFrame{html: src.last, dash: src.dash}, false
	}
	src.last, src.dash = buf.Bytes(), &d
	return dashFrame{html: src.last, dash: src.dash}, true
}

// handleSetLesson moves everyone to the lesson at form field "lesson" (a
// 1-based number, or a slug of the workshop).
func (s *Server) handleSetLesson(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var v string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var f struct {
			Lesson json.RawMessage `json:"lesson"`
		}
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "the body is not JSON: %s", shortJSONError(err)))
			return
		}
		v = strings.Trim(string(f.Lesson), `"`)
	} else {
		if err := r.ParseForm(); err != nil {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "the form could not be read"))
			return
		}
		v = r.PostForm.Get("lesson")
	}
	idx := -1
	if n, err := strconv.Atoi(v); err == nil {
		idx = n - 1
	} else {
		for i, slug := range ws.Lessons {
			if slug == v {
				idx = i
			}
		}
	}
	if idx < 0 || idx >= len(ws.Lessons) {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "lesson must be a number from 1 to %d, or one of the workshop's lessons", len(ws.Lessons)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := s.workshops.Move(ctx, ws.ID, idx); err != nil {
		s.fail(w, r, err)
		return
	}
	if r.Header.Get("HX-Request") == "" && !wantsJSON(r) {
		http.Redirect(w, r, "/workshops/"+ws.ID, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": ws.ID, "lesson": ws.Lessons[idx], "number": idx + 1, "status": "moved to lesson " + strconv.Itoa(idx+1)})
}

// handleEndWorkshop drops every participant's lab, then ends the workshop.
func (s *Server) handleEndWorkshop(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	closed, err := s.workshops.End(context.WithoutCancel(r.Context()), ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if r.Header.Get("HX-Request") == "" && !wantsJSON(r) {
		http.Redirect(w, r, "/workshops/"+ws.ID, http.StatusSeeOther)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": ws.ID, "status": "ended", "labs_closed": closed})
}

// clientIP is the address the request came from (proxies' headers are not
// trusted).
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// workshopByCode finds the open workshop with that code, counting a miss
// against the client; id, when not "", must be the workshop's. Blocked
// clients get ETOOMANY without a look-up.
func (s *Server) workshopByCode(ctx context.Context, r *http.Request, id, code string) (sessions.Workshop, error) {
	ip := clientIP(r)
	if err := s.joins.check(ip, time.Now()); err != nil {
		return sessions.Workshop{}, err
	}
	ws, err := s.workshops.ByCode(ctx, code)
	if err == nil && id != "" && ws.ID != id {
		err = rlslab.Errorf(rlslab.ENOTFOUND, "no open workshop has that code")
	}
	if err != nil {
		if rlslab.ErrorCode(err) == rlslab.ENOTFOUND {
			s.joins.fail(ip, time.Now())
			err = rlslab.Errorf(rlslab.ENOTFOUND, "no open workshop has that join code: check it with your facilitator")
			// The miss is still counted against the client, so the
			// answer tells nothing a wrong guess would not.
			if s.workshops.EndedWithCode(ctx, id, code) {
				err = rlslab.Errorf(rlslab.ENOTFOUND, "this workshop has ended: its labs are closed, and it takes no more participants")
			}
		}
		return sessions.Workshop{}, err
	}
	return ws, nil
}

// askForCode answers a browser's join link that came without a join code
// with the form that asks for it, sent to action, and reports whether it
// did. Nothing is looked up and no wrong code is counted; a JSON client
// goes on to the look-up's answer.
func (s *Server) askForCode(w http.ResponseWriter, r *http.Request, action, code string) bool {
	if strings.TrimSpace(code) != "" || wantsJSON(r) {
		return false
	}
	s.render(w, r, http.StatusOK, views.JoinCodePage(action))
	return true
}

// handleJoinByCode is the home page's join box: the code as typed, to the
// workshop's join page.
func (s *Server) handleJoinByCode(w http.ResponseWriter, r *http.Request) {
	if !s.needWorkshops(w, r) {
		return
	}
	code := r.URL.Query().Get("code")
	if s.askForCode(w, r, "/join", code) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	ws, err := s.workshopByCode(ctx, r, "", code)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	http.Redirect(w, r, "/workshops/"+ws.ID+"/join?code="+url.QueryEscape(ws.Code), http.StatusSeeOther)
}

// handleJoinForm asks a participant for their display name.
func (s *Server) handleJoinForm(w http.ResponseWriter, r *http.Request) {
	if !s.needWorkshops(w, r) {
		return
	}
	code := r.URL.Query().Get("code")
	if s.askForCode(w, r, "/workshops/"+url.PathEscape(r.PathValue("id"))+"/join", code) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	ws, err := s.workshopByCode(ctx, r, r.PathValue("id"), code)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, views.JoinPage(views.JoinForm{ID: ws.ID, Title: ws.Title, Code: ws.Code}))
}

// readJoinForm reads a join: the name and the code, from JSON or a form
// (the code may also be in the address), and the form's retry number
// after a 503 (0 when absent or out of 1 to 99). Bad input is EINVALID.
func readJoinForm(w http.ResponseWriter, r *http.Request) (name, code string, try int, err error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	code = r.URL.Query().Get("code")
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var f struct {
			Name string `json:"name"`
			Code string `json:"code"`
		}
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			return "", "", 0, rlslab.Errorf(rlslab.EINVALID, "the body is not JSON with a name: %s", shortJSONError(err))
		}
		if code == "" {
			code = f.Code
		}
		return f.Name, code, 0, nil
	}
	if err := r.ParseForm(); err != nil {
		return "", "", 0, rlslab.Errorf(rlslab.EINVALID, "the form could not be read")
	}
	if code == "" {
		code = r.PostForm.Get("code")
	}
	if n, err := strconv.Atoi(r.PostForm.Get("try")); err == nil && n > 0 && n < 100 {
		try = n
	}
	return r.PostForm.Get("name"), code, try, nil
}

// handleJoin adds a participant: the learner cookie, their own lab, and a
// redirect to the workshop's current lesson (201 {"lab"} for JSON).
func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	if !s.needWorkshops(w, r) {
		return
	}
	name, code, try, err := readJoinForm(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.createWait)
	defer cancel()
	ws, err := s.workshopByCode(ctx, r, r.PathValue("id"), code)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	j, err := s.workshops.Join(ctx, ws, name)
	if err != nil {
		if !wantsJSON(r) && rlslab.ErrorCode(err) == rlslab.EUNAVAILABLE {
			// Not joined for now: the form again, which the page sends
			// again by itself after 1 s, then 2, 4, up to 10 s.
			retry := min(1<<min(try, 4), 10)
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			s.render(w, r, http.StatusServiceUnavailable, views.JoinPage(views.JoinForm{ID: ws.ID, Title: ws.Title, Code: ws.Code,
				Name: truncateText(name, sessions.MaxNameLen*4), Error: rlslab.ErrorMessage(err), RetryIn: retry, Try: try + 1}))
			return
		}
		if !wantsJSON(r) {
			// Show the form again with the reason, the name escaped.
			s.render(w, r, ErrorStatus(err), views.JoinPage(views.JoinForm{ID: ws.ID, Title: ws.Title, Code: ws.Code,
				Name: truncateText(name, sessions.MaxNameLen*4), Error: rlslab.ErrorMessage(err)}))
			return
		}
		s.fail(w, r, err)
		return
	}
	s.setLearnerCookie(w, r, j.Token)
	if j.LabErr != nil && wantsJSON(r) {
		// Joined, but no lab yet: the lesson page asks for one again.
		s.fail(w, r, j.LabErr)
		return
	}
	if wantsJSON(r) {
		w.Header().Set("Location", "/lessons/"+j.Lesson)
		writeJSON(w, http.StatusCreated, map[string]string{"lab": j.Lab.ID, "lesson": j.Lesson, "workshop": ws.ID, "name": j.Participant.Name})
		return
	}
	http.Redirect(w, r, "/lessons/"+url.PathEscape(j.Lesson), http.StatusSeeOther)
}

// stopPolling is htmx's status for "stop polling".
const stopPolling = 286

// handleWorkshopNotice is polled by lesson pages: for a participant it
// says when the facilitator moved to another lesson or ended the
// workshop, and notes which lesson the participant is on; anyone else gets
// an empty answer that stops the polling.
func (s *Server) handleWorkshopNotice(w http.ResponseWriter, r *http.Request) {
	token := cookieToken(r)
	if s.workshops == nil || token == "" {
		w.WriteHeader(stopPolling)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	here := r.URL.Query().Get("lesson")
	got, err := s.workshops.Notice(ctx, token, here)
	if rlslab.ErrorCode(err) == rlslab.ENOTFOUND {
		w.WriteHeader(stopPolling)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ws := got.Workshop
	n := views.Notice{Workshop: ws.Title, Ended: ws.Ended(), Number: ws.CurrentLesson + 1, Slug: got.Lesson}
	if n.Slug != "" {
		n.Title = s.lessonTitle(n.Slug)
	}
	n.Moved = n.Slug != "" && n.Slug != here
	s.render(w, r, http.StatusOK, views.WorkshopNotice(n))
}
