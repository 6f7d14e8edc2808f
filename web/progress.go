package web

import (
	"context"
	"net/http"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// progressRoutes registers the prediction and progress endpoints.
func (s *Server) progressRoutes() {
	s.mux.HandleFunc("GET /progress.json", s.handleProgress)
	s.mux.HandleFunc("POST /lessons/{slug}/predictions", s.handlePredict)
	s.mux.HandleFunc("GET /lessons/{slug}/predictions/{variant}", s.handlePrediction)
}

// handleProgress serves the learner's progress: per lesson, the variants
// run, whether the leak was seen and the fix run, and the checked
// predictions. A browser rlslab's tables do not know gets no lessons; the GET
// creates no learner.
func (s *Server) handleProgress(w http.ResponseWriter, r *http.Request) {
	if s.progress == nil {
		s.fail(w, r, errNoTables())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	p, err := s.progress.Of(ctx, cookieToken(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// homePage is the view model of the lesson list for the browser whose
// learner token is token: each lesson's marks, and where to continue. When
// the progress cannot be read (an outage), the lessons are listed without
// marks.
func (s *Server) homePage(ctx context.Context, token string) views.HomePage {
	all := s.lessons.All()
	prog := map[string]sessions.LessonProgress{}
	cont := ""
	if s.progress != nil && token != "" {
		p, err := s.progress.Of(ctx, token)
		if err != nil {
			s.log.Warn("read progress", "err", err)
		}
		for _, lp := range p.Lessons {
			prog[lp.Slug] = lp
		}
		if err == nil {
			if cont, err = s.progress.LastLesson(ctx, token); err != nil {
				s.log.Warn("read the last lesson", "err", err)
			}
		}
	}
	home := views.HomePage{}
	for _, l := range all {
		lp := prog[l.Slug]
		e := views.HomeLesson{Lesson: l, LeakSeen: lp.LeakSeen, FixRun: lp.FixRun, Asked: len(l.Predictions), Started: len(lp.VariantsRun) > 0}
		for _, q := range lp.Predictions {
			e.Answered++
			if q.Correct {
				e.Right++
			}
		}
		home.Lessons = append(home.Lessons, e)
	}
	if cont != "" {
		if l, err := s.lessons.Get(cont); err == nil {
			home.Continue = l
		}
	}
	return home
}

// lessonNav returns the lessons before and after l in order (nil at the
// ends).
func (s *Server) lessonNav(l *lessons.Lesson) views.LessonNav {
	all := s.lessons.All()
	var nav views.LessonNav
	for i, x := range all {
		if x.Slug != l.Slug {
			continue
		}
		if i > 0 {
			nav.Prev = all[i-1]
		}
		if i+1 < len(all) {
			nav.Next = all[i+1]
		}
	}
	return nav
}
