package sessions

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/sessions/store"
)

// endTimeout bounds ending a workshop: every participant's lab is dropped.
const endTimeout = 60 * time.Second

// Workshops runs facilitators' rooms: a workshop has lessons in order, a
// join code, participants (each a learner with a display name and a lab of
// their own) and the lesson everyone is on. Its data lives in rlslab's own
// tables; the labs are the manager's.
type Workshops struct {
	db      *DB
	labs    *Manager
	lessons *lessons.Set
	log     *slog.Logger
	seen    *lessonSeen
}

// NewWorkshops returns the workshop service over db, making participants'
// labs in labs, for the lessons ls.
func NewWorkshops(db *DB, labs *Manager, ls *lessons.Set, log *slog.Logger) *Workshops {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Workshops{db: db, labs: labs, lessons: ls, log: log, seen: newLessonSeen()}
}

// Create makes a workshop of the lessons slugs (in order) and returns it
// with its facilitator secret, which is not kept. expected is how many
// participants the facilitator expects (0: not said): labs are prepared
// for them from now on, so that a room that joins at once finds them
// ready. An unknown lesson or an expected size out of bounds is EINVALID.
func (w *Workshops) Create(ctx context.Context, title string, slugs []string, expected int) (Workshop, string, error) {
	for _, slug := range slugs {
		if _, err := w.lessons.Get(slug); err != nil {
			return Workshop{}, "", rlslab.Errorf(rlslab.EINVALID, "there is no lesson %q", truncate(slug, 64))
		}
	}
	if expected < 0 || expected > store.MaxExpected {
		return Workshop{}, "", rlslab.Errorf(rlslab.EINVALID, "expected participants %d: want 0 to %d", expected, store.MaxExpected)
	}
	type created struct {
		ws     Workshop
		secret string
	}
	c, err := call(ctx, w.db, "create a workshop", func(ctx context.Context, st *store.Store) (c created, err error) {
		c.ws, c.secret, err = st.CreateWorkshop(ctx, title, slugs)
		if err != nil || expected == 0 {
			return c, err
		}
		c.ws.Expected = expected
		return c, st.SetExpected(ctx, c.ws.ID, expected)
	})
	if err == nil {
		w.labs.Prepare(c.ws.ID, expected)
	}
	return c.ws, c.secret, err
}

// Prepare reserves sandboxes for the participants every open workshop
// still expects (at start-up: reservations live in memory; and then every
// few seconds, see KeepPrepared), and drops the reservations of workshops
// no longer open.
func (w *Workshops) Prepare(ctx context.Context) error {
	return w.db.do(ctx, "prepare labs for open workshops", func(ctx context.Context, st *store.Store) error {
		open, err := st.OpenWorkshops(ctx)
		if err != nil {
			return err
		}
		want := map[string]int{}
		for _, ws := range open {
			if ws.Expected == 0 {
				continue
			}
			ps, err := st.Participants(ctx, ws.ID)
			if err != nil {
				return err
			}
			want[ws.ID] = ws.Expected - len(ps)
		}
		w.labs.PrepareOnly(want)
		return nil
	})
}

// truncate cuts s to at most n bytes (for quoting bad input in errors).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// Get returns the workshop with that id, or ENOTFOUND.
func (w *Workshops) Get(ctx context.Context, id string) (Workshop, error) {
	return call(ctx, w.db, "read a workshop", func(ctx context.Context, st *store.Store) (Workshop, error) {
		return st.Workshop(ctx, id)
	})
}

// EndedWithCode reports whether workshop id (from a join link) has ended
// and code, as a person typed it, is its join code: a late join is told
// that the workshop ended rather than that its code is wrong.
func (w *Workshops) EndedWithCode(ctx context.Context, id, code string) bool {
	if id == "" {
		return false
	}
	ws, err := w.Get(ctx, id)
	return err == nil && ws.Ended() && ws.Code != "" && store.NormalizeCode(code) == ws.Code
}

