package web

import (
	"context"
	"net/http"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions"
)

// Workshops is what the workshop pages ask of the workshop service
// (*sessions.Workshops).
type Workshops interface {
	Create(ctx context.Context, title string, lessons []string, expected int) (sessions.Workshop, string, error)
	Facilitate(ctx context.Context, id, secret string) (sessions.Workshop, error)
	Board(ctx context.Context, id string) (sessions.Board, error)
	Move(ctx context.Context, id string, index int) error
	End(ctx context.Context, id string) (int, error)
	ByCode(ctx context.Context, code string) (sessions.Workshop, error)
	EndedWithCode(ctx context.Context, id, code string) bool
	Join(ctx context.Context, ws sessions.Workshop, name string) (sessions.Joined, error)
	Notice(ctx context.Context, token, here string) (sessions.Notice, error)
	Room(ctx context.Context, id string) (sessions.Room, error)
	ResetLab(ctx context.Context, id, name string) (string, error)
}

// Progress is what the lesson pages ask of the progress service
// (*sessions.Progress), naming learners by their token.
type Progress interface {
	Of(ctx context.Context, token string) (sessions.LearnerProgress, error)
	LastLesson(ctx context.Context, token string) (string, error)
	Predictions(ctx context.Context, token string, l *lessons.Lesson) (map[string]sessions.PredictionState, error)
	Predict(ctx context.Context, token string, l *lessons.Lesson, variant string, choice int) (sessions.Pending, error)
}

// Recordings is what the replay and compare pages ask of the recordings
// (*sessions.Recordings).
type Recordings interface {
	List(ctx context.Context, lab string) ([]sessions.RecordingSummary, error)
	Get(ctx context.Context, id string) (sessions.Recording, error)
	Newest(ctx context.Context, q sessions.RecordingQuery, token string) (sessions.RecordingSummary, error)
	Recent(ctx context.Context, q sessions.RunsQuery, token string) ([]sessions.RecordingSummary, error)
}

// Services are the store-backed services a server uses. A server without
// them (nil) answers their pages with 503.
type Services struct {
	Workshops  Workshops
	Progress   Progress
	Recordings Recordings
}

// WithServices gives the server its store-backed services; call it before
// serving.
func (s *Server) WithServices(sv Services) *Server {
	s.workshops, s.progress, s.recordings = sv.Workshops, sv.Progress, sv.Recordings
	return s
}

// errNoTables is the answer of a store-backed page on a server without its
// own tables.
func errNoTables() error {
	return rlslab.Errorf(rlslab.EUNAVAILABLE, "workshops, progress and recordings need rlslab's own tables, and this server runs without them")
}

// needWorkshops fails the request when the server has no workshop service.
func (s *Server) needWorkshops(w http.ResponseWriter, r *http.Request) bool {
	if s.workshops == nil {
		s.fail(w, r, errNoTables())
		return false
	}
	return true
}
