package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
	"github.com/rlslab/rlslab/web"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
)

// benchWorkshop plays a workshop against a running rlslab through its real
// HTTP and websocket endpoints. Every participant joins at the same moment
// and opens the live view (with a facilitator-style watcher on every lab);
// then, phase by phase, everyone clicks Run at the same moment: lesson 1
// at teaching pace played live as every run was before replays (with
// -compare), the same replayed (the default), and a crowd. Last, a script's
// eight crowd runs, and one learner's lesson-1 run behind them. It prints
// what participants would feel and what the server held.
func benchWorkshop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench workshop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "the running rlslab")
	n := fs.Int("participants", 50, "participants, each with their own lab")
	var dbs labDBFlags
	fs.Var(&dbs, "db", "superuser URL of a PostgreSQL server rlslab's labs are on, to sample its backends (optional; repeat it for each lab server)")
	var pids pidFlags
	fs.Var(&pids, "pid", "an rlslab process id, to read its peak RSS (optional; repeat it for each instance)")
	speed := fs.String("speed", "1", "speed of lesson 1's runs and of the crowd's")
	crowd := fs.Int("crowd-users", 300, "users of each crowd run (shared-pool conn-per-user)")
	compare := fs.Bool("compare", true, "also run lesson 1 live at its pace (\"pacing\":\"live\", as before replays), before the replayed phase")
	withCrowd := fs.Bool("crowd", true, "a phase in which everyone runs the crowd")
	fair := fs.Bool("fair", true, "after the phases: a script's eight crowd runs, played live, then one learner's lesson-1 run behind them")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	also := fs.String("also", "", "more replayed phases after lesson 1's, one per scenario/variant in this comma-separated list (\"all\": one per variant of every scenario but the crowd's)")
	expected := fs.Int("expected", -1, "participants the workshop says it expects, so that rlslab prepares their labs before they join (-1: as many as -participants; 0: none, every lab is made as its participant joins)")
	if _, err := parseInterleaved(fs, args); err != nil {
		return usageError("%v", err)
	}
	if *n < 1 || *n > 1000 {
		return usageError("-participants %d: want 1 to 1000", *n)
	}
	extra, err := alsoPhases(*also, *speed)
	if err != nil {
		return usageError("-also: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	b := &bench{base: strings.TrimRight(*base, "/")}
	if err := b.health(ctx); err != nil {
		return err
	}
	if *expected < 0 {
		*expected = *n
	}
	prepared, err := b.workshop(ctx, *expected, stdout)
	if err != nil {
		return err
	}
	var sampler samplerSet
	for _, db := range dbs {
		s, err := startSampler(ctx, db)
		if err != nil {
			sampler.stop()
			return err
		}
		sampler = append(sampler, s)
	}
	defer sampler.stop()
	meter := newCPUMeter(ctx, dbs.first(), pids.first())
	rep := benchReport{Participants: *n, Budget: b.budget, Expected: *expected, Prepared: prepared}
	began := time.Now()

	// The join burst: everyone at once, each opening the live view.
	ps := make([]*participant, *n)
	joinErrs := make([]string, *n)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() {
			p, err := b.newParticipant(ctx, i)
			if err != nil {
				joinErrs[i] = fmt.Sprintf("participant %d: %v", i, err)
				return
			}
			ps[i] = p
		})
	}
	wg.Wait()
	var joined []*participant
	for i, p := range ps {
		if p == nil {
			rep.addErrors(joinErrs[i])
			continue
		}
		joined = append(joined, p)
		rep.Ready = append(rep.Ready, p.ready)
	}
	defer func() {
		for _, p := range joined {
			p.close()
		}
	}()

	lesson := runSpec{scenario: "set-leak", variant: "session-set", speed: *speed}
	crowdRun := runSpec{scenario: "shared-pool", variant: "conn-per-user", speed: *speed, users: *crowd}
	var phases []benchPhase
	if *compare {
		live := lesson
		live.pacing = "live"
		phases = append(phases, benchPhase{fmt.Sprintf("lesson 1 at %s×, live (before)", *speed), live})
	}
	phases = append(phases, benchPhase{fmt.Sprintf("lesson 1 at %s×, replayed", *speed), lesson})
	phases = append(phases, extra...)
	if *withCrowd {
		phases = append(phases, benchPhase{fmt.Sprintf("the crowd at %s× (%d users)", *speed, *crowd), crowdRun})
	}
	for _, ph := range phases {
		if ctx.Err() != nil {
			break
		}
		sampler.reset()
		start := time.Now()
		cpu0 := meter.read()
		res := make([]runResult, len(joined))
		gate := make(chan struct{})
		for i, p := range joined {
			wg.Go(func() {
				<-gate
				res[i] = p.run(ctx, b, ph.run)
			})
		}
		close(gate)
		wg.Wait()
		pr := phaseReport{Name: ph.name, Took: time.Since(start), CPU: meter.read().since(cpu0)}
		pr.PeakBackends = sampler.peakNow()
		for _, r := range res {
			pr.add(r)
			rep.addErrors(r.errs...)
		}
		rep.Phases = append(rep.Phases, pr)
		pr.print(stderr)
	}
	if *fair && len(joined) > 0 && ctx.Err() == nil {
		sampler.reset()
		// The script's crowds play live: each holds its own connections,
		// as a script that hogs the server would (crowds shown as replays
		// would share one run and hold a single crowd's connections).
		hog := crowdRun
		hog.pacing = "live"
		pr, errs := b.fairness(ctx, joined[0], lesson, hog)
		pr.PeakBackends = sampler.peakNow()
		rep.Fair = &pr
		rep.addErrors(errs...)
		pr.print(stderr)
	}
	rep.Took = time.Since(began)
	for _, p := range joined {
		if w := p.watched(); w > 0 {
			// Two watchers per lab: the owner and the facilitator.
			rep.BytesPerSec = append(rep.BytesPerSec, float64(p.bytes.Load())/2/w.Seconds())
		}
		rep.Delays = append(rep.Delays, p.delays()...)
	}
	rep.PeakBackends, rep.MaxConnections = sampler.stop()
	for _, pid := range pids {
		rep.PeakRSSMB = append(rep.PeakRSSMB, peakRSS(pid))
	}
	rep.Reconnects, rep.Missed, rep.Unavailable = b.reconnects.Load(), b.missed.Load(), b.unavailable.Load()
	rep.JoinUnavailable = b.joinUnavailable.Load()
	rep.print(stdout)
	lost := 0
	for _, ph := range rep.Phases {
		lost += ph.Lost
	}
	if rep.Errors > 0 || lost > 0 {
		return fmt.Errorf("%d errors, %d runs lost", rep.Errors, lost)
	}
	return nil
}