// Facilitate returns the workshop with that id when secret is its
// facilitator's: ENOTFOUND for an unknown workshop, EFORBIDDEN for a
// missing or wrong secret.
func (w *Workshops) Facilitate(ctx context.Context, id, secret string) (Workshop, error) {
	return call(ctx, w.db, "check a facilitator", func(ctx context.Context, st *store.Store) (Workshop, error) {
		if secret == "" {
			if _, err := st.Workshop(ctx, id); err != nil {
				return Workshop{}, err
			}
			return Workshop{}, rlslab.Errorf(rlslab.EFORBIDDEN, "only the facilitator may open this workshop's dashboard: use the facilitator link")
		}
		if err := st.VerifyFacilitator(ctx, id, secret); err != nil {
			if rlslab.ErrorCode(err) == rlslab.EFORBIDDEN {
				return Workshop{}, rlslab.Errorf(rlslab.EFORBIDDEN, "that is not this workshop's facilitator key")
			}
			return Workshop{}, err
		}
		return st.Workshop(ctx, id)
	})
}

// Board is what a workshop's dashboard shows: the workshop, the server's
// capacity, and one card per participant.
type Board struct {
	Workshop Workshop
	Usage    Usage
	Cards    []Card
	Counts   BoardCounts
	// Ready is how many labs are ready for participants still expected
	// (at most Workshop.Expected − joined); Readiness the server's spares.
	Ready     int
	Readiness Readiness
}

// BoardCounts counts the participants: joined, with a run going, who saw a
// leak, who ran the fix where they saw it.
type BoardCounts struct {
	Joined, Running, Leaked, Fixed int
}

// Card is one participant on the dashboard.
type Card struct {
	Name       string
	Lab        string // "" when none
	Lesson     string // slug of the lesson the participant has open
	Status     string // the lab's live status, "no lab", "lab closed" (always, once the workshop ended) or "reconnecting" (its instance stopped)
	Running    bool
	LiveRun    string // scenario / variant of the run going
	LastRun    *LastRun
	LeakSeen   bool
	FixRun     bool // in a lesson where the leak was seen
	PredRight  int  // checked predictions that were right
	PredTotal  int  // checked predictions
	QueueAhead int  // runs ahead in the admission queue; -1 when not waiting
	// Idle is how long the lab has seen no activity of its owner; 0 while
	// a run is going or waiting in line (a run is activity).
	Idle time.Duration
	// LastActive is when the participant last did something: their lab's
	// last activity, else their last finished run, else when they joined.
	LastActive time.Time
	// Progress counts what the participant did: variants run, leaks seen
	// and fixes run, over every lesson (more is further on).
	VariantsRun int
	// Learner is the participant's learner id (not shown; it keys Runs and
	// answers).
	Learner string
}

