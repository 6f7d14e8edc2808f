package web_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web"
)

// busyWorkshops is the real workshop service whose first joins fail as a
// loaded database makes them fail.
type busyWorkshops struct {
	web.Workshops
	busy  int64 // how many joins fail
	joins atomic.Int64
}

func (b *busyWorkshops) Join(ctx context.Context, ws sessions.Workshop, name string) (sessions.Joined, error) {
	if b.joins.Add(1) <= b.busy {
		return sessions.Joined{}, rlslab.Errorf(rlslab.EUNAVAILABLE, "%s", sessions.ErrDatabaseBusy)
	}
	return b.Workshops.Join(ctx, ws, name)
}

// TestBrowserJoinRetriesWhileTheDatabaseIsBusy joins a workshop in
// chromium while the first two joins fail with 503: the join page says
// why, keeps the name, sends the form again by itself (after 1 s, then
// 2 s), and lands on the lesson with a lab once a join goes through.
func TestBrowserJoinRetriesWhileTheDatabaseIsBusy(t *testing.T) {
	t.Parallel()
	var busy *busyWorkshops
	ts := mustStartServerWith(t, sessions.Config{MaxLabs: 2}, serverOptions{services: func(sv web.Services) web.Services {
		busy = &busyWorkshops{Workshops: sv.Workshops, busy: 2}
		sv.Workshops = busy
		return sv
	}})
	w := mustCreateWorkshop(t, ts, "Busy room", "set-leak")
	b := newTab(t, newBrowser(t), "participant")
	b.do(
		chromedp.Navigate(w.JoinURL),
		chromedp.SetValue(chromedp.CSS(`form.join-form input[name=name]`), "ann"),
		chromedp.Click(chromedp.ID("join")),
	)
	// One look at the page sent back: the reason, and the name kept (the
	// page sends itself again a second later).
	b.pollAcrossLoad("the join form sent back with the reason and the name", fmt.Sprintf(`(function () {
		var f = document.querySelector("form.join-form[data-retry]");
		return !!f && f.querySelector(".ws-error").textContent.indexOf(%q) >= 0 && f.querySelector("input[name=name]").value === "ann";
	})()`, sessions.ErrDatabaseBusy))
	b.pollAcrossLoad("the lesson page after the page joined again by itself", `location.pathname.indexOf("/lessons/") === 0`)
	if n := busy.joins.Load(); n != 3 {
		t.Errorf("%d joins sent, want 3 (two refused, then the one that went through)", n)
	}
}
