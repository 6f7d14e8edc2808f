package web

import (
	"context"
	"net/http"

	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions/store"
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
// predictions. A browser the store does not know gets no lessons; the GET
// creates no learner.
func (s *Server) handleProgress(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	writeJSON(w, http.StatusOK, s.progressOf(ctx, cookieToken(r)))
}

// progressOf returns the progress of the learner with that token; an
// unknown learner, or a server without a store, has none.
func (s *Server) progressOf(ctx context.Context, token string) store.Progress {
	empty := store.Progress{Lessons: []store.LessonProgress{}}
	learner := s.knownLearner(ctx, token)
	if learner == "" {
		return empty
	}
	p, err := s.store.Progress(ctx, learner)
	if err != nil {
		s.log.Warn("read progress", "err", err)
		return empty
	}
	return p
}

// homePage is the view model of the lesson list for the browser whose
// learner token is token: each lesson's marks, and where to continue.
func (s *Server) homePage(ctx context.Context, token string) views.HomePage {
	all := s.lessons.All()
	prog := map[string]store.LessonProgress{}
	for _, lp := range s.progressOf(ctx, token).Lessons {
		prog[lp.Slug] = lp
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
	if learner := s.knownLearner(ctx, token); learner != "" {
		if slug, err := s.store.LastLesson(ctx, learner); err == nil && slug != "" {
			if l, err := s.lessons.Get(slug); err == nil {
				home.Continue = l
			}
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
