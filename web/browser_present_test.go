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

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// axePath is axe-core as scripts/setup-debian.sh installs it (npm ci in
// web/testdata/axe).
var axePath = filepath.Join("testdata", "axe", "node_modules", "axe-core", "axe.min.js")

// readAxe reads axe-core's script. Without it the test is skipped, or
// fails when CI is set.
func readAxe(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile(axePath)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("axe-core is missing (scripts/setup-debian.sh installs it): %v", err)
		}
		t.Skipf("axe-core is missing: run scripts/setup-debian.sh (npm ci in web/testdata/axe): %v", err)
	}
	return string(src)
}

// emulate sets the tab's viewport and its prefers-color-scheme.
func (b *tab) emulate(w, h int64, scheme string) {
	b.t.Helper()
	b.do(chromedp.EmulateViewport(w, h), colourScheme(scheme))
}

// box is an element's place on the screen, as getBoundingClientRect has it,
// and the viewport's size.
type box struct {
	What       string  `json:"what"`
	Found      bool    `json:"found"`
	T, B, L, R float64 // the element's edges
	// CT, CB, CL and CR bound the part of the viewport the element's
	// scrolling ancestors let show.
	CT, CB, CL, CR float64
	VW, VH         float64 // the viewport
}

// onScreenJS is a function of one element that tells where it is and
// whether every ancestor that scrolls shows it.
const onScreenJS = `function (el, what) {
	if (!el) return {found: false, what: what};
	var r = el.getBoundingClientRect();
	var ct = 0, cb = window.innerHeight, cl = 0, cr = window.innerWidth;
	for (var p = el.parentElement; p; p = p.parentElement) {
		var cs = getComputedStyle(p);
		if (/auto|scroll|hidden/.test(cs.overflowX + cs.overflowY) && p !== document.body && p !== document.documentElement) {
			var q = p.getBoundingClientRect();
			ct = Math.max(ct, q.top); cb = Math.min(cb, q.bottom); cl = Math.max(cl, q.left); cr = Math.min(cr, q.right);
		}
	}
	return {found: true, what: what, T: r.top, B: r.bottom, L: r.left, R: r.right, CT: ct, CB: cb, CL: cl, CR: cr, VW: window.innerWidth, VH: window.innerHeight};
}`

// visible reports whether the element is wholly inside the viewport and
// inside every scrolling box around it (one pixel of slack for rounding).
func (x box) visible() bool {
	return x.Found && x.T >= x.CT-1 && x.B <= x.CB+1 && x.L >= x.CL-1 && x.R <= x.CR+1 && x.T >= -1 && x.B <= x.VH+1 && x.L >= -1 && x.R <= x.VW+1
}

// onScreen reads where the elements the expressions find are.
func (b *tab) onScreen(exprs map[string]string) []box {
	b.t.Helper()
	var parts []string
	for what, expr := range exprs {
		parts = append(parts, fmt.Sprintf("(%s)(%s, %q)", onScreenJS, expr, what))
	}
	return run(b, chromedp.Evaluate[[]box]("["+strings.Join(parts, ",")+"]"))
}

// TestBrowserPresenter checks the presenter view at 1280×720: after a
// session-set run of set-leak, the outcome, the LEAK row and the lane of
// the backend that leaked are on screen at once; in a single-step run,
// every step keeps the outcome, the LEAK row once there is one, and the
// lane and box of the backend the narration names on screen, on the
// presenter view and on the lesson page; and axe-core finds no serious or
// critical violation on any page at 1280×720 and 390 px (every rule in
// light, the colour rules again in dark).
func TestBrowserPresenter(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)
	b := newTab(t, browser, "presenter")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()
	since := b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)

	// Each subtest drives the same tab, reporting to itself.
	in := func(t *testing.T) *tab { c := *b; c.t = t; return &c }
	t.Run("Fits1280x720", func(t *testing.T) { testPresenterFits(t, in(t), ts, id) })
	t.Run("StepMode", func(t *testing.T) { testPresenterSteps(t, in(t), ts, id) })
	t.Run("Axe", func(t *testing.T) { testAxe(t, in(t), ts, id) })
}