// Board reads the workshop with that id and everything its dashboard
// shows.
func (w *Workshops) Board(ctx context.Context, id string) (Board, error) {
	type rows struct {
		ws   Workshop
		ps   []store.Participant
		prog map[string]store.Progress
		seen map[string]string
	}
	got, err := call(ctx, w.db, "read a dashboard", func(ctx context.Context, st *store.Store) (r rows, err error) {
		if r.ws, err = st.Workshop(ctx, id); err != nil {
			return r, err
		}
		if r.ps, err = st.Participants(ctx, id); err != nil {
			return r, err
		}
		if r.prog, err = st.WorkshopProgress(ctx, id); err != nil {
			return r, err
		}
		r.seen, err = st.ParticipantLessons(ctx, id)
		return r, err
	})
	if err != nil {
		return Board{}, err
	}
	ws, ps, prog, seen := got.ws, got.ps, got.prog, got.seen
	b := Board{Workshop: ws}
	b.Usage = w.labs.Usage()
	b.Cards = []Card{}
	remote := w.remoteLabs(ctx, ps)
	for _, p := range ps {
		c := Card{Name: p.Name, Lab: p.Lab, QueueAhead: -1, LastRun: p.LastRun, Learner: p.Learner, LastActive: p.JoinedAt}
		if p.LastRun != nil && p.LastRun.At.After(c.LastActive) {
			c.LastActive = p.LastRun.At
		}
		c.Lesson = seen[p.Learner]
		if c.Lesson == "" && ws.CurrentLesson < len(ws.Lessons) {
			c.Lesson = ws.Lessons[ws.CurrentLesson]
		}
		for _, l := range prog[p.Learner].Lessons {
			c.LeakSeen = c.LeakSeen || l.LeakSeen
			// A fix counts where its leak was seen: a leak-free run of
			// another lesson fixes nothing.
			c.FixRun = c.FixRun || l.LeakSeen && l.FixRun
			c.VariantsRun += len(l.VariantsRun)
			for _, q := range l.Predictions {
				c.PredTotal++
				if q.Correct {
					c.PredRight++
				}
			}
		}
		c.Status = "no lab"
		if ws.Ended() {
			// End closed every lab, whether or not it was still there:
			// one lost at a restart is not coming back either.
			c.Status = "lab closed"
		} else if p.Lab != "" {
			if lab, err := w.labs.Get(p.Lab); err == nil {
				st := lab.Tracker().Snapshot()
				c.Status = st.Status
				if st.Queue != nil {
					c.QueueAhead = st.Queue.Ahead
				}
				idle := lab.IdleFor()
				if at := time.Now().Add(-idle); at.After(c.LastActive) {
					c.LastActive = at
				}
				c.Idle = idle.Round(time.Second)
				if lab.Running() || lab.AppConnections() > 0 {
					// A run, or the participant's own app connected
					// through the proxy (drawn and recorded like a run).
					c.Running = true
					b.Counts.Running++
					c.LiveRun = st.Scenario + " / " + st.Variant
				}
				if c.Running || c.QueueAhead >= 0 {
					// A run going or waiting in line is activity, however
					// long ago the last click was.
					c.Idle = 0
					c.LastActive = time.Now()
				}
			} else if r, ok := remote[p.Lab]; ok {
				c.Status, c.QueueAhead = r.Status, r.Ahead
				if r.Running() {
					c.Running = true
					b.Counts.Running++
					c.LiveRun = r.Scenario + " / " + r.Variant
				}
				if c.Running || c.QueueAhead >= 0 {
					c.LastActive = time.Now()
				}
			} else if w.labs.InstanceGone(ctx, p.Lab) {
				// Its instance stopped: the participant gets a new lab
				// on their next action.
				c.Status = "reconnecting"
			} else {
				c.Status = "lab closed"
			}
		}
		b.Counts.Joined++
		if c.LeakSeen {
			b.Counts.Leaked++
		}
		if c.FixRun {
			b.Counts.Fixed++
		}
		b.Cards = append(b.Cards, c)
	}
	b.Readiness = w.labs.Readiness()
	if left := ws.Expected - b.Counts.Joined; left > 0 && !ws.Ended() {
		// Ready on any instance: a balancer spreads the joins.
		b.Ready = min(left, b.Readiness.Ready+w.labs.ReadyElsewhere(ctx))
	}
	return b, nil
}

// Move moves everyone in the workshop with that id to its lesson at index.
func (w *Workshops) Move(ctx context.Context, id string, index int) error {
	return w.db.do(ctx, "move a workshop", func(ctx context.Context, st *store.Store) error {
		return st.SetCurrentLesson(ctx, id, index)
	})
}

