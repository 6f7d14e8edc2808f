package web_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/rlslab/rlslab/sessions"
)

// TestBrowserLessonResultFolded opens set-leak as a new learner: "What the
// database shows" is folded, its result ("all 3 of them Acme's") not on
// screen, while the prediction is asked; its summary says what it holds,
// is reached with Tab and opens and closes with Enter; axe-core finds no
// serious violation. Locking in a prediction unfolds it.
func TestBrowserLessonResultFolded(t *testing.T) {
	t.Parallel()
	axe := readAxe(t)
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	b := newTab(t, newBrowser(t), "learner")
	b.open(ts.URL + "/lessons/set-leak")
	const section = `document.querySelector('details.reveal[data-reveal="what-the-database-shows"]')`
	const resultShown = `Array.from(` + section + `.querySelectorAll("p")).some(function (p) { return /all 3 of them Acme/.test(p.textContent) && p.checkVisibility(); })`
	got := run(b, chromedp.Evaluate[[]string](`(function () { var d = `+section+`; if (!d) return ["none"];
		return [String(d.open), d.querySelector("summary").textContent.replace(/\s+/g, " ").trim(), String(`+resultShown+`),
			String(!!document.querySelector("form.predict-ask[data-variant=session-set]"))]; })()`))
	if len(got) != 4 || got[0] != "false" || got[2] != "false" || got[3] != "true" {
		t.Fatalf("before a prediction: open, summary, result shown, question asked = %q", got)
	}
	if !strings.Contains(got[1], "What the database shows") || !strings.Contains(got[1], "what the run shows") {
		t.Errorf("the summary says %q", got[1])
	}
	for _, v := range b.axeRun(axe, false) {
		t.Errorf("axe: %s %s: %s\n\t%s", v.Impact, v.ID, v.Help, strings.Join(v.Nodes, "\n\t"))
	}

	// Keyboard: Tab reaches the summary (from the element before it), Enter
	// opens the section and closes it again.
	b.do(chromedp.Evaluate[chromedp.Void](`(function () { var s = `+section+`.querySelector("summary"), all = Array.from(document.querySelectorAll("a[href], button, input, select, textarea, summary, [tabindex]")).filter(function (e) { return e.tabIndex >= 0 && e.checkVisibility(); });
		var i = all.indexOf(s); all[i - 1].focus(); })()`),
		chromedp.KeyEvent(kb.Tab))
	if !run(b, chromedp.Evaluate[bool](`document.activeElement === `+section+`.querySelector("summary")`)) {
		t.Fatalf("Tab does not reach the folded section's summary")
	}
	b.do(chromedp.KeyEvent(kb.Enter))
	if !run(b, chromedp.Evaluate[bool](section+`.open && `+resultShown)) {
		t.Errorf("Enter on the summary does not show the result")
	}
	b.do(chromedp.KeyEvent(kb.Enter))
	if run(b, chromedp.Evaluate[bool](section+`.open`)) {
		t.Errorf("Enter again does not fold it")
	}

	// Locking in the prediction unfolds it.
	b.answer("session-set", 0)
	run(b, chromedp.Poll[bool](section+`.open && `+resultShown, chromedp.WithPollingTimeout(actionTimeout)))
}
