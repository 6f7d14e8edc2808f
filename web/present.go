package web

import (
	"net/http"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// presentRoutes registers the presenter view and its websocket.
func (s *Server) presentRoutes() {
	s.mux.HandleFunc("GET /labs/{id}/present", s.handlePresent)
	s.mux.HandleFunc("GET /labs/{id}/present/ws", s.handlePresentWS)
}

// headOf is the pinned head of a lab in state st.
func headOf(cat *engine.Catalog, st engine.State) views.Head {
	h := views.Head{Scenario: st.Scenario, Variant: st.Variant, Status: st.Status, Leaks: st.Leaks(), Requests: len(st.Requests) + st.DroppedRequests}
	if v, ok := views.ShownOutcome(st); ok {
		h.Kind = v.Kind
	}
	switch st.Scenario {
	case sessions.FreePlayScenario:
		h.Title = "Free play: own SQL on the lab's pool"
	case sessions.AppScenario:
		// A learner's own app's session; the your-app scenario's runs
		// (the seed's requests) have their title in the catalog.
		h.Title = "An app of one's own, through rlslab's proxy"
		if sc, err := cat.Lookup(st.Scenario); err == nil && sc.HasVariant(st.Variant) {
			h.Title = sc.Title
		}
	default:
		if sc, err := cat.Lookup(st.Scenario); err == nil {
			h.Title = sc.Title
		}
	}
	return h
}

// handlePresentWS streams a lab's presenter frames.
func (s *Server) handlePresentWS(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, true) }

// handlePresent is the projector view of a lab: keyboard controls for its
// owner, the same frames without controls for everyone else.
func (s *Server) handlePresent(w http.ResponseWriter, r *http.Request) {
	lab, err := s.labs.Get(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	owner := lab.IsOwner(cookieToken(r))
	if owner {
		lab.Touch()
	}
	st := lab.Tracker().Snapshot()
	id := st.Scenario
	if q := r.URL.Query().Get("scenario"); q != "" && st.Scenario == "" {
		id = q
	}
	sc, err := s.labs.Catalog().Lookup(id)
	if err != nil {
		all := s.labs.Catalog().All()
		sc = all[0]
		if l := s.lessons.All(); len(l) > 0 {
			if first, err := s.labs.Catalog().Lookup(l[0].Scenario); err == nil {
				sc = first
			}
		}
	}
	p := s.watchPage(lab, st)
	p.Owner = owner
	p.Scenario = sc.ID
	for _, v := range sc.Variants {
		p.Variants = append(p.Variants, views.VariantKey{Name: v.Name, Summary: v.Summary, Current: v.Name == st.Variant})
	}
	if len(p.Variants) > 9 {
		p.Variants = p.Variants[:9]
	}
	s.render(w, r, http.StatusOK, views.PresentPage(p))
}

// watchPage is the view model shared by the presenter and watch views.
func (s *Server) watchPage(lab *sessions.Lab, st engine.State) views.WatchPage {
	p := views.WatchPage{Lab: lab.ID, Head: headOf(s.labs.Catalog(), st), Live: views.NewLive(st, st.Tenants), Narration: st.Narration}
	if l := s.lessons.ForScenario(st.Scenario); l != nil {
		p.Lesson = l.Title
		p.LessonSlug = l.Slug
	}
	return p
}

// renderWatch is the watch view of a lab: what its owner's browser shows,
// without the controls.
func (s *Server) renderWatch(w http.ResponseWriter, r *http.Request, lab *sessions.Lab) {
	s.render(w, r, http.StatusOK, views.Watch(s.watchPage(lab, lab.Tracker().Snapshot())))
}
