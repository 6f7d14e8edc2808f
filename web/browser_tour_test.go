package web_test

import (
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// tourSizes are the phone, laptop and big screen every page is looked at.
var tourSizes = [][2]int64{{390, 844}, {1280, 720}, {1920, 1080}}

// look shows the page the tab has open at every tour size, light and
// dark, from its top and scrolled to each of the sections (element ids):
// nothing may scroll sideways, and each view is saved as a screenshot
// (RLSLAB_SHOTS) named after the page, the section and the size.
func (b *tab) look(page string, sections ...string) {
	b.t.Helper()
	for _, size := range tourSizes {
		for _, scheme := range []string{"light", "dark"} {
			b.emulate(size[0], size[1], scheme)
			for _, sec := range append([]string{""}, sections...) {
				name := page
				if sec == "" {
					b.do(chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`))
				} else {
					name += "-" + sec
					b.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById(%q).scrollIntoView({block: "start"})`, sec)))
				}
				where := fmt.Sprintf("%s at %dx%d, %s", name, size[0], size[1], scheme)
				b.noSideways(where)
				b.noClippedText(where)
				b.shot(fmt.Sprintf("tour-%s-%dx%d-%s", name, size[0], size[1], scheme))
			}
		}
	}
}

// noClippedText fails the test when a visible element cuts its own text
// off: a box that hides or scrolls what overflows it sideways while its
// text is wider than it, except the ones meant to scroll (code, tables,
// the timeline) and form fields.
func (b *tab) noClippedText(where string) {
	b.t.Helper()
	cut := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("body *")).filter(function (e) {
		if (/^(PRE|CODE|TEXTAREA|INPUT|SELECT|SVG|svg|TABLE)$/.test(e.tagName) || e.closest("pre, .table-scroll, .tl-scroll, svg, .timeline, [tabindex]")) return false;
		var cs = getComputedStyle(e);
		if (cs.display === "none" || cs.visibility === "hidden" || e.getClientRects().length === 0) return false;
		if (!/hidden|clip/.test(cs.overflowX) || cs.textOverflow === "ellipsis" || e.clientWidth <= 1) return false; // .sr-only is 1 px on purpose
		return e.scrollWidth > e.clientWidth + 1 && e.textContent.trim() !== "";
	}).slice(0, 6).map(function (e) { return e.tagName + "." + e.className + " (" + e.scrollWidth + " > " + e.clientWidth + "): " + e.textContent.trim().slice(0, 40); })`))
	if len(cut) > 0 {
		b.t.Errorf("%s: text cut off: %v", where, cut)
	}
}

// pendingSaid checks the sentence that stands where a lab will be: it
// starts as a sentence (it started "your lab is being prepared" and "all 3
// labs are in use"), and its button stands apart from it (it touched it).
func (b *tab) pendingSaid(where string) {
	b.t.Helper()
	got := run(b, chromedp.Evaluate[[]string](`(function () { var p = document.querySelector(".lab-pending p"), k = document.querySelector(".lab-pending button");
		return [p.textContent.trim(), String(Math.round(k.getBoundingClientRect().top - p.getBoundingClientRect().bottom))]; })()`))
	if first := []rune(got[0]); len(first) == 0 || !unicode.IsUpper(first[0]) {
		b.t.Errorf("%s: the page says %q, not a sentence", where, got[0])
	}
	if gap, _ := strconv.Atoi(got[1]); gap < 8 {
		b.t.Errorf("%s: the button is %s px under %q", where, got[1], got[0])
	}
}

// axeTour runs axe-core on the page the tab shows at 1280×720 and 390 px,
// light and dark (every rule in light, the colour rules in dark), when
// src holds axe-core ("": not installed here, and not CI).
func (b *tab) axeTour(src, where string) {
	b.t.Helper()
	if src == "" {
		return
	}
	for _, size := range [][2]int64{{1280, 720}, {390, 844}} {
		for _, scheme := range []string{"light", "dark"} {
			b.emulate(size[0], size[1], scheme)
			for _, v := range b.axeRun(src, scheme == "dark") {
				b.t.Errorf("%s at %d px, %s: %s %s: %s\n\t%s", where, size[0], scheme, v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "\n\t"))
			}
		}
	}
}

// TestBrowserTour walks every page a learner, a facilitator and a
// presenter meet, with what they hold after a session-set run: home, a
// lesson, the lab with its free-play and Connect panels (the proxy off,
// then on), the join page, the dashboard, the room view, the presenter
// view, a replay at its first and last frame, a comparison, a lab being
// prepared (beside a lesson and as a page of its own) and a lesson
// waiting while every lab is in use. Each at 390 px, 1280×720 and
// 1920×1080, light and dark, from the top and at the parts that matter:
// none scrolls sideways or cuts its text off. Run's answer does not say
// "Running" beside a finished run (it did, for 4 s), and the sentences
// standing where a lab will be start as sentences, apart from their
// button. axe-core finds no serious or critical violation on the pages no
// other test runs it on: the Connect panel with its snippets, a lab being
// prepared, every lab in use. With RLSLAB_SHOTS it saves every view for a
// person to look at.
func TestBrowserTour(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(axePath)
	if err != nil && os.Getenv("CI") != "" {
		t.Fatalf("axe-core is missing (scripts/setup-debian.sh installs it): %v", err)
	}
	axe := string(src)
	ts := mustStartServer(t, sessions.Config{MaxLabs: 3})
	browser := newBrowser(t)
	w := mustCreateWorkshop(t, ts, "Tenants and pools, room 3", "set-leak", "split-calls")

	// A participant joins, answers set-leak's questions and runs two of its
	// variants.
	ann := newTab(t, browser, "Ann")
	ann.emulate(1280, 720, "light")
	ann.do(chromedp.Navigate(w.JoinURL), chromedp.WaitReady(chromedp.CSS(`input[name=name]`)))
	ann.look("join")
	ann.do(
		chromedp.SetValue(chromedp.CSS(`input[name=name]`), "Ann"),
		chromedp.Click(chromedp.ID("join")),
		chromedp.WaitReady(chromedp.ID("live")),
	)
	ann.poll("lab socket", `window.rlslabTest.wsOpen > 0`)
	lab := ann.labID()
	for _, v := range []string{engine.PatternTxLocal, engine.PatternSessionSet} {
		since := ann.pressRun(v, "max")
		ann.waitDone(since)
		waitRunEnd(t, ts.Labs, lab)
	}
	if msg := run(ann, chromedp.Evaluate[string](`document.getElementById("control-msg").textContent`)); strings.HasPrefix(msg, "Running") {
		t.Errorf("beside DONE, Run's answer says %q", msg)
	}
	ann.look("lesson", "lab-side", "live", "timeline")
	runs := labRuns(t, ts, lab)
	if len(runs) != 2 {
		t.Fatalf("recordings: %+v", runs)
	}
	ann.do(chromedp.Navigate(ts.URL+"/"), chromedp.WaitReady(chromedp.ID("new-workshop")))
	ann.look("home")
	ann.open(ts.URL + "/labs/" + lab)
	ann.look("lab", "free-play", "connect-app", "live")
	ann.do(chromedp.Navigate(ts.URL+"/labs/"+lab+"/present"), chromedp.WaitReady(chromedp.ID("live")))
	ann.poll("presenter frames", `window.rlslabTest.wsOpen > 0 && window.rlslabTest.frames > 0`)
	ann.look("presenter")
	ann.do(chromedp.Navigate(ts.URL+"/runs/"+runs[0].ID), chromedp.WaitReady(chromedp.ID("player")))
	ann.look("replay")
	ann.do(chromedp.Evaluate[chromedp.Void](`(function () { var s = document.getElementById("replay-scrub"); s.value = s.max;
		s.dispatchEvent(new Event("input", {bubbles: true})); })()`))
	ann.poll("the last frame", `document.querySelector("#replay-target .replay-frame").getAttribute("data-frame") === String(document.getElementById("player").getAttribute("data-frames") - 1)`)
	ann.look("replay-end", "live")
	ann.do(chromedp.Navigate(ts.URL+"/runs/"+runs[0].ID+"/vs/"+runs[1].ID), chromedp.WaitReady(chromedp.CSS(`table.compare`)))
	ann.look("compare")

	// The facilitator's dashboard and room view show Ann.
	fac := newTab(t, browser, "facilitator")
	fac.emulate(1280, 720, "light")
	fac.do(chromedp.Navigate(w.FacilitatorURL), chromedp.WaitReady(chromedp.ID("dash-live")))
	fac.poll("Ann's card, done", `!!document.querySelector('#dash-live [data-name="Ann"][data-status="done"]')`)
	fac.look("dashboard")
	fac.do(chromedp.Navigate(ts.URL+"/workshops/"+w.ID+"/room"), chromedp.WaitReady(chromedp.ID("room-live")))
	fac.look("room")

	// A second front of the same labs shows the proxy (the Connect panel
	// with its URL and snippets) and tells a browser asking for a new lab
	// at once that it is being prepared (no wait for its database).
	front := httptest.NewServer(web.NewServer(ts.Labs, defaultLessons(t), static.FS(), nil).
		WithProxy(web.Proxy{Addr: "127.0.0.1:6432", CertPEM: []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")}).
		WithCreateWait(time.Nanosecond))
	t.Cleanup(front.Close)
	ann.open(front.URL + "/labs/" + lab) // the learner cookie is the host's, whatever the port
	ann.look("lab-proxy", "connect-app")
	ann.axeTour(axe, "the lab page with the Connect panel")

	// Preparing: the lesson's lab panel, then the page of a lab asked for
	// without a lesson. Each asks again by itself after a second; the
	// page keeps what it shows while it is looked at.
	hold := chromedp.Evaluate[chromedp.Void](`document.addEventListener("htmx:beforeRequest", function (e) { e.preventDefault(); })`)
	fac.do(chromedp.Navigate(front.URL + "/lessons/set-leak"))
	fac.poll("the lesson's lab being prepared", `(function () { var p = document.querySelector(".lab-pending p[role=status]"); return !!p && p.textContent.indexOf("prepared") >= 0; })()`)
	fac.do(hold)
	fac.pendingSaid("the lesson's lab being prepared")
	fac.look("lesson-preparing", "lab-side")
	fac.axeTour(axe, "a lesson whose lab is being prepared")
	prep := newTab(t, browser, "another learner")
	prep.emulate(1280, 720, "light")
	prep.do(chromedp.Navigate(front.URL+"/"), chromedp.WaitReady(chromedp.CSS(`body`)),
		chromedp.Evaluate[chromedp.Void](`(function () { var f = document.createElement("form"); f.method = "post"; f.action = "/labs"; document.body.appendChild(f); f.submit(); })()`),
		chromedp.WaitReady(chromedp.CSS(`section.error-page form.lab-pending p[role=status]`)))
	prep.do(hold)
	prep.poll("the preparing page", `document.title.indexOf("Preparing your lab") >= 0`)
	prep.pendingSaid("the page of a lab being prepared")
	prep.look("lab-preparing")
	prep.axeTour(axe, "the page of a lab being prepared")

	// Every lab in use: a lesson opened in a third browser says so.
	late := newTab(t, browser, "late")
	late.emulate(1280, 720, "light")
	late.do(chromedp.Navigate(ts.URL + "/lessons/set-leak"))
	late.poll("the lesson waiting for a lab", `(function () { var p = document.querySelector(".lab-pending p"); return !!p && p.textContent.indexOf("in use") >= 0; })()`)
	late.pendingSaid("a lesson waiting for a lab")
	late.look("lesson-labs-in-use", "lab-side")
	late.axeTour(axe, "a lesson waiting while every lab is in use")
}
