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
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
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

// newBrowser starts a headless chromium with a fresh profile for the test
// and returns a context bound to it; the browser stops when the test ends.
// Without chromium the test is skipped, or fails when CI is set.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("browser tests need chromium at %s, and CI must have it: %v", chromiumPath, err)
		}
		t.Skipf("browser tests skipped: no chromium at %s (apt-get install chromium): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("no-sandbox", true), // we run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(browserWidth, browserHeight),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Do starts the browser; it must not carry a timeout, since
	// the browser lives as long as the context of that call.
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Logf("chromium started in %v", time.Since(start).Round(time.Millisecond))
	return ctx
}

// tab is one browser tab in its own browser context (its own cookie jar).
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// newTab opens a tab in a new browser context of browser: a browser of its
// own as far as cookies go.
func newTab(t *testing.T, browser context.Context, name string) *tab {
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

// pressRun chooses variant and speed in the run form and presses Run. It
// returns the time just before the press, in Unix milliseconds.
func (b *tab) pressRun(variant, speed string) int64 {
	b.t.Helper()
	b.do(
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`form.run-form input[name=variant][value=%q]`, variant))),
		chromedp.SetValue(chromedp.CSS(`form.run-form select[name=speed]`), speed),
		chromedp.Evaluate[chromedp.Void](`document.getElementById("control-msg").textContent = ""; document.getElementById("control-msg").className = "control-msg"`),
	)
	checked := run(b, chromedp.Evaluate[string](`(document.querySelector("form.run-form input[name=variant]:checked") || {}).value + "/" + document.querySelector("form.run-form select[name=speed]").value`))
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
		if (!live) return "";
		var st = live.getAttribute("data-status");
		if (st !== "done" && st !== "failed") return "";
		var rows = live.querySelectorAll("tr[data-seq]");
		if (rows.length === 0) return "";
		for (var i = 0; i < rows.length; i++) {
			var fin = parseInt(rows[i].getAttribute("data-finished-at"), 10);
			if (fin > 0 && fin < %d) return "";
		}
		return st;
	})()`, since)
	got := run(b, chromedp.Poll[string](pred, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(actionTimeout)))
	if got != engine.StatusDone {
		errText := run(b, chromedp.Evaluate[string](`(document.querySelector("#live .run-error") || {}).textContent || ""`))
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
	return run(b, chromedp.Evaluate[[]domRow](`Array.from(document.querySelectorAll("#live tr[data-seq]")).map(function (r) {
		return {
			seq: parseInt(r.getAttribute("data-seq"), 10),
			pid: parseInt(r.getAttribute("data-pid"), 10),
			leak: r.getAttribute("data-leak") === "true",
			text: Array.from(r.cells).map(function (c) { return c.textContent.replace(/\s+/g, " ").trim(); }).join(" | ")
		};
	})`))
}

// waitRunEnd waits until the lab's run goroutine has ended: the live view
// shows done a moment before the lab accepts the next run.
func waitRunEnd(t *testing.T, labs *sessions.Manager, id string) {
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

func TestBrowserSetLeak(t *testing.T) {
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()

	since := b.pressRun(engine.PatternSessionSet, "4")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	checkLeak(t, b, ts.URL, id)

	// The screenshot for the README: the lesson after a session-set run,
	// LEAK row in view.
	dir := t.TempDir()
	if os.Getenv("RLSLAB_SCREENSHOT") == "1" {
		dir = filepath.Join("..", "docs")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Scrolled to the top: the lesson column is sticky, and a full-page
	// capture draws it where the scroll position puts it.
	b.do(
		chromedp.WaitVisible(chromedp.CSS(`#live tr[data-leak=true]`)),
		chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`),
	)
	// Quality 100 makes chromedp ask for a PNG; any other quality gives JPEG.
	png := run(b, chromedp.FullScreenshot(100))
	out := filepath.Join(dir, "screenshot-live-view.png")
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", out, len(png))

	// A second pass at full speed: no pauses, frames may be skipped, and
	// the browser must still end on the same facts.
	since = b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	checkLeak(t, b, ts.URL, id)
}

func TestBrowserTwoWatchers(t *testing.T) {
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)
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
	owner.waitDone(since)
	watcher.waitDone(since)
	waitRunEnd(t, ts.Labs, id)

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
	frames := run(watcher, chromedp.Evaluate[int](`window.rlslabTest.frames`)) - framesBefore
	if frames < 2 {
		t.Errorf("the watcher got %d frames during the run, want several", frames)
	}
	t.Logf("both tabs show %d rows %v; the watcher got %d frames", len(ownerRows), key(ownerRows), frames)
}

func TestBrowserRowLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("latency measurement: 20 runs in a browser")
	}
	const runs = 20
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)
	b := newTab(t, browser, "learner")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()

	start := time.Now()
	for range runs {
		since := b.pressRun(engine.PatternSessionSet, "max")
		b.waitDone(since)
		waitRunEnd(t, ts.Labs, id)
	}
	took := time.Since(start)

	lat := run(b, chromedp.Evaluate[[]float64](`window.rlslabRowLatencies`))
	if len(lat) < runs {
		t.Fatalf("collected %d row latencies in %d runs, want at least %d", len(lat), runs, runs)
	}
	for _, v := range lat {
		// Server and browser read the same machine's clock.
		if v < -5 {
			t.Errorf("a row appeared %v ms before the server finished it", v)
		}
	}
	slices.Sort(lat)
	t.Logf("%d runs at full speed in %v (%v per run incl. waits)", runs, took.Round(time.Millisecond), (took / runs).Round(time.Millisecond))
	t.Logf("row-to-DOM latency p50=%gms p95=%gms max=%gms n=%d", percentile(lat, 50), percentile(lat, 95), lat[len(lat)-1], len(lat))
}

// percentile returns the p-th percentile of sorted (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
