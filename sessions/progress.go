package sessions

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions/store"
)

// runEndTimeout bounds what Progress does when a run ends.
const runEndTimeout = 6 * time.Second

// Progress keeps what each learner did in rlslab's own tables: the
// variants they ran, whether they saw a lesson's leak and ran its fix, and
// their predictions, pending until a run checks them. It is a subscriber of
// the manager's run ends (Config.Subscribers). Learners are named by their
// token (the browser's cookie); a token the tables do not know has done
// nothing, and reading never stores a learner.
type Progress struct {
	db      *DB
	lessons *lessons.Set
	log     *slog.Logger
}

// NewProgress returns the progress service over db for the lessons ls.
func NewProgress(db *DB, ls *lessons.Set, log *slog.Logger) *Progress {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Progress{db: db, lessons: ls, log: log}
}

// Of returns the progress of the learner with that token: per lesson, the
// variants run, whether the leak was seen and the fix run, and the checked
// predictions. An unknown learner has no lessons.
func (p *Progress) Of(ctx context.Context, token string) (LearnerProgress, error) {
	return call(ctx, p.db, "read progress", func(ctx context.Context, st *store.Store) (LearnerProgress, error) {
		id, err := learner(ctx, st, token)
		if err != nil || id == "" {
			return LearnerProgress{Lessons: []LessonProgress{}}, err
		}
		return st.Progress(ctx, id)
	})
}

// LastLesson returns the slug of the lesson the learner with that token
// last did something in, or "".
func (p *Progress) LastLesson(ctx context.Context, token string) (string, error) {
	return call(ctx, p.db, "read the last lesson", func(ctx context.Context, st *store.Store) (string, error) {
		id, err := learner(ctx, st, token)
		if err != nil || id == "" {
			return "", err
		}
		return st.LastLesson(ctx, id)
	})
}

// PredictionState is where a learner's prediction about one variant
// stands: not answered (both nil), answered and waiting for a run
// (Pending), or checked by a run (Checked).
type PredictionState struct {
	Pending *Pending
	Checked *Prediction
}

// Predictions returns, per variant lesson l asks about, where the
// prediction of the learner with that token stands.
func (p *Progress) Predictions(ctx context.Context, token string, l *lessons.Lesson) (map[string]PredictionState, error) {
	return call(ctx, p.db, "read predictions", func(ctx context.Context, st *store.Store) (map[string]PredictionState, error) {
		out := map[string]PredictionState{}
		for _, q := range l.Predictions {
			out[q.Variant] = PredictionState{}
		}
		id, err := learner(ctx, st, token)
		if err != nil || id == "" {
			return out, err
		}
		pending, err := st.PendingFor(ctx, id, l.Slug)
		if err != nil {
			return nil, err
		}
		for v, pend := range pending {
			if _, ok := l.Prediction(v); ok {
				out[v] = PredictionState{Pending: &pend}
			}
		}
		prog, err := st.Progress(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, lp := range prog.Lessons {
			if lp.Slug != l.Slug {
				continue
			}
			for _, q := range lp.Predictions {
				if _, ok := l.Prediction(q.Variant); ok {
					out[q.Variant] = PredictionState{Checked: &q}
				}
			}
		}
		return out, nil
	})
}

// Predict keeps the answer (choice, an index into the question's choices)
// of the learner with that token to lesson l's question about variant,
// until a run of that variant checks it; the learner is stored if new. It
// fails with EINVALID for a variant the lesson asks nothing about or a
// choice out of range, and ECONFLICT when the prediction was already
// checked.
func (p *Progress) Predict(ctx context.Context, token string, l *lessons.Lesson, variant string, choice int) (Pending, error) {
	q, ok := l.Prediction(variant)
	if !ok {
		return Pending{}, rlslab.Errorf(rlslab.EINVALID, "lesson %s asks no question about variant %q", l.Slug, variant)
	}
	if choice < 0 || choice >= len(q.Choices) {
		return Pending{}, rlslab.Errorf(rlslab.EINVALID, "choice %d: the question has choices 0 to %d", choice, len(q.Choices)-1)
	}
	pend := Pending{Variant: variant, Choice: choice, Text: q.Choices[choice].Text, ChosenAt: time.Now()}
	err := p.db.do(ctx, "keep a prediction", func(ctx context.Context, st *store.Store) error {
		lr, err := st.EnsureLearner(ctx, token)
		if err != nil {
			return err
		}
		return st.SetPending(ctx, lr.ID, l.Slug, pend)
	})
	return pend, err
}

// RunEnded counts a finished run in its owner's progress (the variant run,
// a leak seen, the fix run), then checks the owner's pending prediction
// about the run's variant against what the run showed (its request log,
// metrics and ratios) and stores the verdict. Only a finished (done) run
// that started after the choice was made checks it. It returns within
// runEndTimeout.
func (p *Progress) RunEnded(r RunRecord) {
	if r.Lab == nil || p.db == nil {
		return
	}
	l := p.lessons.ForScenario(r.Scenario)
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), runEndTimeout)
	defer cancel()
	err := p.db.do(ctx, "count a run", func(ctx context.Context, st *store.Store) error {
		return p.count(ctx, st, l, r)
	})
	if err != nil {
		p.log.Warn("run not counted in progress", "lab", r.Lab.ID, "err", err)
	}
}

