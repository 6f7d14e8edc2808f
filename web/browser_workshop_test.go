package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// screenshotDir is where a browser test writes its screenshots: docs/ with
// RLSLAB_SCREENSHOT=1, else nowhere ("": screenshot takes none). Nobody
// looked at the ones a temporary directory got, and each cost chromium a
// render and encode, and the test binary a decode of megabytes under -race.
func screenshotDir(t *testing.T) string {
	t.Helper()
	if os.Getenv("RLSLAB_SCREENSHOT") != "1" {
		return ""
	}
	dir := filepath.Join("..", "docs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves what the tab shows (the viewport) as a PNG into dir;
// with dir "" it takes none.
func (b *tab) screenshot(dir, name string) {
	b.t.Helper()
	if dir == "" {
		return
	}
	png := run(b, chromedp.CaptureScreenshot())
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s (%d bytes)", out, len(png))
}

// poll waits until the JavaScript expression is true in the tab.
func (b *tab) poll(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(10*time.Millisecond))); err != nil {
		b.t.Fatalf("%s: waiting for %s: %v", b.name, what, err)
	}
}

// overflow returns how many pixels the page is wider than the viewport.
func (b *tab) overflow(width, height int64) int {
	b.t.Helper()
	b.do(chromedp.EmulateViewport(width, height))
	return run(b, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`))
}

func TestBrowserWorkshop(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 6})
	browser := newBrowser(t)
	shots := screenshotDir(t)
	start := time.Now()

	// The facilitator creates the workshop on its page (linked from the top
	// of the home page) and opens the facilitator link.
	fac := newTab(t, browser, "facilitator")
	fac.do(
		chromedp.Navigate(ts.URL+"/workshops/new"),
		chromedp.SetValue(chromedp.CSS(`form[action="/workshops"] input[name=title]`), "Tenants and pools, room 1"),
		chromedp.Click(chromedp.CSS(`form[action="/workshops"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("facilitator-url")),
	)
	facURL := run(fac, chromedp.Evaluate[string](`document.getElementById("facilitator-url").href`))
	joinURL := run(fac, chromedp.Evaluate[string](`document.getElementById("join-url").href`))
	fac.do(chromedp.Navigate(facURL), chromedp.WaitReady(chromedp.ID("dash-live")))
	fac.poll("dashboard socket", `window.rlslabTest.wsOpen > 0`)
	if u := run(fac, chromedp.Evaluate[string](`location.pathname + location.search`)); strings.Contains(u, "key=") {
		t.Errorf("the dashboard's address keeps the key: %s", u)
	}

	// Three participants join in three browser contexts and each runs a
	// variant of set-leak.
	type person struct {
		name, variant string
		tab           *tab
		lab           string
	}
	people := []*person{{name: "Ann", variant: engine.PatternSessionSet}, {name: "Bob", variant: engine.PatternTxLocal}, {name: "Cy", variant: engine.PatternBatchLocal}}
	for _, p := range people {
		p.tab = newTab(t, browser, p.name)
		p.tab.do(
			chromedp.Navigate(joinURL),
			chromedp.SetValue(chromedp.CSS(`input[name=name]`), p.name),
			chromedp.Click(chromedp.ID("join")),
			chromedp.WaitReady(chromedp.ID("live")),
		)
		p.tab.poll("lab socket", `window.rlslabTest.wsOpen > 0`)
		if path := run(p.tab, chromedp.Evaluate[string](`location.pathname`)); path != "/lessons/set-leak" {
			t.Fatalf("%s landed on %s", p.name, path)
		}
		p.lab = p.tab.labID()
	}
	t.Logf("%v: three participants joined", time.Since(start).Round(time.Millisecond))
	for _, p := range people {
		since := p.tab.pressRun(p.variant, "max")
		p.tab.waitDone(since)
		waitRunEnd(t, ts.Labs, p.lab)
	}

	// The dashboard shows all three, done, with a leak for Ann only.
	fac.poll("three done cards with their last runs", `document.querySelectorAll('#dash-live .card[data-status="done"]').length === 3 &&
		Array.from(document.querySelectorAll('#dash-live .card .last-run')).every(function (e) { return e.textContent.trim() !== "–"; }) &&
		document.querySelector('[data-count="leaked"]').textContent === "1"`)
	t.Logf("%v: the dashboard shows three finished runs", time.Since(start).Round(time.Millisecond))
	type card struct {
		Name, Lab, Status, Leak, LastRun string
	}
	cards := run(fac, chromedp.Evaluate[[]card](`Array.from(document.querySelectorAll("#dash-live .card")).map(function (c) {
		return {name: c.getAttribute("data-name"), lab: c.getAttribute("data-lab"), status: c.getAttribute("data-status"),
			leak: c.getAttribute("data-leak-seen"), lastrun: c.querySelector(".last-run").textContent.replace(/\s+/g, " ").trim()};
	})`))
	if len(cards) != 3 {
		t.Fatalf("cards: %+v", cards)
	}
	for i, p := range people {
		c := cards[i]
		wantLeak := map[bool]string{true: "yes", false: "no"}[p.variant == engine.PatternSessionSet]
		if c.Name != p.name || c.Lab != p.lab || c.Status != engine.StatusDone || c.Leak != wantLeak || !strings.Contains(c.LastRun, p.variant+": done") {
			t.Errorf("card %d: %+v, want %s in lab %s, leak seen %s, last run %s", i, c, p.name, p.lab, wantLeak, p.variant)
		}
	}
	fac.do(chromedp.EmulateViewport(1280, 720))
	fac.screenshot(shots, "screenshot-dashboard.png")

	// The facilitator moves everyone to lesson 2: Bob's lesson page says so.
	fac.do(
		chromedp.SetValue(chromedp.CSS(`.dash-controls select[name=lesson]`), "2"),
		chromedp.Click(chromedp.ID("move")),
	)
	people[1].tab.poll("the move notice", `(function () { var a = document.getElementById("ws-moved");
		return !!a && a.textContent.indexOf("Your facilitator moved to lesson 2") === 0 && a.getAttribute("href") === "/lessons/split-calls"; })()`)

	// The facilitator projects Ann's lab: the presenter view shows what
	// Ann's tab shows, without controls.
	ann := people[0]
	project := run(fac, chromedp.Evaluate[string](`document.querySelector('.card[data-name="Ann"] a.project').href`))
	if project != ts.URL+"/labs/"+ann.lab+"/present" {
		t.Fatalf("Ann's card projects %q", project)
	}
	fac.do(chromedp.Navigate(project), chromedp.WaitReady(chromedp.ID("live")))
	fac.poll("presenter socket", `window.rlslabTest.wsOpen > 0 && window.rlslabTest.frames > 0`)
	st := fetchState(t, ts.URL, ann.lab)
	head := run(fac, chromedp.Evaluate[map[string]string](`(function () { var h = document.getElementById("present-head"); return {
		leaks: h.getAttribute("data-leaks"), variant: h.getAttribute("data-variant"), outcome: h.querySelector(".outcome").textContent.trim(),
		owner: document.getElementById("present").getAttribute("data-owner"), keys: String(document.querySelectorAll("#variant-keys").length)}; })()`))
	if head["leaks"] != fmt.Sprint(st.Leaks()) || head["variant"] != engine.PatternSessionSet || !strings.Contains(head["outcome"], "leak") || head["outcome"] == "no leak" ||
		head["owner"] != "no" || head["keys"] != "0" {
		t.Errorf("presenter head %v, state has %d leaks", head, st.Leaks())
	}
	key := func(rs []domRow) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = fmt.Sprintf("#%d pid=%d leak=%t", r.Seq, r.PID, r.Leak)
		}
		return out
	}
	if a, f := key(ann.tab.rows()), key(fac.rows()); !slices.Equal(a, f) || len(a) == 0 {
		t.Errorf("Ann's tab and the projector disagree:\nAnn:       %v\nprojector: %v", a, f)
	}
	for _, size := range [][2]int64{{1280, 720}, {1920, 1080}} {
		if px := fac.overflow(size[0], size[1]); px > 0 {
			t.Errorf("the presenter view is %d px wider than %dx%d", px, size[0], size[1])
		}
	}
	fac.do(chromedp.EmulateViewport(1280, 720))
	fac.screenshot(shots, "screenshot-presenter-1280x720.png")

	t.Logf("%v: the projector matches Ann's tab", time.Since(start).Round(time.Millisecond))

	// The read-only view the dashboard links to: the lesson's title, the
	// variant, the narration, no controls.
	fac.do(chromedp.Navigate(ts.URL+"/labs/"+ann.lab), chromedp.WaitReady(chromedp.ID("live")))
	watch := run(fac, chromedp.Evaluate[map[string]string](`({lesson: (document.querySelector(".watch-lesson") || {}).textContent || "",
		variant: document.getElementById("present-head").getAttribute("data-variant"),
		narration: String(document.querySelectorAll("#narration-history li").length),
		controls: String(document.querySelectorAll("form.run-form, #run, #reset, #step, #variant-keys").length)})`))
	if watch["lesson"] != "SET and the next request on a pooled connection" || watch["variant"] != engine.PatternSessionSet || watch["narration"] == "0" || watch["controls"] != "0" {
		t.Errorf("the watch view shows %v", watch)
	}
	fac.screenshot(shots, "screenshot-watch.png")
	// Ann presents her own lab with the keyboard: 2 picks tx-local, the
	// arrows full speed, Space runs it (and does not scroll), R resets the
	// lab.
	ann.tab.do(chromedp.Navigate(ts.URL+"/labs/"+ann.lab+"/present"), chromedp.WaitReady(chromedp.ID("variant-keys")))
	ann.tab.poll("presenter socket", `window.rlslabTest.wsOpen > 0`)
	ann.tab.do(chromedp.KeyEvent("2"), chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowRight),
		chromedp.KeyEvent(kb.ArrowRight), chromedp.KeyEvent(kb.ArrowLeft), chromedp.KeyEvent(kb.ArrowRight))
	if sp := run(ann.tab, chromedp.Evaluate[string](`document.getElementById("present-speed").textContent`)); sp != "full speed" {
		t.Errorf("after → → → → ← → the presenter's speed is %q", sp)
	}
	ann.tab.do(chromedp.KeyEvent("?"))
	ann.tab.poll("help", `!document.getElementById("present-help").hidden`)
	ann.tab.do(chromedp.KeyEvent("?"))
	ann.tab.poll("help closed", `document.getElementById("present-help").hidden`)
	// Space must not scroll: its default action is prevented (read after
	// the event has gone through every handler).
	ann.tab.do(chromedp.Evaluate[chromedp.Void](`window.rlslabSpace = null; document.addEventListener("keydown", function (e) {
		if (e.key === " ") setTimeout(function () { window.rlslabSpace = e.defaultPrevented; });
	}, {capture: true, once: true})`), chromedp.KeyEvent(" "))
	ann.tab.poll("tx-local done", `document.getElementById("present-head").getAttribute("data-variant") === "tx-local" &&
		document.getElementById("status").getAttribute("data-status") === "done"`)
	if prevented := run(ann.tab, chromedp.Evaluate[bool](`window.rlslabSpace === true`)); !prevented {
		t.Errorf("Space was not kept from scrolling the presenter view")
	}
	waitRunEnd(t, ts.Labs, ann.lab)
	ann.tab.do(chromedp.KeyEvent("r"))
	ann.tab.poll("reset", `document.getElementById("status").getAttribute("data-status") === "idle"`)

	t.Logf("%v: Ann ran tx-local with the keyboard and reset her lab", time.Since(start).Round(time.Millisecond))
	// Ann's session-set run replays frame by frame after the reset.
	var runs []struct{ ID, Variant string }
	code, body := do(t, newBrowserClient(t), "GET", ts.URL+"/labs/"+ann.lab+"/runs.json", "", "")
	if err := json.Unmarshal([]byte(body), &runs); code != 200 || err != nil || len(runs) != 2 || runs[1].Variant != engine.PatternSessionSet {
		t.Fatalf("runs.json: %d %v %s", code, err, body)
	}
	rec := runs[1].ID
	ann.tab.do(chromedp.Navigate(ts.URL+"/runs/"+rec+"?frame=0"), chromedp.WaitReady(chromedp.ID("player")))
	total := run(ann.tab, chromedp.Evaluate[int](`parseInt(document.getElementById("player").getAttribute("data-frames"), 10)`))
	if total < 2 {
		t.Fatalf("the recording has %d frames", total)
	}
	versions := []int{}
	for i := 1; i < total; i++ {
		ann.tab.do(chromedp.Click(chromedp.ID("replay-fwd")))
		ann.tab.poll("frame", fmt.Sprintf(`(document.querySelector("#replay-target .replay-frame") || {getAttribute: function () {}}).getAttribute("data-frame") === "%d"`, i))
		versions = append(versions, run(ann.tab, chromedp.Evaluate[int](`parseInt(document.getElementById("status").getAttribute("data-version"), 10)`)))
	}
	if !slices.IsSorted(versions) {
		t.Errorf("replayed frames out of order: versions %v", versions)
	}
	if n := run(ann.tab, chromedp.Evaluate[int](`document.querySelectorAll('#live .req-row[data-leak="true"]').length`)); n == 0 {
		t.Errorf("the last frame of the session-set recording shows no leak")
	}
	ann.tab.do(chromedp.Click(chromedp.ID("replay-back")))
	ann.tab.poll("step back", fmt.Sprintf(`document.querySelector("#replay-target .replay-frame").getAttribute("data-frame") === "%d"`, total-2))
	ann.tab.do(chromedp.Click(chromedp.ID("replay-fwd")))
	ann.tab.poll("last frame", fmt.Sprintf(`document.querySelector("#replay-target .replay-frame").getAttribute("data-frame") === "%d"`, total-1))
	// The scrubber jumps to a frame; Play plays from the start to the end.
	ann.tab.do(chromedp.Evaluate[chromedp.Void](`(function () { var s = document.getElementById("replay-scrub"); s.value = "0";
		s.dispatchEvent(new Event("input", {bubbles: true})); })()`))
	ann.tab.poll("scrubbed to frame 0", `document.querySelector("#replay-target .replay-frame").getAttribute("data-frame") === "0"`)
	ann.tab.do(chromedp.Click(chromedp.ID("replay-play")))
	ann.tab.poll("played to the end", fmt.Sprintf(`document.querySelector("#replay-target .replay-frame").getAttribute("data-frame") === "%d" &&
		document.getElementById("replay-play").textContent === "Play"`, total-1))
	ann.tab.do(chromedp.EmulateViewport(1280, 900))
	ann.tab.screenshot(shots, "screenshot-replay.png")
	t.Logf("replayed %d frames of recording %s after the lab's reset", total, rec)
}
