package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// maxPredictBody bounds the body of POST /lessons/{slug}/predictions: a
// variant name and a choice index.
const maxPredictBody = 1 << 10

// predictForm is the body of POST /lessons/{slug}/predictions.
type predictForm struct {
	Variant string `json:"variant"`
	Choice  int    `json:"choice"`
}

// readPredictForm reads a prediction from JSON or a form. Every error is
// EINVALID.
func readPredictForm(w http.ResponseWriter, r *http.Request) (predictForm, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxPredictBody)
	var f predictForm
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			return f, rlslab.Errorf(rlslab.EINVALID, "malformed JSON body: %v", err)
		}
		return f, nil
	}
	if err := r.ParseForm(); err != nil {
		return f, rlslab.Errorf(rlslab.EINVALID, "malformed form: %v", err)
	}
	f.Variant = r.PostForm.Get("variant")
	c := r.PostForm.Get("choice")
	if c == "" {
		return f, rlslab.Errorf(rlslab.EINVALID, "pick one of the answers first")
	}
	n, err := strconv.Atoi(c)
	if err != nil {
		return f, rlslab.Errorf(rlslab.EINVALID, "choice %q is not a number", c)
	}
	f.Choice = n
	return f, nil
}

// lessonPrediction returns the lesson with that slug and its question about
// variant: ENOTFOUND for an unknown lesson, EINVALID for a variant the
// lesson asks nothing about.
func (s *Server) lessonPrediction(slug, variant string) (*lessons.Lesson, lessons.Prediction, error) {
	l, err := s.lessons.Get(slug)
	if err != nil {
		return nil, lessons.Prediction{}, err
	}
	p, ok := l.Prediction(variant)
	if !ok {
		return nil, lessons.Prediction{}, rlslab.Errorf(rlslab.EINVALID, "lesson %s asks no question about variant %q", slug, variant)
	}
	return l, p, nil
}

// handlePredict keeps the learner's answer to a lesson's question about a
// variant until a run of that variant checks it. It answers htmx with the
// question's fragment, JSON clients with JSON, and a plain form with a
// redirect to the lesson.
func (s *Server) handlePredict(w http.ResponseWriter, r *http.Request) {
	slug := r.PathValue("slug")
	if _, err := s.lessons.Get(slug); err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := readPredictForm(w, r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) || strings.Contains(err.Error(), "request body too large") {
			err = rlslab.Errorf(rlslab.EINVALID, "the body is larger than %d bytes", maxPredictBody)
		}
		s.fail(w, r, err)
		return
	}
	l, p, err := s.lessonPrediction(slug, f.Variant)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if f.Choice < 0 || f.Choice >= len(p.Choices) {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "choice %d: the question has choices 0 to %d", f.Choice, len(p.Choices)-1))
		return
	}
	if s.progress == nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EUNAVAILABLE, "predictions are not kept on this server (it runs without rlslab's own tables)"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	pend, err := s.progress.Predict(ctx, s.ownerToken(w, r), l, f.Variant, f.Choice)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case wantsJSON(r):
		writeJSON(w, http.StatusOK, map[string]any{"lesson": l.Slug, "variant": f.Variant, "choice": f.Choice, "text": pend.Text, "status": "pending"})
	case r.Header.Get("HX-Request") != "":
		s.render(w, r, http.StatusOK, views.PredictCard(l.Slug, pendingItem(p, pend)))
	default:
		http.Redirect(w, r, "/lessons/"+url.PathEscape(l.Slug), http.StatusSeeOther)
	}
}

// handlePrediction shows where the learner's prediction about a variant
// stands: the question (not answered yet), waiting for a run, or checked
// against the run. A GET creates nothing.
func (s *Server) handlePrediction(w http.ResponseWriter, r *http.Request) {
	l, p, err := s.lessonPrediction(r.PathValue("slug"), r.PathValue("variant"))
	if err != nil {
		if rlslab.ErrorCode(err) == rlslab.EINVALID {
			err = rlslab.Errorf(rlslab.ENOTFOUND, "%s", rlslab.ErrorMessage(err))
		}
		s.fail(w, r, err)
		return
	}
	if s.progress == nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EUNAVAILABLE, "predictions are not kept on this server (it runs without rlslab's own tables)"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	items, err := s.predictItems(ctx, l, cookieToken(r))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	item := items[p.Variant]
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, item)
		return
	}
	s.render(w, r, http.StatusOK, views.PredictCard(l.Slug, item))
}

// predictBox is the view model of a lesson's prediction questions for the
// browser whose learner token is token. When the predictions cannot be
// read (an outage), the box is left out of the page, which still works.
func (s *Server) predictBox(ctx context.Context, l *lessons.Lesson, token string) views.PredictBox {
	if s.progress == nil || len(l.Predictions) == 0 {
		return views.PredictBox{}
	}
	items, err := s.predictItems(ctx, l, token)
	if err != nil {
		s.log.Warn("read predictions", "lesson", l.Slug, "err", err)
		return views.PredictBox{}
	}
	box := views.PredictBox{Slug: l.Slug}
	for _, p := range l.Predictions {
		box.Items = append(box.Items, items[p.Variant])
	}
	return box
}

// predictItems returns, per variant with a question, where the prediction
// of the learner whose token is token stands.
func (s *Server) predictItems(ctx context.Context, l *lessons.Lesson, token string) (map[string]views.PredictItem, error) {
	states, err := s.progress.Predictions(ctx, token, l)
	if err != nil {
		return nil, err
	}
	out := map[string]views.PredictItem{}
	for _, p := range l.Predictions {
		st := states[p.Variant]
		switch {
		case st.Checked != nil:
			out[p.Variant] = checkedItem(p, *st.Checked)
		case st.Pending != nil:
			out[p.Variant] = pendingItem(p, *st.Pending)
		default:
			out[p.Variant] = askItem(p)
		}
	}
	return out, nil
}

// askItem is a question not answered yet.
func askItem(p lessons.Prediction) views.PredictItem {
	it := views.PredictItem{Variant: p.Variant, Question: p.Question, State: views.PredictAsk}
	for _, c := range p.Choices {
		it.Choices = append(it.Choices, c.Text)
	}
	return it
}

// pendingItem is a question answered, waiting for a run to check it.
func pendingItem(p lessons.Prediction, pend sessions.Pending) views.PredictItem {
	it := askItem(p)
	it.State, it.Picked = views.PredictPending, pend.Text
	return it
}

// checkedItem is a question answered and checked by a run: the answer the
// run showed and, as evidence, the outcome bar's headline of that run.
func checkedItem(p lessons.Prediction, q sessions.Prediction) views.PredictItem {
	it := askItem(p)
	it.State, it.Picked, it.Correct, it.Actual, it.Evidence = views.PredictChecked, q.Choice, q.Correct, q.Actual, q.Evidence
	return it
}
