package web_test

import (
	"fmt"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/sessions"
)

// TestBrowserPresenterFreePlayChip opens a lab's presenter view and sends
// free-play SQL from it: one query without a tenant (it fails closed),
// then one scoped to Acme. After each, the frames the page gets keep the
// head's chip and the outcome bar saying the same thing while free play
// goes on: "running" and "No leak so far" (the chip said "failed closed"
// beside the bar's "No leak so far"). At 390, 1280×720 and 1920×1080,
// light and dark, nothing scrolls sideways, and the timeline draws a box
// round every request, the one of no tenant too.
func TestBrowserPresenterFreePlayChip(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	b := newTab(t, newBrowser(t), "presenter")
	b.open(ts.URL + "/lessons/set-leak")
	id := b.labID()
	b.open(ts.URL + "/labs/" + id + "/present")
	for i, form := range []string{"sql=SELECT+*+FROM+invoices", "sql=SELECT+*+FROM+invoices&tenant=1&pattern=session-set"} {
		status := run(b, chromedp.Evaluate[int](fmt.Sprintf(`fetch("/labs/%s/sql", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"}, body: %q}).then(function (r) { return r.status; })`, id, form), chromedp.EvalAwaitPromise))
		if status != 200 {
			t.Fatalf("free-play call %d: %d", i+1, status)
		}
		b.poll(fmt.Sprintf("request %d in the presenter's request log", i+1), fmt.Sprintf(`document.querySelectorAll("#live .req-row").length >= %d`, i+1))
		// The row shows as soon as the request starts; the bar speaks of
		// it once a frame shows it has queried.
		b.poll(fmt.Sprintf("request %d judged by the outcome bar", i+1), `!/no request has queried yet/.test(document.querySelector("#outcome .outcome-head b").textContent)`)
		got := run(b, chromedp.Evaluate[[]string](`(function () { var c = document.querySelector("#present-head .outcome"), o = document.getElementById("outcome");
			return [c.getAttribute("data-kind"), c.textContent.trim(), o.getAttribute("data-outcome"), o.querySelector(".outcome-head b").textContent.trim()]; })()`))
		if got[0] != "running" || got[1] != "running" || got[2] != "running" || got[3] != "No leak so far." {
			t.Errorf("after free-play call %d the presenter's chip is %q (%s), its bar %q (%s); want both running", i+1, got[1], got[0], got[3], got[2])
		}
	}
	for _, size := range [][2]int64{{390, 844}, {1280, 720}, {1920, 1080}} {
		for _, scheme := range []string{"light", "dark"} {
			b.emulate(size[0], size[1], scheme)
			where := fmt.Sprintf("presenter in free play at %dx%d, %s", size[0], size[1], scheme)
			b.noSideways(where)
			// Every request's block has a box, the one of no tenant too
			// (its rect had no stroke: a label floating over the band).
			if bare := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#timeline .tl-block")).filter(function (g) {
				var s = getComputedStyle(g.querySelector("rect"));
				return s.stroke === "none" || parseFloat(s.strokeWidth) < 1 || s.stroke === s.fill; }).map(function (g) { return g.getAttribute("class"); })`)); len(bare) > 0 {
				t.Errorf("%s: timeline blocks without a box: %v", where, bare)
			}
			b.shot(fmt.Sprintf("present-freeplay-%dx%d-%s", size[0], size[1], scheme))
		}
	}
}