// benchPhase is one phase of the bench: every participant clicks Run on
// the same run at the same moment.
type benchPhase struct {
	name string
	run  runSpec
}

// bench is one workshop being played.
type bench struct {
	base   string
	budget int
	ws     struct{ ID, Code string } // the workshop everyone joins
	// reconnects counts live views opened again after their connection
	// broke; missed counts runs whose start or end a view did not show
	// and state.json did.
	reconnects, missed atomic.Int64
	unavailable        atomic.Int64 // state.json reads answered 503 and asked again
	joinUnavailable    atomic.Int64 // joins and lab requests answered 503 and asked again
}

// workshop creates the bench's workshop (lesson 1) through POST /workshops,
// saying it expects expected participants, and waits until the dashboard
// says their labs are ready (at most two minutes); it returns how long that
// took.
func (b *bench) workshop(ctx context.Context, expected int, stdout io.Writer) (time.Duration, error) {
	jar, _ := cookiejar.New(nil)
	fac := &http.Client{Jar: jar, Timeout: time.Minute}
	body := fmt.Sprintf(`{"title":"rlslab bench","lessons":["set-leak"],"expected":%d}`, expected)
	var ws struct {
		ID   string `json:"id"`
		Code string `json:"code"`
	}
	if code, err := b.call(ctx, fac, "POST", "/workshops", body, &ws); err != nil || code != http.StatusCreated {
		return 0, fmt.Errorf("create the workshop: %d %v", code, err)
	}
	b.ws.ID, b.ws.Code = ws.ID, ws.Code
	if expected == 0 {
		return 0, nil
	}
	begin := time.Now()
	for {
		var st struct {
			Counts struct {
				LabsReady int `json:"labs_ready"`
			} `json:"counts"`
		}
		if code, err := b.call(ctx, fac, "GET", "/workshops/"+ws.ID+"/state.json", "", &st); err != nil || code != http.StatusOK {
			return 0, fmt.Errorf("the workshop's state: %d %v", code, err)
		}
		if st.Counts.LabsReady >= expected || time.Since(begin) > 2*time.Minute {
			fmt.Fprintf(stdout, "labs ready %d/%d after %s\n", st.Counts.LabsReady, expected, time.Since(begin).Round(time.Millisecond))
			return time.Since(begin), nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// join joins the bench's workshop as participant i and returns the lab's
// id, asking again while the lab is being prepared (202), as the lesson
// page does.
func (b *bench) join(ctx context.Context, c *http.Client, i int) (string, error) {
	body := fmt.Sprintf(`{"name":"participant %d","code":%q}`, i, b.ws.Code)
	var j struct{ Lab string }
	deadline := time.Now().Add(2 * time.Minute)
	wait := time.Second
	// again waits before the next try, as the page does (1 s, then 2, 4,
	// up to 10 s), and reports false once the bench gives up.
	again := func() bool {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
		return true
	}
	code, err := b.call(ctx, c, "POST", "/workshops/"+b.ws.ID+"/join", body, &j)
	for code == http.StatusServiceUnavailable && !b.joined(c) {
		// Not joined yet: the page asks again by itself.
		b.joinUnavailable.Add(1)
		if !again() {
			break
		}
		code, err = b.call(ctx, c, "POST", "/workshops/"+b.ws.ID+"/join", body, &j)
	}
	for (code == http.StatusAccepted || code == http.StatusServiceUnavailable) && j.Lab == "" {
		// Joined, the lab not ready yet (202, Retry-After: 1) or not
		// made for now (503): the lesson page asks for it again.
		if code == http.StatusServiceUnavailable {
			b.joinUnavailable.Add(1)
		}
		if !again() {
			break
		}
		var lab struct{ ID string }
		code, err = b.call(ctx, c, "POST", "/labs", "", &lab)
		j.Lab = lab.ID
	}
	if err != nil || code != http.StatusCreated || j.Lab == "" {
		return "", fmt.Errorf("%d %v", code, err)
	}
	return j.Lab, nil
}

// joined reports whether c holds a learner's cookie of rlslab: a join
// that answered 503 after it was recorded (the lab could not be had yet)
// must not be sent again.
func (b *bench) joined(c *http.Client) bool {
	u, err := url.Parse(b.base)
	if err != nil || c.Jar == nil {
		return false
	}
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == web.OwnerCookie {
			return true
		}
	}
	return false
}

// health reads the budget from /healthz.
func (b *bench) health(ctx context.Context) error {
	h, err := b.healthz(ctx)
	if err != nil {
		return err
	}
	b.budget = h.Budget
	return nil
}

// healthzDoc is what the bench reads of /healthz.
type healthzDoc struct {
	Status string `json:"status"`
	Budget int    `json:"budget"`
	Queued int    `json:"queued_runs"`
}

// healthz reads /healthz.
func (b *bench) healthz(ctx context.Context) (healthzDoc, error) {
	var h healthzDoc
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return h, fmt.Errorf("rlslab at %s: %w", b.base, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Status != "ok" {
		return h, fmt.Errorf("rlslab at %s is not healthy (%d)", b.base, resp.StatusCode)
	}
	return h, nil
}

// finishedAt finds request rows' server-side finish times in a frame.
var finishedAt = regexp.MustCompile(`data-finished-at="(\d+)"`)

// statusAttrs finds the status bar's status and frame number in a frame:
// the attributes of its element, whatever else stands between them.
var statusAttrs = regexp.MustCompile(`id="status"[^>]*? data-status="(\w+)"[^>]*? data-frame="(\d+)"`)

// runSpec is one run a participant starts.
type runSpec struct {
	scenario, variant, speed string
	pacing                   string // "live" to play live at the pace
	users                    int    // the crowd's users, if any
}

// alsoPhases turns -also's list into replayed phases at speed: each item
// is scenario/variant of the default catalog, and "all" is every variant
// of every scenario but the crowd's (shared-pool, measured in its own
// phase).
func alsoPhases(list, speed string) ([]benchPhase, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	cat := scenarios.DefaultCatalog()
	var specs []runSpec
	if strings.TrimSpace(list) == "all" {
		for _, sc := range cat.All() {
			if sc.ID == "shared-pool" {
				continue
			}
			for _, v := range sc.Variants {
				specs = append(specs, runSpec{scenario: sc.ID, variant: v.Name, speed: speed})
			}
		}
	} else {
		for _, item := range strings.Split(list, ",") {
			id, variant, ok := strings.Cut(strings.TrimSpace(item), "/")
			if !ok || id == "" || variant == "" {
				return nil, fmt.Errorf("%q: want scenario/variant", item)
			}
			sc, err := cat.Lookup(id)
			if err != nil {
				return nil, fmt.Errorf("%q: %w", item, err)
			}
			if _, ok := sc.Variant(variant); !ok {
				return nil, fmt.Errorf("%q: scenario %s has no variant %q", item, id, variant)
			}
			specs = append(specs, runSpec{scenario: id, variant: variant, speed: speed})
		}
	}
	phases := make([]benchPhase, len(specs))
	for i, r := range specs {
		phases[i] = benchPhase{fmt.Sprintf("%s %s at %s×, replayed", r.scenario, r.variant, speed), r}
	}
	return phases, nil
}

// body is the run's POST /labs/{id}/runs body.
func (r runSpec) body() string {
	extra := ""
	if r.users > 0 {
		extra += fmt.Sprintf(`,"params":{"users":%d}`, r.users)
	}
	if r.pacing != "" {
		extra += fmt.Sprintf(`,"pacing":%q`, r.pacing)
	}
	return fmt.Sprintf(`{"scenario":%q,"variant":%q,"speed":%q%s}`, r.scenario, r.variant, r.speed, extra)
}

// participant is one participant's browser: their client with its
// cookie, their lab, and the live view they and a facilitator watch.
type participant struct {
	i     int
	c     *http.Client
	lab   string
	ready time.Duration
	bytes atomic.Int64
	live  atomic.Bool // a run played live is going: its rows' delays count
	stop  context.CancelFunc
	wg    sync.WaitGroup
	since time.Time

	mu      sync.Mutex
	status  string // the status bar's, as last received by the owner's view
	frame   int
	started bool          // a run's running or queued status came since the last click
	changed chan struct{} // closed and replaced on every status received
	delayed []time.Duration
	seen    map[string]bool
	end     time.Time
}

// newParticipant joins the workshop as participant i and opens the live
// view twice: the owner's and a facilitator's (no cookie).
func (b *bench) newParticipant(ctx context.Context, i int) (*participant, error) {
	jar, _ := cookiejar.New(nil)
	p := &participant{i: i, c: &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		changed: make(chan struct{}), seen: map[string]bool{}}
	t0 := time.Now()
	id, err := b.join(ctx, p.c, i)
	if err != nil {
		return nil, fmt.Errorf("join: %v", err)
	}
	p.lab, p.ready = id, time.Since(t0)
	wctx, stop := context.WithCancel(ctx)
	p.stop = stop
	for k, client := range []*http.Client{p.c, {}} {
		conn, err := b.dial(wctx, client, p.lab)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("websocket: %v", err)
		}
		p.wg.Go(func() { p.watch(wctx, b, client, conn, k == 0) })
	}
	p.since = time.Now()
	return p, nil
}

// read reads one websocket of the participant's lab until ctx ends: it
// counts bytes, frame delays (on the owner's view) and follows the status
// bar.
func (p *participant) read(ctx context.Context, conn *websocket.Conn, owner bool) {
	defer conn.Close()
	go func() { <-ctx.Done(); conn.Close() }()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return
		}
		now := time.Now()
		p.bytes.Add(int64(len(data)))
		if !owner {
			continue
		}
		p.mu.Lock()
		for _, m := range finishedAt.FindAllSubmatch(data, -1) {
			ms, _ := strconv.ParseInt(string(m[1]), 10, 64)
			if key := string(m[1]); ms > 0 && !p.seen[key] && p.live.Load() {
				p.seen[key] = true
				p.delayed = append(p.delayed, now.Sub(time.UnixMilli(ms)))
			}
		}
		if m := statusAttrs.FindSubmatch(data); m != nil {
			p.status = string(m[1])
			p.frame, _ = strconv.Atoi(string(m[2]))
			if p.status == "running" || p.status == "queued" {
				p.started = true
			}
			close(p.changed)
			p.changed = make(chan struct{})
		}
		p.mu.Unlock()
	}
}

