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

	"github.com/rlslab/rlslab/scenarios/engine/measure"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5"
)

// benchWorkshop plays a workshop against a running rlslab through its real
// HTTP and websocket endpoints: every participant makes a lab at the same
// moment, opens the live view, runs lesson 1 at teaching pace and then a
// full-speed crowd, with a facilitator-style watcher on every lab. It
// prints what participants would feel and what the server held.
func benchWorkshop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench workshop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", "http://127.0.0.1:8080", "the running rlslab")
	n := fs.Int("participants", 50, "participants, each with their own lab")
	db := fs.String("db", "", "superuser URL of rlslab's PostgreSQL, to sample its backends (optional)")
	pid := fs.Int("pid", 0, "rlslab's process id, to read its peak RSS (optional)")
	speed := fs.String("speed", "1", "speed of lesson 1's run")
	crowd := fs.Int("crowd-users", 300, "users of the full-speed crowd run (shared-pool conn-per-user)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up after this long")
	expected := fs.Int("expected", -1, "participants the workshop says it expects, so that rlslab prepares their labs before they join (-1: as many as -participants; 0: none, every lab is made as its participant joins)")
	if _, err := parseInterleaved(fs, args); err != nil {
		return usageError("%v", err)
	}
	if *n < 1 || *n > 1000 {
		return usageError("-participants %d: want 1 to 1000", *n)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	b := &bench{base: strings.TrimRight(*base, "/"), start: make(chan struct{})}
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
	var sampler *backendSampler
	if *db != "" {
		s, err := startSampler(ctx, *db)
		if err != nil {
			return err
		}
		sampler = s
		defer s.stop()
	}
	var wg sync.WaitGroup
	results := make([]participantResult, *n)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = b.participant(ctx, i, *speed, *crowd)
		}()
	}
	began := time.Now()
	close(b.start)
	wg.Wait()
	took := time.Since(began)
	rep := b.report(results, took)
	rep.Expected, rep.Prepared = *expected, prepared
	if sampler != nil {
		rep.PeakBackends, rep.MaxConnections = sampler.stop()
	}
	if *pid > 0 {
		rep.PeakRSSMB = peakRSS(*pid)
	}
	rep.print(stdout)
	if rep.Errors > 0 || rep.RunsLost > 0 {
		return fmt.Errorf("%d errors, %d runs lost", rep.Errors, rep.RunsLost)
	}
	return nil
}

// bench is one workshop being played.
type bench struct {
	base   string
	start  chan struct{}
	budget int
	ws     struct{ ID, Code string } // the workshop everyone joins
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
	code, err := b.call(ctx, c, "POST", "/workshops/"+b.ws.ID+"/join", body, &j)
	for code == http.StatusAccepted {
		var lab struct{ ID string }
		code, err = b.call(ctx, c, "POST", "/labs", "", &lab)
		j.Lab = lab.ID
	}
	if err != nil || code != http.StatusCreated || j.Lab == "" {
		return "", fmt.Errorf("%d %v", code, err)
	}
	return j.Lab, nil
}

// participantResult is what one participant measured.
type participantResult struct {
	ready     time.Duration
	queued    []time.Duration
	delays    []time.Duration
	bytes     int64
	watched   time.Duration
	errors    []string
	runsLost  int
	runsEnded int
}