// leakingPID is the backend of set-leak's leaking request, from state.json.
func leakingPID(t *testing.T, base, id string) (seq int, pid uint32) {
	t.Helper()
	for _, r := range fetchState(t, base, id).Requests {
		if r.Leak {
			return r.Seq, r.PID
		}
	}
	t.Fatal("state.json: no request leaked")
	return 0, 0
}

func testPresenterFits(t *testing.T, b *tab, ts *testServer, id string) {
	seq, pid := leakingPID(t, ts.URL, id)
	for _, scheme := range []string{"light", "dark"} {
		b.emulate(1280, 720, scheme)
		b.do(chromedp.Navigate(ts.URL+"/labs/"+id+"/present"), chromedp.WaitReady(chromedp.ID("live")))
		b.poll("the presenter in view", `document.body.getAttribute("data-inview") === document.getElementById("status").getAttribute("data-version")`)
		got := b.onScreen(map[string]string{
			"the outcome bar":  `document.getElementById("outcome")`,
			"the outcome chip": `document.querySelector("#present-head .ph-chip")`,
			"the LEAK row":     fmt.Sprintf(`document.querySelector('#requests .req-row[data-seq="%d"][data-leak="true"]')`, seq),
			"the LEAK block on the leaking backend's lane": fmt.Sprintf(`document.querySelector('#tl-lane-%d .tl-block.tl-leak')`, pid),
			"the leaking backend's lane":                   laneLabelJS(fmt.Sprint(pid)),
			"the narration's newest line":                  `document.querySelector("#narration-history li:last-child")`,
			"the leaking backend's box":                    fmt.Sprintf(`document.querySelector('#conns .conn[data-pid="%d"]')`, pid),
		})
		for _, x := range got {
			if !x.visible() {
				t.Errorf("%s at 1280×720: %s is not wholly on screen: %+v", scheme, x.What, x)
			}
		}
		if chip := run(b, chromedp.Evaluate[string](`document.querySelector("#present-head .ph-chip").getAttribute("data-kind")`)); chip != "leak" {
			t.Errorf("the chip's kind is %q after a leak", chip)
		}
		if px := b.overflow(1280, 720); px > 0 {
			t.Errorf("the presenter view is %d px wider than 1280", px)
		}
	}
	b.emulate(browserWidth, browserHeight, "")
}

// laneLabelJS finds the label of backend pid's timeline lane: its head, in
// line with the lane (the lane itself is as wide as the whole timeline).
func laneLabelJS(pid string) string {
	return fmt.Sprintf(`Array.from(document.querySelectorAll("#timeline .tl-label")).find(function (l) { return l.querySelector("b").textContent === %q; })`, pid)
}

// stepView is what a single-step run shows after a step, read in one
// evaluation: the frame's version, the version inview.js last brought into
// view (data-inview), whether the run still goes on, and where the things
// that must be on screen are: the narrated backend's lane and box, and on
// the presenter view the outcome and the LEAK row once it is there.
type stepView struct {
	Version string `json:"version"`
	InView  string `json:"inview"`
	Status  string `json:"status"`
	Boxes   []box  `json:"boxes"`
}

// stepViewJS reads a stepView; %t says whether the page is the presenter.
const stepViewJS = `(function (presenter) {
	var onScreen = ` + onScreenJS + `;
	var status = document.getElementById("status");
	var n = document.querySelector("#status .narration");
	var m = n && n.textContent.match(/backend (\d+)/);
	var pid = m ? m[1] : "";
	var out = [];
	if (presenter) {
		out.push(onScreen(document.getElementById("outcome"), "the outcome bar"));
		var leak = document.querySelector('#requests .req-row[data-leak="true"]');
		if (leak) out.push(onScreen(leak, "the LEAK row"));
	}
	if (pid) {
		var label = Array.from(document.querySelectorAll("#timeline .tl-label")).find(function (l) { return l.querySelector("b").textContent === pid; });
		out.push(onScreen(label, "the lane of backend " + pid));
		out.push(onScreen(document.querySelector('#conns .conn[data-pid="' + pid + '"]'), "the box of backend " + pid));
	}
	return {version: status.getAttribute("data-version"), inview: document.body.getAttribute("data-inview"),
		status: status.getAttribute("data-status"), boxes: out.filter(function (x) { return x.found; })};
})(%t)`

