// Package web serves rlslab's pages, its JSON and its websockets.
package web

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/a-h/templ"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/live"
	"github.com/rlslab/rlslab/web/views"
)

// OwnerCookie is the cookie that holds a browser's owner secret: the
// browser that created a lab may control it.
const OwnerCookie = "rlslab_owner"

// Server is rlslab's HTTP handler.
type Server struct {
	labs    *sessions.Manager
	lessons *lessons.Set
	static  fs.FS
	log     *slog.Logger
	mux     *http.ServeMux
	hubs    *live.Hubs[*sessions.Lab, labFrame] // the lab, presenter and watch views' frames

	// The store-backed services (services.go); nil without rlslab's own
	// tables.
	workshops  Workshops
	progress   Progress
	recordings Recordings

	// controls finds a lab for state.json and the control endpoints:
	// managerLabs(labs), unless a test gives the server another lookup.
	controls controlLabs

	// Workshops, presenters and recordings (workshops.go, present.go,
	// runs.go).
	joins *joinLimiter
	recs  *recordingCache
	// dashboards are the workshop dashboards' frames, by workshop id.
	dashboards *live.Hubs[string, dashFrame]

	// createWait is how long a request for a new lab waits before it is
	// told the lab is being prepared (WithCreateWait).
	createWait time.Duration

	// wsBuffers lends the websockets their write buffers (see serveWS).
	wsBuffers *sync.Pool

	// proxy is where rlslab's PostgreSQL proxy listens (appconn.go).
	proxy Proxy
}

// WithCreateWait sets how long a request for a new lab waits for it before
// the answer says it is being prepared (default 5 s), and returns s.
func (s *Server) WithCreateWait(d time.Duration) *Server {
	s.createWait = d
	return s
}

// NewServer returns the handler for labs, lessons and static files.
func NewServer(labs *sessions.Manager, ls *lessons.Set, static fs.FS, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{labs: labs, controls: managerLabs(labs), lessons: ls, static: static, log: log, mux: http.NewServeMux()}
	s.hubs = live.NewHubs(s.openLabSource, live.Options{Poll: serverCountsEvery}, log)
	s.joins = newJoinLimiter()
	s.recs = newRecordingCache()
	s.dashboards = live.NewHubs(s.openDashSource, live.Options{Poll: dashboardEvery}, log)
	s.createWait = createTimeout
	s.wsBuffers = &sync.Pool{}
	s.routes()
	return s
}

// Close stops the live views (every watcher is told).
func (s *Server) Close() {
	s.hubs.Close()
	s.dashboards.Close()
}

// routes registers every endpoint.
func (s *Server) routes() {
	s.mux.HandleFunc("GET /{$}", s.handleIndex)
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.HandleFunc("GET /lessons/{slug}", s.handleLesson)
	s.mux.HandleFunc("POST /labs", s.handleCreateLab)
	s.mux.HandleFunc("GET /labs/{id}", s.handleLab)
	s.mux.HandleFunc("GET /labs/{id}/state.json", s.handleState)
	s.mux.HandleFunc("POST /labs/{id}/runs", s.owner(s.handleRun))
	s.mux.HandleFunc("POST /labs/{id}/reset", s.owner(s.handleReset))
	s.mux.HandleFunc("POST /labs/{id}/speed", s.owner(s.handleSpeed))
	s.mux.HandleFunc("POST /labs/{id}/step", s.owner(s.handleStep))
	s.mux.HandleFunc("GET /labs/{id}/ws", s.handleWS)
	s.mux.HandleFunc("POST /labs/{id}/sql", s.handleSQL)
	s.progressRoutes()
	s.workshopRoutes()
	s.runRoutes()
	s.presentRoutes()
	s.appRoutes()
	s.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(s.static)))
}

// ServeHTTP refuses state-changing requests from foreign origins, and
// framing by other sites (but for an embedded replay), then routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	refuseFraming(w)
	if r.Method != http.MethodGet && r.Method != http.MethodHead && !sameOrigin(r) {
		s.fail(w, r, rlslab.Errorf(rlslab.EFORBIDDEN, "requests from origin %q are refused", r.Header.Get("Origin")))
		return
	}
	if _, pattern := s.mux.Handler(r); pattern == "" {
		// No route: the mux answers 404 or 405 in plain text; a 404 gets
		// the site's error page (or JSON) instead.
		w = &plainNotFound{ResponseWriter: w, s: s, r: r}
	}
	s.mux.ServeHTTP(w, r)
}

// plainNotFound replaces the mux's plain-text 404 with the site's own.
type plainNotFound struct {
	http.ResponseWriter
	s        *Server
	r        *http.Request
	replaced bool
}

func (p *plainNotFound) WriteHeader(code int) {
	if code == http.StatusNotFound {
		p.replaced = true
		p.ResponseWriter.Header().Del("Content-Type")
		p.ResponseWriter.Header().Del("X-Content-Type-Options")
		p.s.fail(p.ResponseWriter, p.r, rlslab.Errorf(rlslab.ENOTFOUND, "there is no page at %s", p.r.URL.Path))
		return
	}
	p.ResponseWriter.WriteHeader(code)
}

func (p *plainNotFound) Write(b []byte) (int, error) {
	if p.replaced {
		return len(b), nil
	}
	return p.ResponseWriter.Write(b)
}

// sameOrigin reports whether r carries no Origin header or one whose host
// is the request's own host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}

// ErrorStatus maps an error's code to its HTTP status.
func ErrorStatus(err error) int {
	switch rlslab.ErrorCode(err) {
	case rlslab.EINVALID:
		return http.StatusBadRequest
	case rlslab.ENOTFOUND:
		return http.StatusNotFound
	case rlslab.ECONFLICT:
		return http.StatusConflict
	case rlslab.EFORBIDDEN:
		return http.StatusForbidden
	case rlslab.EUNAVAILABLE:
		return http.StatusServiceUnavailable
	case rlslab.ETOOMANY:
		return http.StatusTooManyRequests
	case rlslab.EPREPARING:
		return http.StatusAccepted
	}
	return http.StatusInternalServerError
}

// fail writes err as JSON or as a page, as the client asked.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := ErrorStatus(err)
	msg := rlslab.ErrorMessage(err)
	if status == http.StatusInternalServerError {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	if r.Header.Get("HX-Request") != "" && !wantsJSON(r) && r.Method != http.MethodGet {
		// A control pressed in a page: htmx swaps the sentence in.
		s.render(w, r, status, views.ControlMessage(false, msg))
		return
	}
	// A form a browser sent without htmx (joining a workshop, creating
	// one) asks for HTML: it gets the error page, not JSON.
	if wantsJSON(r) || r.Header.Get("HX-Request") != "" || (r.Method != http.MethodGet && !acceptsHTML(r)) || strings.HasSuffix(r.URL.Path, ".json") {
		writeJSON(w, status, map[string]string{"error": msg, "code": rlslab.ErrorCode(err)})
		return
	}
	s.render(w, r, status, views.ErrorPage(status, http.StatusText(status), msg))
}

// acceptsHTML reports whether the client asks for HTML, as a browser does
// for a page or a form it submits.
func acceptsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

// wantsJSON reports whether the client prefers JSON.
func wantsJSON(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "application/json") ||
		strings.HasPrefix(r.Header.Get("Content-Type"), "application/json")
}

// writeJSON writes v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		http.Error(w, `{"error":"encoding failed"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// render writes a templ component as HTML with status.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, c templ.Component) {
	var buf bytes.Buffer
	if err := c.Render(r.Context(), &buf); err != nil {
		s.log.Error("render", "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}
