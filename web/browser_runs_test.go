package web_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// shotSizes are the screens a page is looked at on: a phone, a projector
// and a big screen, light and dark.
var shotSizes = []struct {
	name   string
	w, h   int64
	scheme string
}{
	{"390", 390, 844, "light"},
	{"390-dark", 390, 844, "dark"},
	{"1280x720", 1280, 720, "light"},
	{"1280x720-dark", 1280, 720, "dark"},
	{"1920x1080", 1920, 1080, "light"},
	{"1920x1080-dark", 1920, 1080, "dark"},
}

// lookAt shows the tab's page on every screen of shotSizes, scrolled to the
// element of scrollTo (a CSS selector; "" keeps the top): it fails the test
// when the page overflows sideways, and saves a screenshot named
// prefix-SIZE.png into RLSLAB_SHOTS (a directory) if set.
func lookAt(t *testing.T, b *tab, prefix, scrollTo string) {
	t.Helper()
	dir := os.Getenv("RLSLAB_SHOTS")
	for _, s := range shotSizes {
		b.do(
			chromedp.EmulateViewport(s.w, s.h),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: s.scheme}}})
				return err
			}),
		)
		if over := run(b, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`)); over > 0 {
			t.Errorf("%s at %s: the page is %d px wider than the window", prefix, s.name, over)
		}
		// The request log never hides its columns (the outcome) behind a
		// sideways scroll: narrow, it wraps each request instead.
		if hidden := run(b, chromedp.Evaluate[int](`Array.from(document.querySelectorAll(".table-scroll")).filter(function (e) {
			return e.querySelector(".request-log") && e.scrollWidth > e.clientWidth + 1; }).length`)); hidden > 0 {
			t.Errorf("%s at %s: the request log scrolls sideways", prefix, s.name)
		}
		if scrollTo != "" {
			b.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.scrollTo(0, document.querySelector(%q).getBoundingClientRect().top + window.scrollY - 8)`, scrollTo)))
		}
		b.screenshot(dir, prefix+"-"+s.name+".png")
	}
	b.do(
		chromedp.EmulateViewport(browserWidth, browserHeight),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
			return err
		}),
		chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`),
	)
}

func TestBrowserRecentRunsAndCompareLink(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 3})
	w := mustCreateWorkshop(t, ts, "Recent runs", "set-leak", "split-calls")
	browser := newBrowser(t)

	// A participant joins and lands on set-leak beside their lab: the
	// panel says nothing was run yet.
	b := newTab(t, browser, "Ann")
	b.do(
		chromedp.Navigate(w.JoinURL),
		chromedp.SetValue(chromedp.CSS(`input[name=name]`), "Ann"),
		chromedp.Click(chromedp.ID("join")),
		chromedp.WaitReady(chromedp.ID("live")),
	)
	b.poll("lab socket", `window.rlslabTest.wsOpen > 0`)
	lab := b.labID()
	b.poll("the empty recent-runs panel", `!!document.querySelector('#recent-runs .empty[data-newest=""]')`)

	// Each run shows up in the panel when it ends, without a reload.
	since := b.pressRun(engine.PatternSessionSet, "max")
	b.waitDone(since)
	b.poll("the first run in the panel", `document.querySelectorAll('#recent-runs li[data-run]').length === 1 &&
		document.querySelector('#recent-runs li[data-run]').getAttribute("data-variant") === "session-set"`)
	waitRunEnd(t, ts.Labs, lab)
	lookAt(t, b, "lesson-request-log", "#requests")
	// The run's end also checks Ann's session-set prediction, and the page
	// swaps its prediction box: the next press waits for that swap.
	b.poll("session-set's prediction checked", `(function () {
		var el = document.querySelector('.predict-checked[data-variant="session-set"]');
		return !!el && !el.hidden;
	})()`)
	since = b.pressRun(engine.PatternTxLocal, "max")
	b.waitDone(since)
	b.poll("the second run in the panel, with a compare link", `document.querySelectorAll('#recent-runs li[data-run]').length === 2 &&
		document.querySelector('#recent-runs li[data-run]').getAttribute("data-variant") === "tx-local" &&
		!!document.querySelector('#recent-runs li[data-run] a.compare-link')`)
	waitRunEnd(t, ts.Labs, lab)
	runs := labRuns(t, ts, lab)
	if len(runs) != 2 {
		t.Fatalf("recordings: %+v", runs)
	}
	tx, leak := runs[0].ID, runs[1].ID
	if got := run(b, chromedp.Evaluate[string](`document.querySelector('#recent-runs li[data-run]').getAttribute("data-run") + " " +
		document.querySelector('#recent-runs li[data-run] a.replay-link').getAttribute("href") + " " +
		document.querySelector('#recent-runs li[data-run] a.compare-link').getAttribute("href")`)); got != tx+" /runs/"+tx+" /runs/"+leak+"/vs/"+tx {
		t.Errorf("the newest run in the panel: %s", got)
	}
	lookAt(t, b, "lesson-recent-runs", "#recent-runs")

	// The lesson's compare link, clicked in its prose, resolves to the
	// two runs side by side.
	b.do(
		chromedp.Click(chromedp.CSS(`article.lesson a[href="/lessons/set-leak/compare?a=session-set&b=tx-local"]`)),
		chromedp.WaitReady(chromedp.CSS(`table.compare`)),
	)
	if got := run(b, chromedp.Evaluate[string](`location.pathname + " " + document.querySelectorAll('table.compare tr[data-differs="yes"]').length`)); got == "" ||
		got[:len("/runs/"+leak+"/vs/"+tx)] != "/runs/"+leak+"/vs/"+tx || got == "/runs/"+leak+"/vs/"+tx+" 0" {
		t.Errorf("the compare link led to %q, want /runs/%s/vs/%s with rows that differ", got, leak, tx)
	}
	lookAt(t, b, "compare", "")

	// The facilitator's dashboard: Ann's prediction results (right about
	// session-set, wrong about tx-local: the runs checked the first choice).
	fac := newTab(t, browser, "facilitator")
	fac.do(chromedp.Navigate(w.FacilitatorURL), chromedp.WaitReady(chromedp.ID("dash-live")))
	fac.poll("Ann's predictions on her card", `(function () {
		var dd = document.querySelector('#dash-live .card[data-name="Ann"] [data-field="predictions"]');
		return !!dd && dd.getAttribute("data-right") === "1" && dd.getAttribute("data-total") === "2" && dd.textContent.trim() === "1/2 right";
	})()`)
	lookAt(t, fac, "dashboard", "")
}