// readStep waits until inview.js has brought the newest frame into view
// and reads the page as it then is. A frame that lands between the wait
// and the read (a step can bring two) has not been brought into view yet:
// then it waits and reads again, so that a check never judges a frame
// before inview.js had its turn at it.
func readStep(b *tab, presenter bool) stepView {
	b.t.Helper()
	for {
		b.poll("the page in view", `document.body.getAttribute("data-inview") === document.getElementById("status").getAttribute("data-version")`)
		v := run(b, chromedp.Evaluate[stepView](fmt.Sprintf(stepViewJS, presenter)))
		if v.InView == v.Version {
			return v
		}
		b.t.Logf("frame %s came while frame %s was being read; reading again once it is in view", v.Version, v.InView)
	}
}

// stepThrough runs set-leak's session-set in single-step from the page
// open in b, with start, and checks the screen after every step.
func stepThrough(t *testing.T, b *tab, ts *testServer, id, page string, start func()) {
	waitRunEnd(t, ts.Labs, id)
	start()
	b.poll("the run started", `document.getElementById("status").getAttribute("data-status") === "running"`)
	steps, narrated := 0, 0
	for {
		v := readStep(b, page == "presenter")
		for _, x := range v.Boxes {
			if strings.HasPrefix(x.What, "the lane") {
				narrated++
			}
			if !x.visible() {
				t.Errorf("%s, step %d: %s is not on screen at 1280×720: %+v", page, steps, x.What, x)
			}
		}
		if v.Status != engine.StatusRunning {
			break
		}
		steps++
		if steps > 60 {
			t.Fatalf("%s: still running after %d steps", page, steps)
		}
		code := run(b, chromedp.Evaluate[int](fmt.Sprintf(`fetch("/labs/%s/step", {method: "POST", headers: {"HX-Request": "true"}}).then(function (r) { return r.status; })`, id), chromedp.EvalAwaitPromise))
		if code != 200 {
			// The run ended between the read and the step.
			continue
		}
		b.poll("the next frame", fmt.Sprintf(`document.getElementById("status").getAttribute("data-version") !== %q`, v.Version))
	}
	if steps < 5 || narrated < 3 {
		t.Errorf("%s: %d steps, %d of them naming a backend drawn on the timeline; want more of both", page, steps, narrated)
	}
	t.Logf("%s: %d steps, %d with a narrated backend, all on screen", page, steps, narrated)
}

func testPresenterSteps(t *testing.T, b *tab, ts *testServer, id string) {
	b.emulate(1280, 720, "light")
	defer b.emulate(browserWidth, browserHeight, "")
	b.do(chromedp.Navigate(ts.URL+"/labs/"+id+"/present"), chromedp.WaitReady(chromedp.ID("live")))
	b.poll("presenter socket", `window.rlslabTest.wsOpen > 0`)
	stepThrough(t, b, ts, id, "presenter", func() {
		code := run(b, chromedp.Evaluate[int](fmt.Sprintf(`fetch("/labs/%s/runs", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"},
			body: "scenario=set-leak&variant=session-set&speed=step"}).then(function (r) { return r.status; })`, id), chromedp.EvalAwaitPromise))
		if code >= 300 {
			t.Fatalf("run: %d", code)
		}
	})
	b.open(ts.URL + "/lessons/set-leak")
	stepThrough(t, b, ts, id, "lesson page", func() { b.pressRun(engine.PatternSessionSet, "step") })
}

