package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// chromiumPath is where Debian's chromium package installs the browser.
const chromiumPath = "/usr/bin/chromium"

// Window size of the browser, and of the screenshot for the README.
const (
	browserWidth  = 1500
	browserHeight = 1100
)

// actionTimeout bounds one browser step (a navigation, a click, a wait for
// a run to end).
const actionTimeout = 30 * time.Second

// testHooks runs in every page before the page's own scripts: it counts the
// websocket opens and frames of htmx's ws extension, so that a test can wait
// until a page is connected before it starts a run.
const testHooks = `
window.rlslabTest = {wsOpen: 0, frames: 0};
document.addEventListener("htmx:wsOpen", function () { window.rlslabTest.wsOpen++; });
document.addEventListener("htmx:wsAfterMessage", function () { window.rlslabTest.frames++; });
`

// chromium is the package's one headless browser, started by the first
// browser test and closed by TestMain once the tests are done. Each test
// opens its tabs in browser contexts of their own (newTab), which share no
// cookies, storage or cache with another test's: one browser per test cost
// a chromium start (seconds of CPU under -race on 2 cores) each time.
var chromium struct {
	mu     sync.Mutex
	ctx    context.Context // the browser's first tab; nil until started
	cancel func()          // stops the browser and removes its profile
}

// newBrowser returns a context bound to the package's headless chromium,
// starting it on the first call (or again, if it died): open tabs on it
// with newTab, never run actions on it directly. Without chromium the test
// is skipped, or fails when CI is set.
func newBrowser(t testing.TB) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("browser tests need chromium at %s, and CI must have it: %v", chromiumPath, err)
		}
		t.Skipf("browser tests skipped: no chromium at %s (apt-get install chromium): %v", chromiumPath, err)
	}
	chromium.mu.Lock()
	defer chromium.mu.Unlock()
	if chromium.ctx != nil && chromium.ctx.Err() == nil {
		return chromium.ctx
	}
	if chromium.cancel != nil {
		chromium.cancel()
		t.Logf("chromium had stopped; starting it again")
	}
	profile, err := os.MkdirTemp("", "rlslab-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("no-sandbox", true), // we run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(browserWidth, browserHeight),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	chromium.cancel = func() {
		cancel()
		cancelAlloc()
		_ = os.RemoveAll(profile)
	}
	// The first Do starts the browser; it must not carry a timeout, since
	// the browser lives as long as the context of that call.
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		chromium.cancel()
		chromium.ctx, chromium.cancel = nil, nil
		t.Fatalf("start chromium: %v", err)
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))
	chromium.ctx = ctx
	return ctx
}

// closeBrowser stops the package's chromium, if a test started it.
func closeBrowser() {
	chromium.mu.Lock()
	defer chromium.mu.Unlock()
	if chromium.cancel != nil {
		chromium.cancel()
		chromium.ctx, chromium.cancel = nil, nil
	}
}

// tab is one browser tab in its own browser context (its own cookie jar).
type tab struct {
	t    testing.TB
	name string
	ctx  context.Context
}

// newTab opens a tab in a new browser context of browser: a browser of its
// own as far as cookies go.
func newTab(t testing.TB, browser context.Context, name string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	// The first Do opens the tab; like the browser, the tab lives as long
	// as the context of that call, so it gets no timeout.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open tab %s: %v", name, err)
	}
	tb := &tab{t: t, name: name, ctx: ctx}
	tb.do(
		chromedp.EmulateViewport(browserWidth, browserHeight),
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			// Focused as if it were the only tab: the browser is shared,
			// and focus and :focus-visible need a focused page.
			if _, err := cdp.Call(ctx, t, emulation.SetFocusEmulationEnabled, emulation.SetFocusEmulationEnabledParams{Enabled: true}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: testHooks})
			return err
		}),
	)
	return tb
}

// do runs actions in the tab with a bounded time; it fails the test on error.
func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", b.name, err)
	}
}

// run runs one action that returns a value, with a bounded time.
func run[T any](b *tab, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", b.name, err)
	}
	return v
}