// End drops every participant's lab, then ends the workshop; it returns
// how many labs it closed.
func (w *Workshops) End(ctx context.Context, id string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, endTimeout)
	defer cancel()
	ps, err := call(ctx, w.db, "read participants", func(ctx context.Context, st *store.Store) ([]store.Participant, error) {
		return st.Participants(ctx, id)
	})
	if err != nil {
		return 0, err
	}
	closed := map[string]bool{}
	closeAll := func(labs []string) {
		var todo []string
		for _, lab := range labs {
			if lab != "" && !closed[lab] {
				closed[lab] = true
				todo = append(todo, lab)
			}
		}
		w.closeLabs(ctx, id, todo)
	}
	labs := make([]string, len(ps))
	for i, p := range ps {
		labs[i] = p.Lab
	}
	closeAll(labs)
	w.labs.Prepare(id, 0)
	ids, err := call(ctx, w.db, "end a workshop", func(ctx context.Context, st *store.Store) ([]string, error) {
		return st.EndWorkshop(ctx, id)
	})
	if err != nil {
		return len(closed), err
	}
	closeAll(ids)
	return len(closed), nil
}

// endWorkers is how many labs End closes at once.
const endWorkers = 4

// closeLabs closes the labs of workshop id, endWorkers at once (a room of
// 30 drops 30 databases).
func (w *Workshops) closeLabs(ctx context.Context, id string, labs []string) {
	todo := make(chan string, len(labs))
	for _, lab := range labs {
		todo <- lab
	}
	close(todo)
	var wg sync.WaitGroup
	for range min(endWorkers, len(labs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lab := range todo {
				if err := w.labs.CloseLab(ctx, lab); err != nil && rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
					w.log.Warn("end workshop: close lab", "workshop", id, "lab", lab, "err", err)
				}
			}
		}()
	}
	wg.Wait()
}

// ByCode returns the open workshop with that join code, or ENOTFOUND.
func (w *Workshops) ByCode(ctx context.Context, code string) (Workshop, error) {
	return call(ctx, w.db, "find a workshop by its code", func(ctx context.Context, st *store.Store) (Workshop, error) {
		return st.WorkshopByCode(ctx, code)
	})
}

// Joined is a new participant of a workshop.
type Joined struct {
	Participant Participant
	// Token is the new learner's token, for the browser's cookie; it is
	// not kept.
	Token string
	// Lab is the participant's own lab, or nil when none could be made
	// (LabErr says why; the lesson page asks for one again).
	Lab    *Lab
	LabErr error
	Lesson string // slug of the workshop's current lesson, "" when none
}

// Join adds a participant with that display name to ws, as a new learner,
// and makes their lab. The name must be new in the workshop (ECONFLICT) and
// well formed (EINVALID). A participant without a lab yet is still joined.
func (w *Workshops) Join(ctx context.Context, ws Workshop, name string) (Joined, error) {
	j, err := call(ctx, w.db, "join a workshop", func(ctx context.Context, st *store.Store) (j Joined, err error) {
		j.Participant, j.Token, err = st.Join(ctx, ws.ID, name)
		return j, err
	})
	if err != nil {
		return Joined{}, err
	}
	w.labs.Arrived(ws.ID)
	// The lab is made outside the call to rlslab's tables: a lab waiting in
	// line for a sandbox is not an outage of the tables (the call's guard
	// would probe the server while it waits, and take a loaded server's
	// late answer for one).
	j.Lab, j.LabErr = w.labs.Create(ctx, j.Token)
	if j.LabErr != nil {
		w.log.Warn("join: no lab yet", "workshop", ws.ID, "err", j.LabErr)
	}
	if ws.CurrentLesson < len(ws.Lessons) {
		j.Lesson = ws.Lessons[ws.CurrentLesson]
	}
	// Noted even when the wait for the lab used up the request's time.
	nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), noteTimeout)
	defer cancel()
	err = w.db.do(nctx, "note a participant's lab", func(ctx context.Context, st *store.Store) error {
		if j.Lab != nil {
			if err := st.SetParticipantLab(ctx, j.Participant.Learner, j.Lab.ID); err != nil {
				w.log.Warn("join: set lab", "workshop", ws.ID, "lab", j.Lab.ID, "err", err)
			}
		}
		w.noteLesson(ctx, st, j.Participant.Learner, j.Lesson)
		return nil
	})
	if err != nil {
		w.log.Warn("join: note the lab", "workshop", ws.ID, "err", err)
	}
	return j, nil
}

