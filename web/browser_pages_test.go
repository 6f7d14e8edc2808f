package web_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// TestBrowserEveryOtherPage opens the pages the other browser tests do not
// check (the workshop form, the join page, the room view, a 404, a
// comparison still waiting for a run, an embedded replay, an exported
// recording opened from its file) and those they check at one size only
// (a replay, a comparison, the presenter view), at 390 px, 1280×720 and
// 1920×1080, light and dark: nothing scrolls sideways, and axe-core finds
// no serious or critical violation on the pages no other test runs it on.
// A learner who chose the dark theme on the home page gets it on every
// page, the workshop, replay and presenter pages included (they did not
// load theme.js and showed light).
func TestBrowserEveryOtherPage(t *testing.T) {
	t.Parallel()
	src := readAxe(t)
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	lab := openLesson(t, ts, c, "set-leak")
	runToEnd(t, ts, c, lab, "set-leak", engine.PatternSessionSet)
	runToEnd(t, ts, c, lab, "set-leak", engine.PatternTxLocal)
	runs := labRuns(t, ts, lab)
	if len(runs) != 2 {
		t.Fatalf("recordings: %+v", runs)
	}
	file := filepath.Join(t.TempDir(), "export.html")
	if err := os.WriteFile(file, getExport(t, ts.URL, runs[1].ID), 0o644); err != nil {
		t.Fatal(err)
	}
	w := mustCreateWorkshop(t, ts, "Tenants and pools, room 2", "set-leak")

	b := newTab(t, newBrowser(t), "visitor")
	// The facilitator's link keeps the key in a cookie: the room view opens.
	b.do(chromedp.Navigate(w.FacilitatorURL), chromedp.WaitReady(chromedp.ID("dash-live")))
	pages := []struct {
		name, url, ready string
		axe              bool // no other test runs axe on it
		theme            bool // it offers the theme switch (the export and the error page follow the system's)
	}{
		{"workshop form", ts.URL + "/workshops/new", `form[action="/workshops"]`, true, true},
		{"join page", w.JoinURL, `form input[name=name]`, true, true},
		{"join link without its code", ts.URL + "/workshops/" + w.ID + "/join", `form.join-code-form input[name=code]`, true, true},
		{"room view", ts.URL + "/workshops/" + w.ID + "/room", `#room-live`, true, true},
		{"404", ts.URL + "/no/such/page", `h1`, true, true},
		{"comparison waiting for a run", ts.URL + "/lessons/set-leak/compare?a=session-set&b=batch-local", `#compare-waiting`, true, true},
		{"embedded replay", ts.URL + "/runs/" + runs[1].ID + "?embed=1", `#player`, true, false},
		{"exported recording", "file://" + file, `#player`, true, false},
		{"replay", ts.URL + "/runs/" + runs[1].ID, `#player`, false, true},
		{"comparison", ts.URL + "/runs/" + runs[1].ID + "/vs/" + runs[0].ID, `table.compare`, false, true},
		{"presenter", ts.URL + "/labs/" + lab + "/present", `#live`, false, false},
	}
	for _, p := range pages {
		b.emulate(1280, 720, "light")
		b.do(chromedp.Navigate(p.url), chromedp.WaitReady(chromedp.CSS(p.ready)))
		for _, size := range [][2]int64{{390, 844}, {1280, 720}, {1920, 1080}} {
			for _, scheme := range []string{"light", "dark"} {
				b.emulate(size[0], size[1], scheme)
				b.shot(fmt.Sprintf("page-%s-%dx%d-%s", strings.ReplaceAll(p.name, " ", "-"), size[0], size[1], scheme))
				if px := run(b, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`)); px > 0 {
					wide := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("body *")).filter(function (e) {
						return e.getBoundingClientRect().right > window.innerWidth + 1; }).slice(0, 6).map(function (e) {
						return e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right); })`))
					t.Errorf("%s at %dx%d, %s: %d px wider than the window: %v", p.name, size[0], size[1], scheme, px, wide)
				}
				if p.axe && size[0] != 1920 {
					for _, v := range b.axeRun(src, scheme == "dark") {
						t.Errorf("%s (%s) at %d px, %s: %s %s: %s\n\t%s", p.name, p.url, size[0], scheme, v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "\n\t"))
					}
				}
			}
		}
	}

	// The room view on a phone: an answer the run showed keeps its words
	// whole beside "what the run showed" (it was squeezed to a few letters
	// a line). The mark is put on the first answer here; a run of a
	// participant's puts it there the same way.
	b.emulate(390, 844, "light")
	b.do(chromedp.Navigate(ts.URL+"/workshops/"+w.ID+"/room"), chromedp.WaitReady(chromedp.CSS(".room-choices li .text")))
	squeezed := run(b, chromedp.Evaluate[[]string](`(function () {
		var li = document.querySelector(".room-choices li");
		li.classList.add("shown");
		var mark = document.createElement("span");
		mark.className = "what-ran";
		mark.textContent = "what the run showed";
		li.appendChild(mark);
		var out = [], ctx = document.createElement("canvas").getContext("2d");
		document.querySelectorAll(".room-choices .text").forEach(function (e) {
			var cs = getComputedStyle(e);
			ctx.font = cs.fontWeight + " " + cs.fontSize + " " + cs.fontFamily;
			var widest = Math.max.apply(null, e.textContent.trim().split(/\s+/).map(function (w) { return ctx.measureText(w).width; }));
			var got = e.getBoundingClientRect().width;
			if (got + 1 < widest) out.push(e.textContent.trim() + ": " + Math.round(got) + " px for a word of " + Math.round(widest));
		});
		return out;
	})()`))
	if len(squeezed) > 0 {
		t.Errorf("room view at 390 px breaks answers inside words: %v", squeezed)
	}

	// The workshop form's fields are set in one size of type (the number
	// of participants was in the browser's smaller default).
	b.emulate(1280, 720, "light")
	b.do(chromedp.Navigate(ts.URL+"/workshops/new"), chromedp.WaitReady(chromedp.CSS(`input[name=expected]`)))
	if fs := run(b, chromedp.Evaluate[[]string](`[getComputedStyle(document.querySelector("input[name=title]")).fontSize, getComputedStyle(document.querySelector("input[name=expected]")).fontSize]`)); fs[0] != fs[1] {
		t.Errorf("workshop form: the title is in %s type, the number of participants in %s", fs[0], fs[1])
	}

	// The dark theme, chosen on the home page, on every page of the site.
	b.emulate(1280, 720, "light")
	b.do(chromedp.Navigate(ts.URL+"/"), chromedp.WaitReady(chromedp.ID("theme-toggle")), chromedp.Click(chromedp.ID("theme-toggle")))
	for _, p := range pages {
		if strings.HasPrefix(p.url, "file:") {
			continue
		}
		b.do(chromedp.Navigate(p.url), chromedp.WaitReady(chromedp.CSS(p.ready)))
		got := run(b, chromedp.Evaluate[[]string](`[document.documentElement.getAttribute("data-theme") || "", getComputedStyle(document.body).backgroundColor, String(!!document.getElementById("theme-toggle"))]`))
		if got[0] != "dark" || got[1] != "rgb(21, 23, 26)" {
			t.Errorf("%s after choosing dark: theme %q, background %s", p.name, got[0], got[1])
		}
		if p.theme && got[2] != "true" {
			t.Errorf("%s has no theme switch", p.name)
		}
	}
}