// open loads url and waits until the live view is there and its websocket
// is open.
func (b *tab) open(url string) {
	b.t.Helper()
	b.do(
		chromedp.Navigate(url),
		chromedp.WaitReady(chromedp.ID("live")),
		chromedp.Poll[chromedp.Void](`window.rlslabTest && window.rlslabTest.wsOpen > 0`, chromedp.WithPollingInterval(10*time.Millisecond)),
	)
}

// labID reads the lab id the live view shows.
func (b *tab) labID() string {
	b.t.Helper()
	id := run(b, chromedp.Evaluate[string](`document.getElementById("live").getAttribute("data-lab-id")`))
	if id == "" {
		b.t.Fatalf("%s: #live has no data-lab-id", b.name)
	}
	return id
}

// answer answers the prediction question about variant, if the page asks
// it, with choice, and waits until Run no longer waits for it.
func (b *tab) answer(variant string, choice int) {
	b.t.Helper()
	b.do(chromedp.Click(chromedp.CSS(fmt.Sprintf(`form.run-form input[name=variant][value=%q]`, variant))))
	asks := fmt.Sprintf(`form.predict-ask[data-variant=%q]`, variant)
	if run(b, chromedp.Evaluate[bool](fmt.Sprintf(`!!document.querySelector(%q)`, asks))) {
		b.do(
			chromedp.Click(chromedp.CSS(fmt.Sprintf(`%s input[name=choice][value="%d"]`, asks, choice))),
			chromedp.Click(chromedp.CSS(asks+` button[type=submit]`)),
		)
	}
	run(b, chromedp.Poll[bool](`document.getElementById("run").getAttribute("aria-disabled") !== "true"`, chromedp.WithPollingTimeout(actionTimeout)))
}