// count is RunEnded on the tables.
func (p *Progress) count(ctx context.Context, st *store.Store, l *lessons.Lesson, r RunRecord) error {
	lr, err := st.EnsureLearner(ctx, r.Lab.Owner())
	if err != nil {
		return err
	}
	run := store.Run{Lesson: l.Slug, Scenario: r.Scenario, Variant: r.Variant, Status: r.Final.Status,
		Leaks: r.Final.Leaks(), Errors: r.Final.Errors(), Fix: isFix(l, r.Variant), Outcome: engine.Judge(r.Final, nil).Kind}
	if err := st.RecordRun(ctx, lr.ID, run); err != nil {
		return err
	}
	q, ok := l.Prediction(r.Variant)
	if !ok || r.Final.Status != engine.StatusDone {
		return nil
	}
	pending, err := st.PendingFor(ctx, lr.ID, l.Slug)
	if err != nil {
		return fmt.Errorf("prediction not checked: %w", err)
	}
	pend, ok := pending[r.Variant]
	if !ok || !pend.ChosenAt.Before(r.Started) {
		return nil
	}
	if pend.Choice >= len(q.Choices) || q.Choices[pend.Choice].Text != pend.Text {
		p.log.Warn("prediction not checked: the lesson's choices changed", "lesson", l.Slug, "variant", r.Variant)
		return nil
	}
	o := Observed(r.Final)
	v, err := q.Check(pend.Choice, o)
	if err != nil {
		p.log.Warn("prediction not checked", "lesson", l.Slug, "variant", r.Variant, "err", err)
		return nil
	}
	actual := q.Choices[v.Actual]
	// The verdict says what the outcome bar said about the run, in its
	// words, not the lesson's condition.
	evidence := engine.Judge(r.Final, nil).Headline
	if n := []rune(evidence); len(n) > store.MaxEvidenceLen {
		evidence = string(n[:store.MaxEvidenceLen])
	}
	verdict := store.Prediction{Variant: r.Variant, Choice: pend.Text, Correct: v.Correct, Actual: actual.Text, Evidence: evidence}
	if err := st.RecordPrediction(ctx, lr.ID, l.Slug, verdict); err != nil {
		return fmt.Errorf("prediction not stored: %w", err)
	}
	return nil
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
// with the tenant setting of Acme)", naming the tenants the state carries.
func Evidence(st engine.State) string {
	name := func(id *string) string {
		if id == nil {
			return "NULL"
		}
		for _, t := range st.Tenants {
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
		parts = append(parts, engine.CountOf(leaks-3, "more request", "more requests")+" leaked")
	}
	if nFailed > 0 {
		codes := make([]string, 0, len(failed))
		for c, n := range failed {
			if c == "" {
				c = "no SQLSTATE"
			}
			codes = append(codes, fmt.Sprintf("%d × %s", n, c))
		}
		slices.Sort(codes)
		parts = append(parts, fmt.Sprintf("%d requests failed (%s)", nFailed, strings.Join(codes, ", ")))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("No request got another tenant's rows and none failed (%d requests)", len(st.Requests))
	}
	return strings.Join(parts, "; ")
}
