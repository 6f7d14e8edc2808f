package web_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// recentRuns is the variants the "Your recent runs" panel lists, newest
// first, as "variant variant ...".
const recentRuns = `Array.from(document.querySelectorAll("#recent-runs li[data-run]")).map(function (li) { return li.getAttribute("data-variant"); }).join(" ")`

// TestBrowserServerRestart stops rlslab under an open lesson page and
// starts it again on the same address with the same tables. The page says
// at once that it lost its connection; once rlslab is back, that its lab
// is gone and what to do. Run on that page then carries on in a new lab
// (no "no lab" error), and the learner's recent runs, reloaded, still list
// the run made in the lab that went with the restart.
func TestBrowserServerRestart(t *testing.T) {
	t.Parallel()
	cfg := sessions.Config{MaxLabs: 3}
	ts := mustStartServer(t, cfg)
	browser := newBrowser(t)
	shots := exportShots(t)

	a := newTab(t, browser, "learner")
	a.open(ts.URL + "/lessons/set-leak")
	gone := a.labID()
	since := a.pressRun(engine.PatternSessionSet, "max")
	a.waitDone(since)
	a.poll("the run in the recent runs", recentRuns+` === "session-set"`)
	waitRunEnd(t, ts.Labs, gone)
	// A second tab of the same browser (the same learner cookie), on the
	// same lesson, to be reloaded after the restart.
	bctx, cancel := chromedp.NewContext(a.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatal(err)
	}
	b := &tab{t: t, name: "learner's second tab", ctx: bctx}
	b.do(chromedp.EmulateViewport(browserWidth, browserHeight), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: testHooks})
		return err
	}))
	b.open(ts.URL + "/lessons/set-leak")
	if id := b.labID(); id != gone {
		t.Fatalf("the second tab shows lab %s, the first %s: not the same browser", id, gone)
	}

	ts.Stop()
	for _, x := range []*tab{a, b} {
		x.poll("the connection lost notice", `(function () { var s = document.getElementById("conn-status");
			return !!s && !s.hidden && s.getAttribute("data-state") === "lost" && /Connection lost — reconnecting/.test(s.textContent); })()`)
	}
	a.screenshot(shots, "restart-lost-1500.png")
	if got := run(a, chromedp.Evaluate[bool](`(function () { var r = document.getElementById("conn-status").getBoundingClientRect();
		return r.top >= 0 && r.bottom <= window.innerHeight && r.width > 0; })()`)); !got {
		t.Errorf("the notice is not inside the window")
	}
	noticeAtEverySize(a, "lost")

	addr := strings.TrimPrefix(ts.URL, "http://")
	ts2 := mustStartServerWith(t, cfg, serverOptions{addr: addr})
	a.poll("the lab gone notice", `(function () { var s = document.getElementById("conn-status");
		return !!s && s.getAttribute("data-state") === "gone" && !!document.getElementById("lab-gone"); })()`)
	if text := run(a, chromedp.Text(chromedp.ID("conn-status"))); !strings.Contains(text, "Press Run to carry on in a new lab") {
		t.Errorf("the notice says %q", text)
	}
	a.screenshot(shots, "restart-gone-1500.png")
	noticeAtEverySize(a, "gone")

	// Run, on the page of the gone lab: a new lab, the run in it, the page
	// loaded again with it.
	since = a.pressRun(engine.PatternTxLocal, "max")
	a.pollAcrossLoad("the page with the new lab", fmt.Sprintf(`!!document.getElementById("live") && document.getElementById("live").getAttribute("data-lab-id") !== %q &&
		!document.getElementById("lab-gone")`, gone))
	a.waitDone(since)
	lab := a.labID()
	if _, err := ts2.Labs.Get(lab); err != nil {
		t.Fatalf("the page shows lab %s, which the new server does not have: %v", lab, err)
	}
	waitRunEnd(t, ts2.Labs, lab)
	a.poll("both runs in the recent runs", recentRuns+` === "tx-local session-set"`)

	// The other tab, reloaded: the learner's lab, and the run made in the
	// lab before the restart.
	b.do(chromedp.Reload())
	b.do(chromedp.WaitReady(chromedp.ID("live")))
	b.poll("the second tab's recent runs", recentRuns+` === "tx-local session-set"`)
	if id := b.labID(); id != lab {
		t.Errorf("the reloaded tab shows lab %s, want %s", id, lab)
	}
	b.screenshot(shots, "restart-reloaded-1500.png")
}

// noticeAtEverySize checks the connection notice of tab b at 390 px,
// 1280×720 and 1920×1080, light and dark: it is inside the window,
// wherever the page is scrolled, as wide as a phone's window allows, and
// the page does not scroll sideways.
// It saves screenshots into RLSLAB_SHOTS and puts the tab back at the
// browser tests' size.
func noticeAtEverySize(b *tab, state string) {
	b.t.Helper()
	for _, size := range [][2]int64{{390, 844}, {1280, 720}, {1920, 1080}} {
		for _, scheme := range []string{"light", "dark"} {
			where := fmt.Sprintf("the %s notice at %dx%d, %s", state, size[0], size[1], scheme)
			b.emulate(size[0], size[1], scheme)
			for _, y := range []string{"0", "document.documentElement.scrollHeight"} {
				if in := run(b, chromedp.Evaluate[bool](`(function () { window.scrollTo(0, `+y+`); var r = document.getElementById("conn-status").getBoundingClientRect();
					return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0 && r.right <= window.innerWidth && r.width > 0; })()`)); !in {
					b.t.Errorf("%s, scrolled to %s: not inside the window", where, y)
				}
			}
			// On a phone the notice uses the window's width (left: 50%
			// squeezed it into half of it, a few words a line).
			if size[0] < 600 {
				if w := run(b, chromedp.Evaluate[float64](`document.getElementById("conn-status").getBoundingClientRect().width`)); w < 0.75*float64(size[0]) {
					b.t.Errorf("%s: %.0f px wide in a %d px window", where, w, size[0])
				}
			}
			b.noSideways(where)
			b.shot(fmt.Sprintf("restart-%s-%dx%d-%s", state, size[0], size[1], scheme))
		}
	}
	b.emulate(browserWidth, browserHeight, "")
}