// pressRun chooses variant and speed in the run form and presses Run,
// answering the variant's prediction question first (the first choice) if
// the page asks it. It returns the time just before the press, in Unix
// milliseconds.
func (b *tab) pressRun(variant, speed string) int64 {
	b.t.Helper()
	b.answer(variant, 0)
	b.do(
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`form.run-form input[name=variant][value=%q]`, variant))),
		chromedp.SetValue(chromedp.CSS(`select#run-speed`), speed),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("control-msg").textContent = ""; document.getElementById("control-msg").className = "control-msg"`),
	)
	checked := run(b, chromedp.Evaluate[string](`(document.querySelector("form.run-form input[name=variant]:checked") || {}).value + "/" + document.querySelector("select#run-speed").value`))
	if want := variant + "/" + speed; checked != want {
		b.t.Fatalf("%s: the form says %s, want %s", b.name, checked, want)
	}
	since := time.Now().UnixMilli()
	b.do(chromedp.Click(chromedp.ID("run")))
	return since
}

// waitDone waits until the live view shows a finished run whose request
// rows all finished at or after since (Unix ms): the run started after
// since, not an earlier one. A run that fails, or a Run press the server
// refused, fails the test at once.
func (b *tab) waitDone(since int64) {
	b.t.Helper()
	pred := fmt.Sprintf(`(function () {
		var msg = document.querySelector("#control-msg.bad");
		if (msg && msg.textContent) return "control: " + msg.textContent;
		var live = document.getElementById("live");
		var status = document.getElementById("status");
		if (!live || !status) return "";
		var st = status.getAttribute("data-status");
		if (st !== "done" && st !== "failed") return "";
		var rows = live.querySelectorAll(".req-row[data-seq]");
		if (rows.length === 0) return "";
		for (var i = 0; i < rows.length; i++) {
			var fin = parseInt(rows[i].getAttribute("data-finished-at"), 10);
			if (fin > 0 && fin < %d) return "";
		}
		return st;
	})()`, since)
	got := run(b, chromedp.Poll[string](pred, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(actionTimeout)))
	if got != engine.StatusDone {
		errText := run(b, chromedp.Evaluate[string](`(document.querySelector("#outcome") || {}).textContent || ""`))
		b.t.Fatalf("%s: run ended with %q %s", b.name, got, errText)
	}
}

// domRow is a request row as the browser shows it.
type domRow struct {
	Seq  int    `json:"seq"`
	PID  uint32 `json:"pid"`
	Leak bool   `json:"leak"`
	Text string `json:"text"`
}

// rows reads the request rows of the live view.
func (b *tab) rows() []domRow {
	b.t.Helper()
	return run(b, chromedp.Evaluate[[]domRow](`Array.from(document.querySelectorAll("#live .req-row[data-seq]")).map(function (r) {
		return {
			seq: parseInt(r.getAttribute("data-seq"), 10),
			pid: parseInt(r.getAttribute("data-pid"), 10),
			leak: r.getAttribute("data-leak") === "true",
			text: Array.from(r.children).map(function (c) { return c.textContent.replace(/\s+/g, " ").trim(); }).join(" | ")
		};
	})`))
}

// waitRunEnd waits until the lab's run goroutine has ended: the live view
// shows done a moment before the lab accepts the next run.
func waitRunEnd(t testing.TB, labs *sessions.Manager, id string) {
	t.Helper()
	lab, err := labs.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	if err := lab.Wait(ctx); err != nil {
		t.Fatalf("run in lab %s: %v", id, err)
	}
}

// fetchState reads GET /labs/{id}/state.json (no cookie needed).
func fetchState(t *testing.T, base, id string) engine.State {
	t.Helper()
	resp, err := (&http.Client{Timeout: actionTimeout}).Get(base + "/labs/" + id + "/state.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("state.json: %s", resp.Status)
	}
	var st engine.State
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("state.json: %v", err)
	}
	return st
}

// checkLeak checks a finished session-set run of set-leak: the one LEAK row
// in the browser ran on the backend the server reports for the forgetful
// request, which is the backend Acme's session-set request scoped.
func checkLeak(t *testing.T, b *tab, base, id string) {
	t.Helper()
	st := fetchState(t, base, id)
	if st.Status != engine.StatusDone || st.Variant != engine.PatternSessionSet {
		t.Fatalf("state.json: status %q variant %q, want done %s", st.Status, st.Variant, engine.PatternSessionSet)
	}
	var forgotPID, acmePID uint32
	for _, r := range st.Requests {
		switch {
		case r.Pattern == engine.PatternForgot:
			if !r.Leak {
				t.Errorf("state.json: the forgetful request #%d did not leak: %+v", r.Seq, r)
			}
			forgotPID = r.PID
		case r.Pattern == engine.PatternSessionSet && r.Tenant != nil && *r.Tenant == "1" && acmePID == 0:
			acmePID = r.PID
		}
	}
	if forgotPID == 0 || acmePID == 0 {
		t.Fatalf("state.json: no forgetful request (pid %d) or no Acme session-set request (pid %d): %+v", forgotPID, acmePID, st.Requests)
	}

	rows := b.rows()
	if len(rows) != len(st.Requests) {
		t.Errorf("browser shows %d request rows, state.json has %d", len(rows), len(st.Requests))
	}
	var leaks []domRow
	for _, r := range rows {
		if r.Leak {
			leaks = append(leaks, r)
		}
	}
	if len(leaks) != 1 {
		t.Fatalf("browser shows %d LEAK rows, want 1: %+v", len(leaks), rows)
	}
	leak := leaks[0]
	if leak.PID != forgotPID {
		t.Errorf("LEAK row #%d: backend %d in the browser, the server says the forgetful request ran on %d", leak.Seq, leak.PID, forgotPID)
	}
	if leak.PID != acmePID {
		t.Errorf("LEAK row #%d: backend %d, but Acme's session-set request scoped backend %d", leak.Seq, leak.PID, acmePID)
	}
	for _, want := range []string{"LEAK", "Globex"} {
		if !strings.Contains(leak.Text, want) {
			t.Errorf("LEAK row text %q lacks %q", leak.Text, want)
		}
	}
	t.Logf("LEAK row #%d on backend %d: %s", leak.Seq, leak.PID, leak.Text)
}

// TestBrowser runs the browser checks against one server and one chromium
// (starting a browser costs seconds); each subtest opens its tabs in
// browser contexts of their own, so each is a browser with its own lab.
func TestBrowser(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 6})
	browser := newBrowser(t)
	for _, c := range []struct {
		name string
		test func(*testing.T, *testServer, context.Context)
	}{
		{"SetLeak", testBrowserSetLeak}, {"SetRole", testBrowserSetRole}, {"TwoWatchers", testBrowserTwoWatchers},
		{"LabGone", testBrowserLabGone}, {"NoOverflow", testBrowserNoOverflow},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each in its own browser context, with its own lab
			c.test(t, ts, browser)
		})
	}
}

// forgetful returns set-leak's forgetful request and Acme's session-set
// request from state.json.
func forgetful(t *testing.T, st engine.State) (forgot, acme engine.RequestRow) {
	t.Helper()
	for _, r := range st.Requests {
		switch {
		case r.Pattern == engine.PatternForgot:
			forgot = r
		case r.Pattern == engine.PatternSessionSet && r.Tenant != nil && *r.Tenant == "1" && acme.Seq == 0:
			acme = r
		}
	}
	if forgot.Seq == 0 || acme.Seq == 0 {
		t.Fatalf("state.json: no forgetful request or no Acme session-set request: %+v", st.Requests)
	}
	return forgot, acme
}

// checkOutcome checks that the outcome bar, pinned at the top of the live
// view, says in words whose rows went to whom, and that the narration's
// last line states the outcome.
func checkOutcome(t *testing.T, b *tab, st engine.State) {
	t.Helper()
	forgot, _ := forgetful(t, st)
	kind := run(b, chromedp.Evaluate[string](`document.getElementById("outcome").getAttribute("data-outcome")`))
	text := run(b, chromedp.Evaluate[string](`document.getElementById("outcome").textContent.replace(/\s+/g, " ").trim()`))
	want := fmt.Sprintf("LEAK: Globex got Acme's %d rows on backend %d", forgot.ForeignRows, forgot.PID)
	if kind != "leak" || !strings.Contains(text, want) {
		t.Errorf("outcome bar: %s %q, want leak %q", kind, text, want)
	}
	// The run's last narration states the outcome, so no second line
	// repeats it.
	narration := run(b, chromedp.Evaluate[string](`document.querySelector("#status .narration").textContent.trim() + "|" + ((document.querySelector("#status [data-testid=final]") || {}).textContent || "")`))
	if conclusion := fmt.Sprintf("Globex got %d of Acme's rows: leak.", forgot.ForeignRows); !strings.HasPrefix(narration, conclusion) || !strings.HasSuffix(narration, "|") {
		t.Errorf("the narration and final line are %q, want the narration to start with the outcome %q and no final line", narration, conclusion)
	}
	// Pinned: the bar is the first thing in the live view, and sticky.
	pos := run(b, chromedp.Evaluate[string](`getComputedStyle(document.getElementById("outcome")).position + " " + (document.getElementById("live").firstElementChild.id)`))
	if pos != "sticky outcome" {
		t.Errorf("outcome bar: position and place %q, want sticky and first", pos)
	}
}

// domLane is a timeline lane as drawn: its PID, and its bands and blocks
// with their drawn extent (the rect's bounding box).
type domLane struct {
	PID   uint32 `json:"pid"`
	Bands []struct {
		Tenant string  `json:"tenant"`
		X      float64 `json:"x"`
		W      float64 `json:"w"`
	} `json:"bands"`
	Blocks []struct {
		Seq    int     `json:"seq"`
		Tenant string  `json:"tenant"`
		Leak   bool    `json:"leak"`
		X      float64 `json:"x"`
		W      float64 `json:"w"`
	} `json:"blocks"`
}

// checkTimeline checks the timeline of backends: one lane per backend the
// run read, and the forgetful request's block drawn on the lane of the
// backend it ran on, over a band of Acme's setting.
func checkTimeline(t *testing.T, b *tab, st engine.State) {
	t.Helper()
	forgot, acme := forgetful(t, st)
	lanes := run(b, chromedp.Evaluate[[]domLane](`Array.from(document.querySelectorAll("#timeline g.tl-lane")).map(function (g) {
		function box(el) { var r = el.querySelector("rect").getBBox(); return {x: r.x, w: r.width}; }
		return {
			pid: parseInt(g.getAttribute("data-pid"), 10),
			bands: Array.from(g.querySelectorAll("g.tl-band")).map(function (e) { var r = box(e); return {tenant: e.getAttribute("data-tenant"), x: r.x, w: r.w}; }),
			blocks: Array.from(g.querySelectorAll("g.tl-block")).map(function (e) { var r = box(e); return {seq: parseInt(e.getAttribute("data-seq"), 10), tenant: e.getAttribute("data-tenant"), leak: e.getAttribute("data-leak") === "true", x: r.x, w: r.w}; })
		};
	})`))
	backends := map[uint32]bool{}
	for _, ev := range st.Timeline.Events {
		backends[ev.PID] = true
	}
	if len(lanes) != len(backends) || len(lanes) != 2 {
		t.Fatalf("timeline: %d lanes, state.json's timeline read %d backends (the pool has 2)", len(lanes), len(backends))
	}
	for _, l := range lanes {
		if !backends[l.PID] {
			t.Errorf("timeline: a lane for backend %d, which the run never read", l.PID)
		}
	}
	found := false
	for _, l := range lanes {
		for _, blk := range l.Blocks {
			if blk.Seq != forgot.Seq {
				continue
			}
			found = true
			if l.PID != forgot.PID || l.PID != acme.PID {
				t.Errorf("the forgetful request #%d is drawn on backend %d; it ran on %d, which Acme's request #%d scoped on %d", blk.Seq, l.PID, forgot.PID, acme.Seq, acme.PID)
			}
			if !blk.Leak || blk.Tenant != "2" {
				t.Errorf("the forgetful block: tenant %q leak %t, want Globex's (2), marked LEAK", blk.Tenant, blk.Leak)
			}
			mid := blk.X + blk.W/2
			under := ""
			for _, band := range l.Bands {
				if band.X <= mid && mid < band.X+band.W {
					under = band.Tenant
				}
			}
			if under != "1" {
				t.Errorf("under the forgetful request's block the band says tenant %q, want Acme's (1): %+v", under, l.Bands)
			}
		}
	}
	if !found {
		t.Errorf("no block for the forgetful request #%d in the timeline: %+v", forgot.Seq, lanes)
	}
}

// checkDark checks that a browser asking for a dark scheme gets one, with
// the tenant colours of the timeline still apart from the background.
func checkDark(t *testing.T, b *tab) {
	t.Helper()
	b.do(colourScheme("dark"))
	got := run(b, chromedp.Evaluate[[]string](`[getComputedStyle(document.body).backgroundColor,
		getComputedStyle(document.querySelector("#timeline .tl-band.tenant-1 rect")).fill,
		getComputedStyle(document.querySelector("#timeline .tl-block.tl-leak rect")).stroke]`))
	b.do(colourScheme(""))
	if len(got) != 3 || got[0] != "rgb(21, 23, 26)" || got[1] == got[0] || got[2] == got[0] {
		t.Errorf("dark scheme: body, Acme's band and the LEAK block are %q", got)
	}
}

// screenshots saves what a learner sees after the run, scrolled to the
// live view's outcome: the README's three pictures of it (a laptop, light
// and dark, and a phone), into docs/ with RLSLAB_SCREENSHOT=1.
// TestBrowserTour looks at every page at every size.
func screenshots(t *testing.T, b *tab) {
	t.Helper()
	dir := filepath.Join("..", "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shots := []struct {
		name   string
		w, h   int64
		scheme string
	}{
		{"timeline-1280x720", 1280, 720, "light"},
		{"dark-1280x720", 1280, 720, "dark"},
		{"phone-390", 390, 844, "light"},
	}
	for _, s := range shots {
		b.do(
			chromedp.EmulateViewport(s.w, s.h),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: s.scheme}}})
				return err
			}),
			chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, document.getElementById("live").getBoundingClientRect().top + window.scrollY - 8)`),
		)
		png := run(b, chromedp.CaptureScreenshot())
		out := filepath.Join(dir, "screenshot-"+s.name+".png")
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s (%d bytes)", out, len(png))
	}
	b.do(
		chromedp.EmulateViewport(browserWidth, browserHeight),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
			return err
		}),
	)
}

