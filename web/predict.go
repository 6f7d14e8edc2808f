package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
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
	if s.store == nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EUNAVAILABLE, "predictions are not kept on this server (it has no store)"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	learner, err := s.learnerFor(ctx, w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	pend := store.Pending{Variant: f.Variant, Choice: f.Choice, Text: p.Choices[f.Choice].Text, ChosenAt: time.Now()}
	if err := s.store.SetPending(ctx, learner, l.Slug, pend); err != nil {
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

// learnerFor returns the store id of the browser's learner, giving the
// browser a learner token first when it has none. Only POST handlers call
// it.
func (s *Server) learnerFor(ctx context.Context, w http.ResponseWriter, r *http.Request) (string, error) {
	l, err := s.store.EnsureLearner(ctx, s.ownerToken(w, r))
	if err != nil {
		return "", err
	}
	return l.ID, nil
}

// ensureLearner returns the store id of the learner with that token,
// storing the learner if it is new, or "" when the server keeps no store.
func (s *Server) ensureLearner(ctx context.Context, token string) string {
	if s.store == nil || token == "" {
		return ""
	}
	l, err := s.store.EnsureLearner(ctx, token)
	if err != nil {
		s.log.Warn("store learner", "err", err)
		return ""
	}
	return l.ID
}

// knownLearner returns the store id of the browser's learner, or "" when
// the browser has none or the server keeps no store. It never creates one.
func (s *Server) knownLearner(ctx context.Context, token string) string {
	if s.store == nil || token == "" {
		return ""
	}
	l, err := s.store.LearnerByToken(ctx, token)
	if err != nil {
		if rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
			s.log.Warn("look up learner", "err", err)
		}
		return ""
	}
	return l.ID
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
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	item := s.predictItems(ctx, l, s.knownLearner(ctx, cookieToken(r)))[p.Variant]
	if wantsJSON(r) {
		writeJSON(w, http.StatusOK, item)
		return
	}
	s.render(w, r, http.StatusOK, views.PredictCard(l.Slug, item))
}

// predictBox is the view model of a lesson's prediction questions for the
// browser whose learner token is token.
func (s *Server) predictBox(ctx context.Context, l *lessons.Lesson, token string) views.PredictBox {
	if s.store == nil || len(l.Predictions) == 0 {
		return views.PredictBox{}
	}
	items := s.predictItems(ctx, l, s.knownLearner(ctx, token))
	box := views.PredictBox{Slug: l.Slug}
	for _, p := range l.Predictions {
		box.Items = append(box.Items, items[p.Variant])
	}
	return box
}

// predictItems returns, per variant with a question, where the learner's
// prediction stands. learner "" has answered nothing.
func (s *Server) predictItems(ctx context.Context, l *lessons.Lesson, learner string) map[string]views.PredictItem {
	out := map[string]views.PredictItem{}
	for _, p := range l.Predictions {
		out[p.Variant] = askItem(p)
	}
	if learner == "" || s.store == nil {
		return out
	}
	pending, err := s.store.PendingFor(ctx, learner, l.Slug)
	if err != nil {
		s.log.Warn("read pending predictions", "err", err)
		return out
	}
	for v, pend := range pending {
		if p, ok := l.Prediction(v); ok {
			out[v] = pendingItem(p, pend)
		}
	}
	prog, err := s.store.Progress(ctx, learner)
	if err != nil {
		s.log.Warn("read progress", "err", err)
		return out
	}
	for _, lp := range prog.Lessons {
		if lp.Slug != l.Slug {
			continue
		}
		for _, q := range lp.Predictions {
			if p, ok := l.Prediction(q.Variant); ok {
				out[q.Variant] = checkedItem(p, q)
			}
		}
	}
	return out
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
func pendingItem(p lessons.Prediction, pend store.Pending) views.PredictItem {
	it := askItem(p)
	it.State, it.Picked = views.PredictPending, pend.Text
	return it
}

// checkedItem is a question answered and checked by a run.
func checkedItem(p lessons.Prediction, q store.Prediction) views.PredictItem {
	it := askItem(p)
	it.State, it.Picked, it.Correct, it.Actual, it.Evidence = views.PredictChecked, q.Choice, q.Correct, q.Actual, q.Evidence
	for _, c := range p.Choices {
		if c.Text == q.Actual {
			it.Why = fmt.Sprintf("The lesson counts a run as %q when %s.", c.Text, c.When)
		}
	}
	return it
}

// RunEnded counts a finished run in its owner's progress (the variant run,
// a leak seen, the fix run), then checks the owner's pending prediction
// about the run's variant against what the run showed (its request log,
// metrics and ratios) and stores the verdict. Only a finished (done) run
// that started after the choice was made checks it. Wire it to
// sessions.Config.OnRunEnd; it returns within twice dbTimeout.
func (s *Server) RunEnded(r sessions.RunRecord) {
	if s.store == nil || r.Lab == nil {
		return
	}
	l := s.lessons.ForScenario(r.Scenario)
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*dbTimeout)
	defer cancel()
	learner := s.ensureLearner(ctx, r.Lab.Owner())
	if learner == "" {
		return
	}
	run := store.Run{Lesson: l.Slug, Scenario: r.Scenario, Variant: r.Variant, Status: r.Final.Status,
		Leaks: r.Final.Leaks(), Errors: r.Final.Errors(), Fix: isFix(l, r.Variant)}
	if err := s.store.RecordRun(ctx, learner, run); err != nil {
		s.log.Warn("run not counted in progress", "lab", r.Lab.ID, "err", err)
	}
	p, ok := l.Prediction(r.Variant)
	if !ok || r.Final.Status != engine.StatusDone {
		return
	}
	pending, err := s.store.PendingFor(ctx, learner, l.Slug)
	if err != nil {
		s.log.Warn("prediction not checked", "lab", r.Lab.ID, "err", err)
		return
	}
	pend, ok := pending[r.Variant]
	if !ok || !pend.ChosenAt.Before(r.Started) {
		return
	}
	if pend.Choice >= len(p.Choices) || p.Choices[pend.Choice].Text != pend.Text {
		s.log.Warn("prediction not checked: the lesson's choices changed", "lesson", l.Slug, "variant", r.Variant)
		return
	}
	o := Observed(r.Final)
	v, err := p.Check(pend.Choice, o)
	if err != nil {
		s.log.Warn("prediction not checked", "lesson", l.Slug, "variant", r.Variant, "err", err)
		return
	}
	actual := p.Choices[v.Actual]
	evidence := Evidence(r.Final, sessions.Tenants()) + " (" + actual.When.Explain(o) + ")"
	if n := []rune(evidence); len(n) > store.MaxEvidenceLen {
		evidence = string(n[:store.MaxEvidenceLen])
	}
	q := store.Prediction{Variant: r.Variant, Choice: pend.Text, Correct: v.Correct, Actual: actual.Text, Evidence: evidence}
	if err := s.store.RecordPrediction(ctx, learner, l.Slug, q); err != nil {
		s.log.Warn("prediction not stored", "lesson", l.Slug, "variant", r.Variant, "err", err)
	}
}

// isFix reports whether variant is one of the lesson's fixes: a variant
// its expect: lines say shows no leak.
func isFix(l *lessons.Lesson, variant string) bool {
	for _, e := range l.ExpectationsFor(variant) {
		if strings.Contains(e.When.String(), "leaks == 0") {
			return true
		}
	}
	return false
}

// Observed counts a run's final state as the lessons' conditions read it.
func Observed(st engine.State) lessons.Observed {
	reqs := make([]lessons.Request, len(st.Requests))
	for i, q := range st.Requests {
		reqs[i] = lessons.Request{Leak: q.Leak, Error: q.Error, SQLState: q.SQLState, ForeignRows: q.ForeignRows, SeenTenant: q.SeenTenant}
	}
	metrics := map[string]float64{}
	for _, m := range st.Metrics {
		metrics[m.Name] = m.Number
	}
	return lessons.Observe(reqs, metrics, st.Ratios)
}

// Evidence says in words what a run's request log shows about leaks and
// failures, e.g. "Globex's request got 3 rows of another tenant (it ran
// with the tenant setting of Acme)".
func Evidence(st engine.State, tenants []engine.Tenant) string {
	name := func(id *string) string {
		if id == nil {
			return "NULL"
		}
		for _, t := range tenants {
			if strconv.Itoa(t.ID) == *id {
				return t.Name
			}
		}
		if *id == "" {
			return "''"
		}
		return *id
	}
	var parts []string
	leaks, failed := 0, map[string]int{}
	nFailed := 0
	same := map[string]int{} // index in parts of each leak sentence, said once
	times := map[int]int{}   // how many requests each said sentence stands for
	for _, q := range st.Requests {
		switch {
		case q.Leak:
			leaks++
			if leaks > 3 {
				continue
			}
			text := fmt.Sprintf("%s's request got %d rows of another tenant (it ran with the tenant setting %s)",
				name(q.Tenant), q.ForeignRows, name(q.SeenTenant))
			if i, ok := same[text]; ok {
				times[i]++
				continue
			}
			same[text] = len(parts)
			times[len(parts)] = 1
			parts = append(parts, text)
		case q.Error != "":
			nFailed++
			failed[q.SQLState]++
		}
	}
	for i, n := range times {
		if n > 1 {
			parts[i] += fmt.Sprintf(", %d times", n)
		}
	}
	if leaks > 3 {
		parts = append(parts, fmt.Sprintf("%d more requests leaked", leaks-3))
	}
	if nFailed > 0 {
		codes := make([]string, 0, len(failed))
		for c, n := range failed {
			if c == "" {
				c = "no SQLSTATE"
			}
			codes = append(codes, fmt.Sprintf("%d × %s", n, c))
		}
		parts = append(parts, fmt.Sprintf("%d requests failed (%s)", nFailed, strings.Join(sorted(codes), ", ")))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("No request got another tenant's rows and none failed (%d requests)", len(st.Requests))
	}
	return strings.Join(parts, "; ")
}

// sorted sorts list in place and returns it, so texts built from maps are
// stable.
func sorted(list []string) []string {
	slices.Sort(list)
	return list
}