// pollAcrossLoad is poll for a page that is about to load another: the
// load ends a poll (its document goes away), which then starts again in
// the new document.
func (b *tab) pollAcrossLoad(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	for {
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(10*time.Millisecond)))
		if err == nil {
			return
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "navigated or closed") && !strings.Contains(err.Error(), "Cannot find context") {
			b.t.Fatalf("%s: waiting for %s: %v", b.name, what, err)
		}
	}
}

// cutter is a TCP relay in front of a server whose connections a test can
// cut, as a network that goes away does: every connection through it is
// dropped at once and new ones are refused until it is mended.
type cutter struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  map[net.Conn]bool
	down   bool
}

// newCutter relays 127.0.0.1:<free port> to target until the test ends.
func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go c.relay(in)
		}
	}()
	return c
}

// URL is the relay's address as an http URL.
func (c *cutter) URL() string { return "http://" + c.ln.Addr().String() }

func (c *cutter) relay(in net.Conn) {
	c.mu.Lock()
	if c.down {
		c.mu.Unlock()
		in.Close()
		return
	}
	c.mu.Unlock()
	out, err := net.Dial("tcp", c.target)
	if err != nil {
		in.Close()
		return
	}
	c.mu.Lock()
	if c.down {
		c.mu.Unlock()
		in.Close()
		out.Close()
		return
	}
	c.conns[in], c.conns[out] = true, true
	c.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
	go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
	<-done
	in.Close()
	out.Close()
	c.mu.Lock()
	delete(c.conns, in)
	delete(c.conns, out)
	c.mu.Unlock()
}

// cut drops every connection and refuses new ones.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = true
	for conn := range c.conns {
		conn.Close()
	}
}

// mend lets connections through again.
func (c *cutter) mend() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = false
}

// TestBrowserReconnect cuts the network under an open lesson page while
// rlslab and the lab stay: the page says it lost its connection, and once
// the network is back it reconnects by itself, says so, and shows the
// next run live.
func TestBrowserReconnect(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	link := newCutter(t, strings.TrimPrefix(ts.URL, "http://"))
	browser := newBrowser(t)
	a := newTab(t, browser, "learner")
	a.open(link.URL() + "/lessons/set-leak")
	lab := a.labID()

	link.cut()
	a.poll("the connection lost notice", `(function () { var s = document.getElementById("conn-status");
		return !!s && !s.hidden && s.getAttribute("data-state") === "lost"; })()`)
	link.mend()
	a.poll("connected again", `(function () { var s = document.getElementById("conn-status");
		return window.rlslabTest.wsOpen >= 2 && !!s && s.getAttribute("data-state") === "ok" && /Connected again/.test(s.textContent); })()`)
	a.poll("the notice gone", `document.getElementById("conn-status").hidden`)
	since := a.pressRun(engine.PatternSessionSet, "max")
	a.waitDone(since)
	if id := a.labID(); id != lab {
		t.Errorf("after the reconnect the page shows lab %s, want %s", id, lab)
	}
}

// TestBrowserPresenterOnGoneLab: a presenter whose lab is gone is told so
// (with Run as the way on), and Space then runs in a new lab, whose
// presenter view the page moves to.
func TestBrowserPresenterOnGoneLab(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 3})
	browser := newBrowser(t)
	a := newTab(t, browser, "presenter")
	a.open(ts.URL + "/lessons/set-leak")
	gone := a.labID()
	a.do(chromedp.Navigate(ts.URL+"/labs/"+gone+"/present"), chromedp.WaitReady(chromedp.ID("variant-keys")))
	a.poll("presenter socket", `window.rlslabTest.wsOpen > 0`)
	if err := ts.Labs.CloseLab(context.Background(), gone); err != nil {
		t.Fatal(err)
	}
	a.poll("the lab gone notice", `(function () { var s = document.getElementById("conn-status");
		return !!s && s.getAttribute("data-state") === "gone" && /Press Run/.test(s.textContent); })()`)
	a.do(chromedp.KeyEvent(" "))
	a.pollAcrossLoad("the new lab's presenter view", fmt.Sprintf(`location.pathname !== "/labs/%s/present" && /^\/labs\/[^/]+\/present$/.test(location.pathname) &&
		!!document.getElementById("status") && document.getElementById("status").getAttribute("data-status") === "done"`, gone))
	lab := strings.TrimSuffix(strings.TrimPrefix(run(a, chromedp.Evaluate[string](`location.pathname`)), "/labs/"), "/present")
	if lab == gone {
		t.Fatalf("the presenter moved to lab %q", lab)
	}
	if _, err := ts.Labs.Get(lab); err != nil {
		t.Errorf("the presenter shows lab %s: %v", lab, err)
	}
}