func testBrowserSetLeak(t *testing.T, ts *testServer, browser context.Context) {
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()

	since := b.pressRun(engine.PatternSessionSet, "4")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	checkLeak(t, b, ts.URL, id)
	st := fetchState(t, ts.URL, id)
	checkOutcome(t, b, st)
	checkTimeline(t, b, st)
	checkDark(t, b)
	if os.Getenv("RLSLAB_SCREENSHOT") == "1" {
		screenshots(t, b)
	}

	// A second pass at full speed: no pauses, frames may be skipped, and
	// the browser must still end on the same facts.
	since = b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	checkLeak(t, b, ts.URL, id)
	st = fetchState(t, ts.URL, id)
	checkOutcome(t, b, st)
	checkTimeline(t, b, st)
}

// TestBrowserPredictionMarkedWrong answers set-leak's session-set question
// with "no invoices", runs the variant, and finds the answer marked wrong
// by the run (which leaked Acme's rows to Globex).
func TestBrowserPredictionMarkedWrong(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	browser := newBrowser(t)
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()
	b.do(chromedp.Click(chromedp.CSS(`form.run-form input[name=variant][value="session-set"]`)))
	if !run(b, chromedp.Evaluate[bool](`document.getElementById("run").getAttribute("aria-disabled") === "true"`)) {
		t.Fatal("Run does not wait for the prediction")
	}
	b.answer(engine.PatternSessionSet, 1) // "no invoices"
	since := b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	got := run(b, chromedp.Poll[string](`(function () {
		var el = document.querySelector('.predict-checked[data-variant="session-set"]');
		return el && !el.hidden ? el.className + " | " + el.textContent : null;
	})()`, chromedp.WithPollingTimeout(actionTimeout)))
	for _, want := range []string{"verdict-wrong", "wrong", "no invoices", "Acme's invoices", "Globex got 3 of Acme's rows: leak."} {
		if !strings.Contains(got, want) {
			t.Errorf("the verdict %q lacks %q", got, want)
		}
	}
}

