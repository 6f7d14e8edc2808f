package web_test

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/sessions"
)

// TestBrowserLessonWaitsForALab opens a lesson while every lab is in use
// (the cap is 1 and another browser holds it): the page says so and that it
// asks again by itself; once the other lab closes, the page gets a lab of
// its own without a click (it used to say why and wait for one).
func TestBrowserLessonWaitsForALab(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 1})
	other := openLesson(t, ts, newBrowserClient(t), "set-leak")
	b := newTab(t, newBrowser(t), "learner")
	b.do(chromedp.Navigate(ts.URL + "/lessons/set-leak"))
	b.poll("the reason, and that the page asks again", `(function () {
		var p = document.querySelector(".lab-pending p.control-msg.bad");
		return !!p && p.textContent.indexOf("in use") >= 0 && p.textContent.indexOf("asks again") >= 0;
	})()`)
	b.shot("lesson-waits-for-a-lab")
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	if err := ts.Labs.CloseLab(ctx, other); err != nil {
		t.Fatal(err)
	}
	b.poll("a lab of its own", `(function () { var l = document.getElementById("live"); return !!l && !!l.getAttribute("data-lab-id") && !!document.getElementById("run"); })()`)
	if id := b.labID(); id == other {
		t.Errorf("the page shows the other browser's lab %s", id)
	}
}