// axeViolation is one rule axe-core found broken, with where.
type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// colourRules are the axe-core rules whose verdict depends on colours: the
// only ones a dark scheme can change, since the dark theme changes colours
// only (rlslab.css sets the same variables to other values). The others
// run once per page and size, in light (axeRun with coloursOnly false).
var colourRules = []string{"color-contrast", "link-in-text-block"}

// axeRun injects axe-core into the page (once) and returns its serious and
// critical violations: of every rule, or with coloursOnly of colourRules
// alone (what a second colour scheme needs checked again).
func (b *tab) axeRun(src string, coloursOnly bool) []axeViolation {
	b.t.Helper()
	if !run(b, chromedp.Evaluate[bool](`typeof window.axe === "object"`)) {
		b.do(chromedp.Evaluate[chromedp.Void](src))
		// A colour rule of a later axe-core that colourRules lacks would
		// go unchecked in dark: say so instead.
		all := run(b, chromedp.Evaluate[[]string](`axe.getRules(["cat.color"]).map(function (r) { return r.ruleId; })`))
		for _, r := range all {
			if !slices.Contains(colourRules, r) && r != "color-contrast-enhanced" { // AAA, off by default
				b.t.Errorf("axe-core has a colour rule %q that colourRules lacks: add it there", r)
			}
		}
	}
	opts := `{resultTypes: ["violations"]}`
	if coloursOnly {
		rules, _ := json.Marshal(colourRules)
		opts = `{resultTypes: ["violations"], runOnly: {type: "rule", values: ` + string(rules) + `}}`
	}
	js := `(window.rlslabA11yScan && window.rlslabA11yScan(), axe.run(document, ` + opts + `)).then(function (res) {
		return res.violations.filter(function (v) { return v.impact === "serious" || v.impact === "critical"; }).map(function (v) {
			return {id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(function (n) { return n.target.join(" ") + ": " + (n.failureSummary || "").replace(/\s+/g, " "); })};
		});
	})`
	ctx, cancel := context.WithTimeout(b.ctx, 2*actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](js, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("%s: axe: %v", b.name, err)
	}
	return v
}

func testAxe(t *testing.T, b *tab, ts *testServer, id string) {
	src := readAxe(t)
	// A second run, for a comparison of two recordings.
	waitRunEnd(t, ts.Labs, id)
	b.open(ts.URL + "/lessons/set-leak")
	since := b.pressRun(engine.PatternTxLocal, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	var runs []struct{ ID, Variant string }
	if body := run(b, chromedp.Evaluate[string](fmt.Sprintf(`fetch("/labs/%s/runs.json").then(function (r) { return r.text(); })`, id), chromedp.EvalAwaitPromise)); json.Unmarshal([]byte(body), &runs) != nil || len(runs) < 2 {
		t.Fatalf("runs.json: %s", body)
	}
	// A workshop, for the dashboard.
	var ws struct {
		FacilitatorURL string `json:"facilitator_url"`
	}
	code, body := do(t, newBrowserClient(t), "POST", ts.URL+"/workshops", "application/x-www-form-urlencoded", "title=Room+1&lessons=set-leak", "Accept", "application/json")
	if err := json.Unmarshal([]byte(body), &ws); code != 201 || err != nil || ws.FacilitatorURL == "" {
		t.Fatalf("POST /workshops: %d %s", code, body)
	}
	pages := []struct{ name, path, ready string }{
		{"home", "/", ".lesson-list"},
		{"lesson", "/lessons/set-leak", "#live"},
		{"lab", "/labs/" + id, "#live"},
		{"dashboard", strings.TrimPrefix(ws.FacilitatorURL, ts.URL), "#dash-live"},
		{"presenter", "/labs/" + id + "/present", "#live"},
		{"replay", "/runs/" + runs[1].ID, "#player"},
		{"compare", "/runs/" + runs[1].ID + "/vs/" + runs[0].ID, "table.compare"},
	}
	for _, p := range pages {
		b.emulate(1280, 720, "light")
		b.do(chromedp.Navigate(ts.URL+p.path), chromedp.WaitReady(chromedp.CSS(p.ready)))
		for _, size := range [][2]int64{{1280, 720}, {390, 844}} {
			for _, scheme := range []string{"light", "dark"} {
				b.emulate(size[0], size[1], scheme)
				for _, v := range b.axeRun(src, scheme == "dark") {
					t.Errorf("%s (%s) at %d px, %s: %s %s: %s\n\t%s", p.name, p.path, size[0], scheme, v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "\n\t"))
				}
				if size[0] == 1280 {
					checkFocusRings(t, b, p.name+" "+scheme)
				}
			}
		}
	}
	b.emulate(browserWidth, browserHeight, "")
}