// health reads the budget from /healthz.
func (b *bench) health(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", b.base+"/healthz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("rlslab at %s: %w", b.base, err)
	}
	defer resp.Body.Close()
	var h struct {
		Status string `json:"status"`
		Budget int    `json:"budget"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || h.Status != "ok" {
		return fmt.Errorf("rlslab at %s is not healthy (%d)", b.base, resp.StatusCode)
	}
	b.budget = h.Budget
	return nil
}

// finishedAt finds request rows' server-side finish times in a frame.
var finishedAt = regexp.MustCompile(`data-finished-at="(\d+)"`)

// participant plays one participant and the facilitator watching them.
func (b *bench) participant(ctx context.Context, i int, speed string, crowd int) (r participantResult) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	fail := func(format string, args ...any) participantResult {
		r.errors = append(r.errors, fmt.Sprintf("participant %d: ", i)+fmt.Sprintf(format, args...))
		return r
	}
	<-b.start
	t0 := time.Now()
	var lab struct{ ID string }
	id, err := b.join(ctx, c, i)
	if err != nil {
		return fail("join: %v", err)
	}
	lab.ID = id
	r.ready = time.Since(t0)

	// The owner's live view and a facilitator-style watcher (no cookie).
	wctx, stopWatching := context.WithCancel(ctx)
	var bytes atomic.Int64
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for _, client := range []*http.Client{c, {}} {
		conn, err := b.dial(wctx, client, lab.ID)
		if err != nil {
			stopWatching()
			return fail("websocket: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			go func() { <-wctx.Done(); conn.Close() }()
			for {
				_, data, err := conn.ReadMessage()
				if err != nil {
					return
				}
				now := time.Now()
				bytes.Add(int64(len(data)))
				for _, m := range finishedAt.FindAllSubmatch(data, -1) {
					ms, _ := strconv.ParseInt(string(m[1]), 10, 64)
					if ms <= 0 {
						continue
					}
					key := string(m[1])
					mu.Lock()
					if !seen[key] {
						seen[key] = true
						r.delays = append(r.delays, now.Sub(time.UnixMilli(ms)))
					}
					mu.Unlock()
				}
			}
		}()
	}
	watchStart := time.Now()
	for _, run := range []struct{ scenario, variant, speed string }{
		{"set-leak", "session-set", speed},
		{"shared-pool", "conn-per-user", "max"},
	} {
		body := fmt.Sprintf(`{"scenario":%q,"variant":%q,"speed":%q}`, run.scenario, run.variant, run.speed)
		if run.scenario == "shared-pool" {
			body = fmt.Sprintf(`{"scenario":%q,"variant":%q,"speed":%q,"params":{"users":%d}}`, run.scenario, run.variant, run.speed, crowd)
		}
		if code, err := b.call(ctx, c, "POST", "/labs/"+lab.ID+"/runs", body, nil); err != nil || code != http.StatusAccepted {
			r.runsLost++
			r.errors = append(r.errors, fmt.Sprintf("participant %d: start %s: %d %v", i, run.scenario, code, err))
			continue
		}
		st, err := b.waitEnd(ctx, c, lab.ID)
		if err != nil {
			r.runsLost++
			r.errors = append(r.errors, fmt.Sprintf("participant %d: %s: %v", i, run.scenario, err))
			continue
		}
		r.runsEnded++
		r.queued = append(r.queued, time.Duration(st.QueuedMS)*time.Millisecond)
		if st.Status != "done" {
			r.errors = append(r.errors, fmt.Sprintf("participant %d: %s ended %s: %s", i, run.scenario, st.Status, st.Error))
		}
	}
	r.watched = time.Since(watchStart)
	stopWatching()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	r.bytes = bytes.Load()
	return r
}

// benchState is what the bench reads of state.json.
type benchState struct {
	Status   string `json:"status"`
	Error    string `json:"error"`
	QueuedMS int64  `json:"queued_ms"`
}

// waitEnd polls state.json until the run is over.
func (b *bench) waitEnd(ctx context.Context, c *http.Client, lab string) (benchState, error) {
	for {
		var st benchState
		if code, err := b.call(ctx, c, "GET", "/labs/"+lab+"/state.json", "", &st); err != nil || code != http.StatusOK {
			return st, fmt.Errorf("state.json: %d %v", code, err)
		}
		if st.Status == "done" || st.Status == "failed" {
			return st, nil
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-time.After(200 * time.Millisecond):
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
	Participants   int
	Took           time.Duration
	Ready          []time.Duration
	Queued         []time.Duration
	Delays         []time.Duration
	BytesPerSec    []float64
	Errors         int
	ErrorSample    []string
	RunsLost       int
	RunsEnded      int
	Budget         int
	PeakBackends   int
	MaxConnections int
	PeakRSSMB      float64
	Expected       int           // participants the workshop said it expected
	Prepared       time.Duration // until the dashboard said their labs were ready
}

func (b *bench) report(rs []participantResult, took time.Duration) benchReport {
	rep := benchReport{Participants: len(rs), Took: took, Budget: b.budget}
	for _, r := range rs {
		if r.ready > 0 {
			rep.Ready = append(rep.Ready, r.ready)
		}
		rep.Queued = append(rep.Queued, r.queued...)
		rep.Delays = append(rep.Delays, r.delays...)
		if r.watched > 0 {
			// Two watchers per lab: the owner and the facilitator.
			rep.BytesPerSec = append(rep.BytesPerSec, float64(r.bytes)/2/r.watched.Seconds())
		}
		rep.Errors += len(r.errors)
		if len(rep.ErrorSample) < 5 {
			rep.ErrorSample = append(rep.ErrorSample, r.errors...)
		}
		rep.RunsLost += r.runsLost
		rep.RunsEnded += r.runsEnded
	}
	return rep
}

func (r benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "workshop of %d participants, %s in all\n", r.Participants, r.Took.Round(time.Millisecond))
	if r.Expected > 0 {
		fmt.Fprintf(w, "  expected %d: their labs prepared in %s before anyone joined\n", r.Expected, r.Prepared.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "  expected size not given: every lab made as its participant joined\n")
	}
	line := func(name string, ds []time.Duration) {
		s := summarize(ds)
		fmt.Fprintf(w, "  %-30s p50 %8s  p95 %8s  max %8s  (n=%d)\n", name, s.P50.Round(time.Microsecond), s.P95.Round(time.Microsecond), s.Max.Round(time.Microsecond), s.N)
	}
	line("join → lab ready", r.Ready)
	line("queue wait per run", r.Queued)
	line("frame delay (event → receipt)", r.Delays)
	slices.Sort(r.BytesPerSec)
	if n := len(r.BytesPerSec); n > 0 {
		fmt.Fprintf(w, "  %-30s p50 %8.0f  max %8.0f B/s per watcher\n", "frame bytes", r.BytesPerSec[n/2], r.BytesPerSec[n-1])
	}
	if r.MaxConnections > 0 {
		fmt.Fprintf(w, "  backends: peak %d, budget %d, max_connections %d\n", r.PeakBackends, r.Budget, r.MaxConnections)
	} else {
		fmt.Fprintf(w, "  backends: budget %d (pass -db to sample the peak)\n", r.Budget)
	}
	if r.PeakRSSMB > 0 {
		fmt.Fprintf(w, "  rlslab peak RSS: %.0f MB\n", r.PeakRSSMB)
	}
	fmt.Fprintf(w, "  runs ended %d, lost %d; errors %d\n", r.RunsEnded, r.RunsLost, r.Errors)
	for _, e := range r.ErrorSample {
		fmt.Fprintln(w, "   -", e)
	}
}

// backendSampler samples rlslab's backends in pg_stat_activity.
type backendSampler struct {
	conn     *pgx.Conn
	done     chan struct{}
	stopped  chan struct{}
	peak     int
	maxConns int
	once     sync.Once
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
				WHERE backend_type = 'client backend' AND (datname LIKE 'lab\_%' OR application_name LIKE 'rlslab%')`).Scan(&n)
			if err == nil && n > s.peak {
				s.peak = n
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