// testBrowserSetRole checks that the request log shows the role a leaking
// request ran as: in set-role the leak comes through the role, not the
// tenant setting.
func testBrowserSetRole(t *testing.T, ts *testServer, browser context.Context) {
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-role")
	id := b.labID()
	since := b.pressRun("set-role", "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	st := fetchState(t, ts.URL, id)
	var leak engine.RequestRow
	for _, r := range st.Requests {
		if r.Role == "" && r.FinishedAt != 0 {
			t.Errorf("state.json: request #%d finished without a role: %+v", r.Seq, r)
		}
		if r.Leak {
			leak = r
		}
	}
	if leak.Seq == 0 || leak.Role == "" || leak.Role == st.Timeline.AppRole {
		t.Fatalf("state.json: no leak under a role other than the app role: %+v", st.Requests)
	}
	got := run(b, chromedp.Evaluate[[]string](fmt.Sprintf(`(function () {
		var td = document.querySelector('#live .req-row[data-seq="%d"] .role');
		return td ? [td.textContent.trim(), td.getAttribute("title"), String(td.classList.contains("role-other"))] : [];
	})()`, leak.Seq)))
	if len(got) != 3 || got[1] != leak.Role || got[0] == "" || !strings.HasSuffix(leak.Role, got[0]) || got[2] != "true" {
		t.Errorf("LEAK row #%d's role cell: %q, want %q shown as another role", leak.Seq, got, leak.Role)
	}
	text := run(b, chromedp.Evaluate[string](`document.getElementById("outcome").textContent`))
	if !strings.Contains(text, "as role "+got[0]) {
		t.Errorf("the outcome bar does not name the role: %q", text)
	}
	t.Logf("set-role LEAK row #%d ran as %s: %q", leak.Seq, leak.Role, text)
}

func testBrowserTwoWatchers(t *testing.T, ts *testServer, browser context.Context) {
	owner := newTab(t, browser, "owner")
	owner.open(ts.URL + "/lessons/set-leak")
	id := owner.labID()

	watcher := newTab(t, browser, "watcher")
	watcher.open(ts.URL + "/labs/" + id)
	if got := watcher.labID(); got != id {
		t.Fatalf("watcher shows lab %q, want %q", got, id)
	}
	if n := run(watcher, chromedp.Evaluate[int](`document.querySelectorAll("form.run-form, button#run, button#reset, button#step").length`)); n != 0 {
		t.Errorf("the watcher has %d run controls, want none (controls are owner-only)", n)
	}
	if text := run(watcher, chromedp.Evaluate[string](`(document.querySelector(".watching") || {}).textContent || ""`)); !strings.Contains(text, "You are watching this lab") {
		t.Errorf("the watcher's controls say %q, want \"You are watching this lab\"", text)
	}
	if n := run(owner, chromedp.Evaluate[int](`document.querySelectorAll("form.run-form").length`)); n != 1 {
		t.Errorf("the owner has %d run forms, want 1", n)
	}
	framesBefore := run(watcher, chromedp.Evaluate[int](`window.rlslabTest.frames`))

	since := owner.pressRun(engine.PatternTxLocal, "4")
	// While the run goes on, the watcher selects the first finished row's
	// explanation: frames that follow must leave that text (and the
	// selection) alone.
	watcher.do(chromedp.Poll[chromedp.Void](`document.querySelector("#req-1[data-finished-at] .why")`, chromedp.WithPollingInterval(10*time.Millisecond)))
	selected := run(watcher, chromedp.Evaluate[string](`(function () {
		var why = document.querySelector("#req-1 .why");
		var r = document.createRange();
		r.selectNodeContents(why);
		window.getSelection().removeAllRanges();
		window.getSelection().addRange(r);
		window.rlslabSelected = why;
		return window.getSelection().toString();
	})()`))
	owner.waitDone(since)
	watcher.waitDone(since)
	if still := run(watcher, chromedp.Evaluate[string](`window.rlslabSelected.isConnected ? window.getSelection().toString() : "(the row was replaced)"`)); selected == "" || still != selected {
		t.Errorf("text selected during the run: %q, after the run: %q", selected, still)
	}
	waitRunEnd(t, ts.Labs, id)
	if msg := run(owner, chromedp.Evaluate[string](`document.getElementById("control-msg").textContent`)); msg != "" && !strings.HasPrefix(msg, "Started set-leak / tx-local") {
		t.Errorf("the Run button's answer: %q", msg)
	}

	ownerRows, watcherRows := owner.rows(), watcher.rows()
	key := func(rs []domRow) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = fmt.Sprintf("#%d pid=%d leak=%t", r.Seq, r.PID, r.Leak)
		}
		return out
	}
	if !slices.Equal(key(ownerRows), key(watcherRows)) {
		t.Errorf("the tabs disagree:\nowner:   %v\nwatcher: %v", key(ownerRows), key(watcherRows))
	}
	st := fetchState(t, ts.URL, id)
	var server []string
	for _, r := range st.Requests {
		server = append(server, fmt.Sprintf("#%d pid=%d leak=%t", r.Seq, r.PID, r.Leak))
	}
	if !slices.Equal(key(ownerRows), server) {
		t.Errorf("the browser and state.json disagree:\nbrowser:    %v\nstate.json: %v", key(ownerRows), server)
	}
	for _, r := range ownerRows {
		if r.Leak {
			t.Errorf("tx-local leaked: %+v", r)
		}
	}
	if o := run(watcher, chromedp.Evaluate[string](`document.getElementById("outcome").getAttribute("data-outcome")`)); o != engine.KindFailedClosed {
		t.Errorf("the watcher's outcome bar says %q, want failed-closed (the forgetful request got 0 rows)", o)
	}
	frames := run(watcher, chromedp.Evaluate[int](`window.rlslabTest.frames`)) - framesBefore
	if frames < 2 {
		t.Errorf("the watcher got %d frames during the run, want several", frames)
	}
	t.Logf("both tabs show %d rows %v; the watcher got %d frames", len(ownerRows), key(ownerRows), frames)
}

