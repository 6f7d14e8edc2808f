package web_test

import (
	"strconv"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// TestBrowserStepDock single-steps set-leak on a lesson page at 1280×720
// and on a phone. The page scrolls to the narrated backend, which leaves
// the Step button off screen (the learner had to scroll back up for every
// step): a pinned "Next step" button is then on screen, and pressing it
// takes the next step. With Step on screen, or once the run has ended, the
// pinned button is gone; a watcher of the lab never gets one.
func TestBrowserStepDock(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)
	const dockShown = `(function () { var d = document.getElementById("step-dock"); if (!d || d.hidden) return false;
		var r = d.getBoundingClientRect(); return r.height > 0 && r.top >= 0 && r.bottom <= innerHeight && r.left >= 0 && r.right <= innerWidth; })()`
	const dockHidden = `(function () { var d = document.getElementById("step-dock"); return !d || d.hidden; })()`
	// A new frame scrolls the narrated backend into view, which can bring
	// Step back on screen: scroll down again at every poll until the
	// page stays there and the dock shows.
	const scrolledDockShown = `(function () { window.scrollTo(0, document.documentElement.scrollHeight); return ` + dockShown + `; })()`
	for _, size := range [][2]int64{{1280, 720}, {390, 844}} {
		b := newTab(t, browser, "learner")
		b.emulate(size[0], size[1], "light")
		b.open(ts.URL + "/lessons/set-leak")
		id := b.labID()
		b.pressRun(engine.PatternSessionSet, "step")
		b.poll("a single-step run", `(function () { var s = document.getElementById("status"); return s.getAttribute("data-speed") === "step" && s.getAttribute("data-status") === "running"; })()`)
		b.poll("the pinned Next step button, with Step off screen", scrolledDockShown)
		b.shot("step-dock-" + strconv.FormatInt(size[0], 10))
		before := run(b, chromedp.Evaluate[string](`document.getElementById("status").getAttribute("data-version")`))
		// Pressed from script: a frame arriving now may scroll Step back on
		// screen and hide the dock before a pointer click lands on it.
		b.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("step-dock").click()`))
		b.poll("the next step", `document.getElementById("status").getAttribute("data-version") !== "`+before+`"`)

		// A watcher of the same lab, in a browser of its own: no Step, no dock.
		w := newTab(t, browser, "watcher")
		w.emulate(size[0], size[1], "light")
		w.open(ts.URL + "/labs/" + id)
		w.do(chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, document.documentElement.scrollHeight)`))
		if !run(w, chromedp.Evaluate[bool](dockHidden)) || run(w, chromedp.Evaluate[bool](`!!document.getElementById("step")`)) {
			t.Errorf("%dx%d: a watcher gets Step or the pinned button", size[0], size[1])
		}

		b.do(chromedp.ScrollIntoView(chromedp.ID("step")))
		b.poll("no pinned button with Step on screen", dockHidden)
		// The rest of the run at full speed: once it has ended, no dock.
		b.poll("the pinned button again", scrolledDockShown)
		lab, err := ts.Labs.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if err := lab.SetSpeed(engine.Speed{Max: true}); err != nil {
			t.Fatal(err)
		}
		waitRunEnd(t, ts.Labs, id)
		b.poll("no pinned button once the run has ended", dockHidden)
	}
}