// noteTimeout bounds noting a new participant's lab and lesson.
const noteTimeout = 3 * time.Second

// KeepPrepared keeps the labs of every open workshop prepared until ctx
// ends: every period it reads what each still expects (Prepare), so that
// instances sharing rlslab's tables each keep their share of a workshop
// made on another one ready. A failed read waits longer before the next,
// up to 30 s.
func (w *Workshops) KeepPrepared(ctx context.Context, every time.Duration) {
	wait := every
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := w.Prepare(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = min(2*wait, 30*time.Second)
			w.log.Warn("keep labs prepared for open workshops", "err", err, "next_in", wait)
			continue
		}
		wait = every
	}
}

// Notice is what a participant's lesson page is told about their workshop.
type Notice struct {
	Workshop Workshop
	Lesson   string // slug of the workshop's current lesson, "" when none
}

// Notice returns the workshop of the participant with that token, noting
// that they have lesson here open (a slug, or "" for none) and that their
// lab is now the one they hold, if the old one expired. It fails with
// ENOTFOUND when the token is not a participant's.
func (w *Workshops) Notice(ctx context.Context, token, here string) (Notice, error) {
	return call(ctx, w.db, "read a participant's workshop", func(ctx context.Context, st *store.Store) (n Notice, err error) {
		id, err := learner(ctx, st, token)
		if err != nil {
			return n, err
		}
		if id == "" {
			return n, rlslab.Errorf(rlslab.ENOTFOUND, "not a participant of a workshop")
		}
		p, err := st.Participant(ctx, id)
		if err != nil {
			return n, err
		}
		if n.Workshop, err = st.Workshop(ctx, p.Workshop); err != nil {
			return n, err
		}
		ws := n.Workshop
		if _, err := w.lessons.Get(here); err == nil {
			w.noteLesson(ctx, st, id, here)
		}
		if lab := w.labs.ForOwner(token); lab != nil && lab.ID != p.Lab && !ws.Ended() {
			// The lesson page made the participant a new lab (the old one
			// expired): the dashboard follows.
			if err := st.SetParticipantLab(ctx, id, lab.ID); err != nil {
				w.log.Warn("notice: set lab", "workshop", ws.ID, "err", err)
			}
		}
		if ws.CurrentLesson < len(ws.Lessons) {
			n.Lesson = ws.Lessons[ws.CurrentLesson]
		}
		return n, nil
	})
}

// noteLesson records that the participant learner is on lesson slug, in
// rlslab's own tables (the dashboard's "current lesson" survives a
// restart); it writes only when the lesson changed since it last wrote.
func (w *Workshops) noteLesson(ctx context.Context, st *store.Store, learner, slug string) {
	if slug == "" || w.seen.get(learner) == slug {
		return
	}
	if err := st.SetParticipantLesson(ctx, learner, slug); err != nil {
		w.log.Warn("note a participant's lesson", "lesson", slug, "err", err)
		return
	}
	w.seen.set(learner, slug)
}

// lessonSeen remembers, in memory, which lesson each participant was last
// noted on in rlslab's tables, so that a page polling from the same lesson
// writes nothing.
type lessonSeen struct {
	mu sync.Mutex
	m  map[string]string
}

// newLessonSeen returns an empty record of lesson pages.
func newLessonSeen() *lessonSeen { return &lessonSeen{m: map[string]string{}} }

// set notes that learner is on lesson slug ("" changes nothing).
func (l *lessonSeen) set(learner, slug string) {
	if slug == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.m) > 100000 {
		clear(l.m)
	}
	l.m[learner] = slug
}

// get returns the lesson learner was last seen on, or "".
func (l *lessonSeen) get(learner string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.m[learner]
}