// watch reads one live view until ctx ends, and opens it again (with
// backoff) whenever the connection breaks, as the page does.
func (p *participant) watch(ctx context.Context, b *bench, c *http.Client, conn *websocket.Conn, owner bool) {
	for {
		p.read(ctx, conn, owner)
		if ctx.Err() != nil {
			return
		}
		b.reconnects.Add(1)
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			var err error
			if conn, err = b.dial(ctx, c, p.lab); err == nil {
				break
			}
		}
	}
}

// close stops the participant's live views.
func (p *participant) close() {
	p.mu.Lock()
	if p.end.IsZero() {
		p.end = time.Now()
	}
	p.mu.Unlock()
	if p.stop != nil {
		p.stop()
	}
	p.wg.Wait()
}

// watched returns how long the live views were open.
func (p *participant) watched() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end.IsZero() {
		return time.Since(p.since)
	}
	return p.end.Sub(p.since)
}

// delays returns the frame delays of request rows the owner's view got
// during runs played live: from the server's finish of a request to the
// row's receipt. A replayed run shows its rows later by design, so its
// rows are not counted.
func (p *participant) delays() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]time.Duration(nil), p.delayed...)
}

// waitView waits until the owner's live view satisfies ok.
func (p *participant) waitView(ctx context.Context, ok func(status string, frame int, started bool) bool) error {
	for {
		p.mu.Lock()
		done, changed := ok(p.status, p.frame, p.started), p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// viewMissedAfter is how long a run's wait follows the live view alone
// before it also reads state.json, every as long: a view that skipped
// frames under load (a slow watcher gets the newest frame only) may never
// show a short run's running status.
const viewMissedAfter = time.Second

// waitViewOrState waits until the owner's live view satisfies ok, or a
// state.json read once the view has been quiet for viewMissedAfter
// satisfies okState (counted in missed).
func (p *participant) waitViewOrState(ctx context.Context, b *bench, ok func(status string, frame int, started bool) bool, okState func(benchState) bool) error {
	for {
		p.mu.Lock()
		done, changed := ok(p.status, p.frame, p.started), p.changed
		p.mu.Unlock()
		if done {
			return nil
		}
		t := time.NewTimer(viewMissedAfter)
		select {
		case <-changed:
			t.Stop()
			continue
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		var st benchState
		if code, err := b.call(ctx, p.c, "GET", "/labs/"+p.lab+"/state.json", "", &st); err == nil && code == http.StatusOK && okState(st) {
			b.missed.Add(1)
			return nil
		}
	}
}

// runResult is what one run measured.
type runResult struct {
	accepted   time.Duration // click → POST /labs/{id}/runs answered
	firstFrame time.Duration // click → the run's first frame in the live view
	queued     time.Duration // as the run's state says
	total      time.Duration // click → the run's end in the live view
	ended      bool
	replayed   bool
	errs       []string
}

// run clicks Run with spec and follows the live view to the run's end.
func (p *participant) run(ctx context.Context, b *bench, spec runSpec) (r runResult) {
	fail := func(format string, args ...any) runResult {
		r.errs = append(r.errs, fmt.Sprintf("participant %d: %s: ", p.i, spec.scenario)+fmt.Sprintf(format, args...))
		return r
	}
	// The lab's state version before the click: a state newer than it,
	// read when the view missed the run's statuses, is this run's.
	var before benchState
	if code, err := b.state(ctx, p.c, p.lab, &before); err != nil || code != http.StatusOK {
		return fail("state.json: %d %v", code, err)
	}
	p.mu.Lock()
	p.started = false
	p.mu.Unlock()
	p.live.Store(spec.pacing == "live")
	defer p.live.Store(false)
	click := time.Now()
	if code, err := b.call(ctx, p.c, "POST", "/labs/"+p.lab+"/runs", spec.body(), nil); err != nil || code != http.StatusAccepted {
		return fail("start: %d %v", code, err)
	}
	r.accepted = time.Since(click)
	over := func(status string) bool { return status == "done" || status == "failed" || status == "cancelled" }
	if err := p.waitViewOrState(ctx, b, func(status string, frame int, started bool) bool {
		return started && (status == "running" && frame >= 1 || over(status))
	}, func(st benchState) bool {
		return st.Version > before.Version && (st.Status == "running" && st.Frame >= 1 || over(st.Status))
	}); err != nil {
		return fail("no first frame: %v", err)
	}
	r.firstFrame = time.Since(click)
	for {
		if err := p.waitViewOrState(ctx, b, func(status string, _ int, started bool) bool { return started && over(status) },
			func(st benchState) bool { return st.Version > before.Version && over(st.Status) }); err != nil {
			return fail("no end: %v", err)
		}
		// The view may fold a whole run into one frame: the state says
		// whether this one is over.
		var st benchState
		if code, err := b.state(ctx, p.c, p.lab, &st); err != nil || code != http.StatusOK {
			return fail("state.json: %d %v", code, err)
		}
		if over(st.Status) {
			r.total, r.ended = time.Since(click), true
			r.queued, r.replayed = time.Duration(st.QueuedMS)*time.Millisecond, st.Replay != nil
			if st.Status != "done" {
				return fail("ended %s: %s", st.Status, st.Error)
			}
			return r
		}
		p.mu.Lock()
		p.started = true
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return fail("no end: %v", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fairness plays a script that makes eight labs of its own (no workshop,
// one client address) and starts a crowd (played live) in each at once; once some of
// them wait in the admission queue, learner clicks Run on lesson 1. It
// measures how long the learner's run took to its first frame.
func (b *bench) fairness(ctx context.Context, learner *participant, lesson, crowd runSpec) (phaseReport, []string) {
	pr := phaseReport{Name: "1 learner behind a script's 8 crowds"}
	var errs []string
	start := time.Now()
	type scriptLab struct {
		c  *http.Client
		id string
	}
	labs := make([]scriptLab, 8)
	for i := range labs {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar, Timeout: time.Minute}
		var lab struct{ ID string }
		code, err := b.call(ctx, c, "POST", "/labs", "", &lab)
		if err != nil || code != http.StatusCreated || lab.ID == "" {
			return pr, append(errs, fmt.Sprintf("script lab %d: %d %v", i, code, err))
		}
		labs[i] = scriptLab{c, lab.ID}
	}
	for i, l := range labs {
		if code, err := b.call(ctx, l.c, "POST", "/labs/"+l.id+"/runs", crowd.body(), nil); err != nil || code != http.StatusAccepted {
			errs = append(errs, fmt.Sprintf("script crowd %d: %d %v", i, code, err))
		}
	}
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		h, err := b.healthz(ctx)
		if err != nil {
			return pr, append(errs, err.Error())
		}
		if h.Queued > 0 || time.Since(start) > 30*time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return pr, append(errs, ctx.Err().Error())
		case <-time.After(wait):
		}
	}
	r := learner.run(ctx, b, lesson)
	pr.add(r)
	errs = append(errs, r.errs...)
	for _, l := range labs {
		for {
			var st benchState
			if code, err := b.call(ctx, l.c, "GET", "/labs/"+l.id+"/state.json", "", &st); err != nil || code != http.StatusOK {
				errs = append(errs, fmt.Sprintf("script lab: state.json %d %v", code, err))
				break
			}
			if st.Status == "done" || st.Status == "failed" {
				break
			}
			select {
			case <-ctx.Done():
				return pr, append(errs, ctx.Err().Error())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	pr.Took = time.Since(start)
	return pr, errs
}

// benchState is what the bench reads of state.json.
type benchState struct {
	Version  uint64 `json:"version"`
	Frame    int    `json:"frame"`
	Status   string `json:"status"`
	Error    string `json:"error"`
	QueuedMS int64  `json:"queued_ms"`
	Replay   *struct {
		RanMS int64 `json:"ran_ms"`
	} `json:"replay"`
}

// state reads lab's state.json into st, asking again (with backoff, for
// ten seconds at most) while it is answered 503, as a page that polls
// would; each 503 is counted in unavailable.
func (b *bench) state(ctx context.Context, c *http.Client, lab string, st *benchState) (int, error) {
	deadline := time.Now().Add(10 * time.Second)
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 2*time.Second) {
		code, err := b.call(ctx, c, "GET", "/labs/"+lab+"/state.json", "", st)
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, err
		}
		b.unavailable.Add(1)
		select {
		case <-ctx.Done():
			return code, err
		case <-time.After(wait):
		}
	}
}

// call sends a request and decodes a JSON answer into out.
func (b *bench) call(ctx context.Context, c *http.Client, method, path, body string, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.base+path, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, err
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, err
		}
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, errors.New(strings.TrimSpace(string(data)))
	}
	return resp.StatusCode, nil
}

// dial opens the lab's live view websocket with the client's cookies.
func (b *bench) dial(ctx context.Context, c *http.Client, lab string) (*websocket.Conn, error) {
	u, _ := url.Parse(b.base)
	ws := *u
	ws.Scheme = strings.Replace(u.Scheme, "http", "ws", 1)
	ws.Path = "/labs/" + lab + "/ws"
	h := http.Header{"Origin": {b.base}}
	if c.Jar != nil {
		for _, ck := range c.Jar.Cookies(u) {
			h.Add("Cookie", ck.String())
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second, EnableCompression: true}
	conn, _, err := d.DialContext(ctx, ws.String(), h)
	return conn, err
}

// benchReport is what the bench prints.
type benchReport struct {
	Participants    int
	Took            time.Duration
	Ready           []time.Duration
	Phases          []phaseReport
	Fair            *phaseReport
	Delays          []time.Duration
	BytesPerSec     []float64
	Errors          int
	ErrorSample     []string
	Budget          int
	PeakBackends    []int // per server sampled (-db)
	MaxConnections  []int
	PeakRSSMB       []float64     // per process (-pid)
	Reconnects      int64         // live views opened again
	Missed          int64         // run starts or ends read from state.json, not the view
	Unavailable     int64         // state.json reads answered 503 and asked again
	JoinUnavailable int64         // joins and lab requests answered 503 and asked again
	Expected        int           // participants the workshop said it expected
	Prepared        time.Duration // until the dashboard said their labs were ready
}

// phaseReport is what one phase (everyone clicking Run at once) measured.
type phaseReport struct {
	Name         string
	Took         time.Duration
	Accepted     []time.Duration
	FirstFrame   []time.Duration
	Queued       []time.Duration
	Total        []time.Duration
	Ended, Lost  int
	Replayed     int
	PeakBackends []int    // per server sampled
	CPU          cpuTimes // CPU time the programs used during the phase (zero: not measured)
}

// add counts one run of the phase.
func (ph *phaseReport) add(r runResult) {
	if !r.ended {
		ph.Lost++
		return
	}
	ph.Ended++
	if r.replayed {
		ph.Replayed++
	}
	ph.Accepted = append(ph.Accepted, r.accepted)
	ph.FirstFrame = append(ph.FirstFrame, r.firstFrame)
	ph.Queued = append(ph.Queued, r.queued)
	ph.Total = append(ph.Total, r.total)
}

// addErrors counts errors and keeps the first few.
func (r *benchReport) addErrors(errs ...string) {
	for _, e := range errs {
		if e == "" {
			continue
		}
		r.Errors++
		if len(r.ErrorSample) < 8 {
			r.ErrorSample = append(r.ErrorSample, e)
		}
	}
}

func (r benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "workshop of %d participants, %s in all\n", r.Participants, r.Took.Round(time.Millisecond))
	if r.Expected > 0 {
		fmt.Fprintf(w, "  expected %d: their labs prepared in %s before anyone joined\n", r.Expected, r.Prepared.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  expected size not given: every lab made as its participant joined\n")
	}
	durLine(w, "join → lab ready", r.Ready)
	for _, ph := range append(append([]phaseReport(nil), r.Phases...), derefPhase(r.Fair)...) {
		ph.print(w)
	}
	durLine(w, "frame delay, live runs", r.Delays)
	slices.Sort(r.BytesPerSec)
	if n := len(r.BytesPerSec); n > 0 {
		fmt.Fprintf(w, "  %-34s p50 %9.0f  max %9.0f B/s per watcher\n", "frame bytes", r.BytesPerSec[n/2], r.BytesPerSec[n-1])
	}
	if len(r.MaxConnections) > 0 {
		fmt.Fprintf(w, "  client backends: peak %s, budget %d, max_connections %s\n", joinInts(r.PeakBackends), r.Budget, joinInts(r.MaxConnections))
	} else {
		fmt.Fprintf(w, "  backends: budget %d (pass -db to sample the peak)\n", r.Budget)
	}
	if len(r.PeakRSSMB) > 0 {
		mb := make([]string, len(r.PeakRSSMB))
		for i, v := range r.PeakRSSMB {
			mb[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(w, "  rlslab peak RSS: %s MB\n", strings.Join(mb, " + "))
	}
	if r.JoinUnavailable > 0 {
		fmt.Fprintf(w, "  joins or lab requests answered 503 and asked again (as the page does): %d\n", r.JoinUnavailable)
	}
	if r.Reconnects > 0 || r.Missed > 0 || r.Unavailable > 0 {
		fmt.Fprintf(w, "  live views opened again %d; run starts or ends the view skipped, read from state.json: %d; state.json answered 503 and asked again: %d\n",
			r.Reconnects, r.Missed, r.Unavailable)
	}
	fmt.Fprintf(w, "  errors %d\n", r.Errors)
	for _, e := range r.ErrorSample {
		fmt.Fprintln(w, "   -", e)
	}
}

// sec rounds a duration for the report: to the millisecond under 10 s, to
// the tenth of a second above.
func sec(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// durLine prints the p50, p95 and maximum of ds.
func durLine(w io.Writer, name string, ds []time.Duration) {
	s := summarize(ds)
	fmt.Fprintf(w, "  %-34s p50 %9s  p95 %9s  max %9s  (n=%d)\n", name, sec(s.P50), sec(s.P95), sec(s.Max), s.N)
}

// print prints the phase's lines.
func (ph phaseReport) print(w io.Writer) {
	fmt.Fprintf(w, "  %s: %s; runs ended %d (replayed %d), lost %d", ph.Name, sec(ph.Took), ph.Ended, ph.Replayed, ph.Lost)
	if len(ph.PeakBackends) > 0 {
		fmt.Fprintf(w, "; peak client backends %s", joinInts(ph.PeakBackends))
	}
	fmt.Fprintln(w)
	durLine(w, "  click → run accepted (202)", ph.Accepted)
	durLine(w, "  click → first frame", ph.FirstFrame)
	durLine(w, "  queue wait", ph.Queued)
	durLine(w, "  click → run shown to its end", ph.Total)
	if ph.CPU != (cpuTimes{}) {
		ph.CPU.print(w, ph.Ended+ph.Lost)
	}
}

// derefPhase returns the phase as a list of none or one.
func derefPhase(p *phaseReport) []phaseReport {
	if p == nil {
		return nil
	}
	return []phaseReport{*p}
}

// backendSampler samples the server's client backends in
// pg_stat_activity (all of them but its own: rlslab's, and anything else
// connected to the same server).
type backendSampler struct {
	conn     *pgx.Conn
	done     chan struct{}
	stopped  chan struct{}
	maxConns int
	once     sync.Once

	mu        sync.Mutex
	peak      int // since the start
	phasePeak int // since the last reset
}

// reset starts a new phase's peak.
func (s *backendSampler) reset() {
	s.mu.Lock()
	s.phasePeak = 0
	s.mu.Unlock()
}

// peakNow returns the peak since the last reset.
func (s *backendSampler) peakNow() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.phasePeak
}

// samplerSet samples every lab server given (-db), one sampler each.
type samplerSet []*backendSampler

// reset starts a new phase's peak on every server.
func (ss samplerSet) reset() {
	for _, s := range ss {
		s.reset()
	}
}

// peakNow returns each server's peak since the last reset.
func (ss samplerSet) peakNow() []int {
	var out []int
	for _, s := range ss {
		out = append(out, s.peakNow())
	}
	return out
}

// stop ends the sampling and returns each server's peak and
// max_connections.
func (ss samplerSet) stop() (peaks, maxConns []int) {
	for _, s := range ss {
		p, m := s.stop()
		peaks, maxConns = append(peaks, p), append(maxConns, m)
	}
	return peaks, maxConns
}

// joinInts prints numbers as "a + b" (one per server).
func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, " + ")
}

// pidFlags collects repeated -pid flags.
type pidFlags []int

// String lists the process ids.
func (p *pidFlags) String() string {
	if p == nil {
		return ""
	}
	return joinInts(*p)
}

// Set adds one process id: a positive decimal number.
func (p *pidFlags) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a process id, got %.40q", v)
	}
	*p = append(*p, n)
	return nil
}

func startSampler(ctx context.Context, dbURL string) (*backendSampler, error) {
	cfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		return nil, usageError("-db: %v", err)
	}
	cfg.RuntimeParams["application_name"] = "bench sampler"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("-db: %w", err)
	}
	s := &backendSampler{conn: conn, done: make(chan struct{}), stopped: make(chan struct{})}
	if err := conn.QueryRow(ctx, "SELECT current_setting('max_connections')::int").Scan(&s.maxConns); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	go func() {
		defer close(s.stopped)
		for {
			select {
			case <-s.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var n int
			err := conn.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
				WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`).Scan(&n)
			if err == nil {
				s.mu.Lock()
				s.peak, s.phasePeak = max(s.peak, n), max(s.phasePeak, n)
				s.mu.Unlock()
			}
		}
	}()
	return s, nil
}

// stop ends the sampling and returns the peak and max_connections.
func (s *backendSampler) stop() (peak, maxConns int) {
	s.once.Do(func() {
		close(s.done)
		<-s.stopped
		s.conn.Close(context.Background())
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.maxConns
}

// peakRSS reads a process's peak resident set size (VmHWM) in MB.
func peakRSS(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// durStats is a nearest-rank summary of durations.
type durStats struct {
	P50, P95, Max time.Duration
	N             int
}

// summarize returns the nearest-rank p50, p95 and the maximum of ds, with
// the engine's one percentile definition.
func summarize(ds []time.Duration) durStats {
	if len(ds) == 0 {
		return durStats{}
	}
	return durStats{P50: measure.Percentile(ds, 50), P95: measure.Percentile(ds, 95), Max: measure.Percentile(ds, 100), N: len(ds)}
}