// testBrowserNoOverflow checks that no page is wider than the screen, from
// a phone to a big screen, on the home page and on a lesson page after a
// run (the widest content there is).
func testBrowserNoOverflow(t *testing.T, ts *testServer, browser context.Context) {
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()
	since := b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	sizes := [][2]int64{{390, 844}, {768, 1024}, {1280, 720}, {1920, 1080}}
	check := func(page string) {
		for _, sz := range sizes {
			b.do(chromedp.EmulateViewport(sz[0], sz[1]))
			got := run(b, chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, window.innerWidth]`))
			if got[0] > got[1] {
				t.Errorf("%s at %dx%d: the page is %d px wide in a %d px window", page, sz[0], sz[1], got[0], got[1])
			}
		}
	}
	check("lesson page")
	// The lesson column keeps its width whatever the lab shows.
	b.do(chromedp.EmulateViewport(1280, 720))
	w := run(b, chromedp.Evaluate[float64](`document.querySelector("article.lesson").getBoundingClientRect().width`))
	b.do(chromedp.Navigate(ts.URL+"/"), chromedp.WaitReady(chromedp.CSS(".lesson-list")))
	check("home page")
	b.do(chromedp.Navigate(ts.URL+"/lessons/reset-on-release"), chromedp.WaitReady(chromedp.ID("live")), chromedp.EmulateViewport(1280, 720))
	if w2 := run(b, chromedp.Evaluate[float64](`document.querySelector("article.lesson").getBoundingClientRect().width`)); w2 != w {
		t.Errorf("the lesson column is %v px wide on one lesson and %v on another", w, w2)
	}
	if title := run(b, chromedp.Evaluate[string](`document.querySelector("article.lesson h1").textContent`)); strings.ContainsAny(title, `"`) {
		t.Errorf("lesson 7's title shows quotes: %s", title)
	}
	check("lesson 7")
	// The theme toggle is remembered across pages.
	b.do(chromedp.Click(chromedp.ID("theme-toggle")))
	first := run(b, chromedp.Evaluate[string](`document.documentElement.getAttribute("data-theme")`))
	b.do(chromedp.Navigate(ts.URL+"/"), chromedp.WaitReady(chromedp.CSS(".lesson-list")))
	if again := run(b, chromedp.Evaluate[string](`document.documentElement.getAttribute("data-theme")`)); first == "" || again != first {
		t.Errorf("theme: %q after the toggle, %q on the next page", first, again)
	}
	bg := run(b, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`))
	t.Logf("theme %s: body background %s", first, bg)
}

// BenchmarkBrowserRowLatency measures how long a finished request takes to
// reach the browser's DOM (server's finished_at to the row's first
// appearance), over b.N full-speed set-leak runs in Debian chromium:
//
//	go test ./web -run '^$' -bench BrowserRowLatency -benchtime 10x
func BenchmarkBrowserRowLatency(b *testing.B) {
	ts := mustStartServer(b, sessions.Config{MaxLabs: 2})
	browser := newBrowser(b)
	tb := newTab(b, browser, "learner")
	tb.open(ts.URL + "/lessons/set-leak")
	id := tb.labID()
	for b.Loop() {
		since := tb.pressRun(engine.PatternSessionSet, "max")
		tb.waitDone(since)
		waitRunEnd(b, ts.Labs, id)
	}
	lat := run(tb, chromedp.Evaluate[[]float64](`window.rlslabRowLatencies`))
	if len(lat) == 0 {
		b.Fatal("no row latencies collected")
	}
	slices.Sort(lat)
	b.ReportMetric(percentile(lat, 50), "p50-ms")
	b.ReportMetric(percentile(lat, 95), "p95-ms")
	b.ReportMetric(lat[len(lat)-1], "max-ms")
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// testBrowserLabGone closes a learner's lab under the page (as expiry
// does): the page says the lab is gone and offers a new one.
func testBrowserLabGone(t *testing.T, ts *testServer, browser context.Context) {
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()
	if err := ts.Labs.CloseLab(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.WaitVisible(chromedp.ID("lab-gone")))
	if text := run(b, chromedp.Text(chromedp.ID("lab-gone"))); !strings.Contains(text, "This lab is gone") {
		t.Errorf("the notice says %q", text)
	}
	// The way on is a plain POST for a new lab beside this lesson.
	if action := run(b, chromedp.Evaluate[string](`document.getElementById("lab-gone").getAttribute("action") + " " + document.getElementById("lab-gone").method`)); action != "/labs?lesson=set-leak post" {
		t.Errorf("the notice's form: %q", action)
	}
}