// focusRing is how the focused element's outline is drawn.
type focusRing struct {
	What   string  `json:"what"`
	Style  string  `json:"style"`
	Width  float64 `json:"width"`
	Offset float64 `json:"offset"`
	Ratio  float64 `json:"ratio"` // the outline's contrast with what is behind it
	// Again says the element had focus before in this pass: Tab went
	// round the whole page.
	Again bool `json:"again"`
}

// focusRingJS reads the focused element's outline and its contrast with
// the background it is drawn on: the element's own inside its edge (a
// negative offset), else the nearest ancestor's.
const focusRingJS = `(function () {
	var e = document.activeElement;
	if (!e || e === document.body) return null;
	var again = !!window.rlslabRingSeen && window.rlslabRingSeen.has(e);
	if (window.rlslabRingSeen) window.rlslabRingSeen.add(e);
	var cs = getComputedStyle(e);
	function rgb(s) { var m = s.match(/[\d.]+/g); return m ? m.map(Number) : null; }
	function opaque(c) { return c && (c.length < 4 || c[3] > 0.5); }
	function lum(c) {
		var a = c.slice(0, 3).map(function (v) { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
		return 0.2126 * a[0] + 0.7152 * a[1] + 0.0722 * a[2];
	}
	var offset = parseFloat(cs.outlineOffset), bg = null;
	for (var p = offset < 0 ? e : e.parentElement; p && !bg; p = p.parentElement) {
		var c = rgb(getComputedStyle(p).backgroundColor);
		if (opaque(c)) bg = c;
	}
	bg = bg || [255, 255, 255];
	var l1 = lum(rgb(cs.outlineColor)), l2 = lum(bg);
	return {what: e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && e.className.baseVal === undefined ? "." + String(e.className).split(" ").join(".") : ""),
		style: cs.outlineStyle, width: parseFloat(cs.outlineWidth), offset: offset, ratio: (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05), again: again};
})()`

// checkFocusRings tabs through the first stops of the page from the top
// and checks that each focused element shows a ring: at least 2 px, with
// 3:1 contrast against what is behind it (WCAG 2.1 1.4.11 and 2.4.7). It
// stops once Tab comes back to an element it focused before: the rest
// would go round the same stops again.
func checkFocusRings(t *testing.T, b *tab, page string) {
	t.Helper()
	b.do(chromedp.Evaluate[chromedp.Void](`document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); window.rlslabRingSeen = new WeakSet()`))
	seen := map[string]bool{}
	for i := 0; i < 40; i++ {
		b.do(chromedp.KeyEvent(kb.Tab))
		r := run(b, chromedp.Evaluate[*focusRing](focusRingJS))
		if r != nil && r.Again {
			break
		}
		if r == nil || seen[r.What] {
			continue
		}
		seen[r.What] = true
		if r.Style == "none" || r.Width < 2 || r.Ratio < 3 {
			t.Errorf("%s: the focus ring of %s is %s %.0f px at %.1f:1 contrast", page, r.What, r.Style, r.Width, r.Ratio)
		}
	}
	if len(seen) == 0 {
		t.Errorf("%s: Tab reached nothing", page)
	}
}