// Answer is one participant's answer to a prediction question (see
// store.Answer).
type Answer = store.Answer

// Room is what the projector's room view and the CSV export show: the
// board, every answer to the workshop's prediction questions, and how
// many recorded runs each participant has (by learner id).
type Room struct {
	Board
	Answers []Answer
	Runs    map[string]int
}

// Room reads the board of the workshop with that id, with its answers and
// run counts.
func (w *Workshops) Room(ctx context.Context, id string) (Room, error) {
	b, err := w.Board(ctx, id)
	if err != nil {
		return Room{}, err
	}
	type extra struct {
		answers []Answer
		runs    map[string]int
	}
	got, err := call(ctx, w.db, "read a workshop's answers", func(ctx context.Context, st *store.Store) (e extra, err error) {
		if e.answers, err = st.WorkshopAnswers(ctx, id); err != nil {
			return e, err
		}
		e.runs, err = st.WorkshopRunCounts(ctx, id)
		return e, err
	})
	if err != nil {
		return Room{}, err
	}
	return Room{Board: b, Answers: got.answers, Runs: got.runs}, nil
}

// ResetLab gives the participant of the workshop with that display name a
// fresh lab in place of the one they hold: the old lab is closed and a new
// one made for the same browser, so their progress, predictions and
// recordings (which belong to the learner) stay. It returns the new lab's
// id. It fails with ENOTFOUND for a name not in the workshop, ECONFLICT for
// an ended workshop or a participant without an open lab (their lesson
// page makes one at their next action).
func (w *Workshops) ResetLab(ctx context.Context, id, name string) (string, error) {
	type found struct {
		ws Workshop
		p  store.Participant
		ok bool
	}
	f, err := call(ctx, w.db, "read participants", func(ctx context.Context, st *store.Store) (f found, err error) {
		if f.ws, err = st.Workshop(ctx, id); err != nil {
			return f, err
		}
		ps, err := st.Participants(ctx, id)
		if err != nil {
			return f, err
		}
		for _, p := range ps {
			if p.Name == name {
				f.p, f.ok = p, true
			}
		}
		return f, nil
	})
	if err != nil {
		return "", err
	}
	switch {
	case !f.ok:
		return "", rlslab.Errorf(rlslab.ENOTFOUND, "nobody called %q is in this workshop", truncate(name, 64))
	case f.ws.Ended():
		return "", rlslab.Errorf(rlslab.ECONFLICT, "the workshop has ended: its labs are dropped")
	}
	old, err := w.labs.Get(f.p.Lab)
	if f.p.Lab == "" || err != nil {
		return "", rlslab.Errorf(rlslab.ECONFLICT, "%s has no open lab: their lesson page makes a new one at their next action", f.p.Name)
	}
	owner := old.Owner()
	if err := w.labs.CloseLab(ctx, old.ID); err != nil && rlslab.ErrorCode(err) != rlslab.ENOTFOUND {
		return "", err
	}
	lab, err := w.labs.Create(ctx, owner)
	if err != nil {
		return "", err
	}
	err = w.db.do(ctx, "set a participant's lab", func(ctx context.Context, st *store.Store) error {
		return st.SetParticipantLab(ctx, f.p.Learner, lab.ID)
	})
	if err != nil {
		return "", err
	}
	w.log.Info("workshop: a participant's lab was reset", "workshop", id, "old", old.ID, "lab", lab.ID)
	return lab.ID, nil
}

// remoteLabs asks the other instances, a few at once, for the state of
// the participants' labs they run.
func (w *Workshops) remoteLabs(ctx context.Context, ps []store.Participant) map[string]RemoteLab {
	var mu sync.Mutex
	out := map[string]RemoteLab{}
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, p := range ps {
		if p.Lab == "" {
			continue
		}
		if _, err := w.labs.Get(p.Lab); err == nil {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if r, ok := w.labs.Remote(ctx, p.Lab); ok {
				mu.Lock()
				out[p.Lab] = r
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}
