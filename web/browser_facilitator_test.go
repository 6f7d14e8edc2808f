package web_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// facilitatorShots is where TestBrowserFacilitator30 writes its
// screenshots: $RLSLAB_SHOTS if set, else nowhere ("").
func facilitatorShots(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("RLSLAB_SHOTS")
	if dir == "" {
		return ""
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// colourScheme emulates a colour scheme ("light", "dark" or "" for the
// system's).
func colourScheme(v string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}}})
		return err
	})
}

// shoot checks at each size that nothing scrolls sideways and, with a dir,
// saves the viewport there, light and dark, as name-WxH-scheme.png.
func (b *tab) shoot(dir, name string, sizes [][2]int64) {
	b.t.Helper()
	for _, sz := range sizes {
		if px := b.overflow(sz[0], sz[1]); px > 0 {
			wide := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("body *")).filter(function (e) {
				return e.getBoundingClientRect().right > window.innerWidth + 1; }).slice(0, 6).map(function (e) {
				return e.tagName + "." + e.className + " " + Math.round(e.getBoundingClientRect().right); })`))
			b.t.Errorf("%s is %d px wider than %dx%d: %v", name, px, sz[0], sz[1], wide)
		}
		if dir == "" {
			continue
		}
		for _, sc := range []string{"light", "dark"} {
			b.do(colourScheme(sc))
			png := run(b, chromedp.CaptureScreenshot())
			out := filepath.Join(dir, fmt.Sprintf("%s-%dx%d-%s.png", name, sz[0], sz[1], sc))
			if err := os.WriteFile(out, png, 0o644); err != nil {
				b.t.Fatal(err)
			}
		}
		b.do(colourScheme(""))
	}
}

// dashRows returns the participants the dashboard shows, in order: name,
// lab, leak seen and the idle column.
func (b *tab) dashRows() [][4]string {
	b.t.Helper()
	return run(b, chromedp.Evaluate[[][4]string](`Array.from(document.querySelectorAll("#dash-live .p-item")).map(function (r) {
		var idle = r.querySelector('[data-field="idle"]');
		return [r.getAttribute("data-name"), r.getAttribute("data-lab"), r.getAttribute("data-leak-seen"), idle ? idle.textContent.trim() : ""];
	})`))
}

// pageTimeout bounds loading one page of this test: a dashboard of thirty
// on a loaded machine takes longer than one ordinary browser step.
const pageTimeout = 2 * time.Minute

// open navigates to url and waits until the element with id is there, within
// pageTimeout.
func (b *tab) openWait(url, id string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, pageTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitReady(chromedp.ID(id))); err != nil {
		b.t.Fatalf("%s: open %s: %v", b.name, url, err)
	}
}

// follow opens the link that sel finds, as a click on it would, and waits
// for the dashboard's live part.
func (b *tab) follow(sel string) {
	b.t.Helper()
	href := run(b, chromedp.Evaluate[string](`document.querySelector(`+"`"+sel+"`"+`).href`))
	b.openWait(href, "dash-live")
}

func TestBrowserFacilitator30(t *testing.T) {
	t.Parallel()
	const n = 30
	ts := mustStartServer(t, sessions.Config{MaxLabs: n + 2})
	browser := newBrowser(t)
	shots := facilitatorShots(t)
	start := time.Now()

	// The facilitator finds the form from the top of the home page.
	fac := newTab(t, browser, "facilitator")
	fac.do(chromedp.EmulateViewport(1280, 720))
	fac.openWait(ts.URL+"/", "new-workshop")
	if y := run(fac, chromedp.Evaluate[float64](`document.getElementById("new-workshop").getBoundingClientRect().bottom`)); y > 720 {
		t.Errorf("the link to the workshop form is at y=%v, below the first screen", y)
	}
	fac.do(
		chromedp.Navigate(run(fac, chromedp.Evaluate[string](`document.getElementById("new-workshop").href`))),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/workshops"] input[name=title]`)),
		chromedp.SetValue(chromedp.CSS(`form[action="/workshops"] input[name=title]`), "Thirty people"),
		chromedp.Click(chromedp.CSS(`form[action="/workshops"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("facilitator-url")),
	)
	var w createdWorkshop
	w.FacilitatorURL = run(fac, chromedp.Evaluate[string](`document.getElementById("facilitator-url").href`))
	w.JoinURL = run(fac, chromedp.Evaluate[string](`document.getElementById("join-url").href`))
	w.ID = strings.TrimPrefix(strings.SplitN(w.FacilitatorURL, "?", 2)[0], ts.URL+"/workshops/")
	if run(fac, chromedp.Evaluate[int](`document.querySelectorAll("svg.qr path").length`)) != 1 {
		t.Errorf("the new workshop's page has no QR code")
	}
	fac.shoot(shots, "created", [][2]int64{{390, 844}, {1280, 720}})

	// Thirty join (over HTTP: a browser each would not fit the machine).
	clients := make([]*http.Client, n)
	labs := make([]string, n)
	for i := range clients {
		clients[i] = newBrowserClient(t)
		labs[i] = mustJoin(t, w, clients[i], fmt.Sprintf("Person %02d", i+1)).Lab
	}
	t.Logf("%v: %d joined", time.Since(start).Round(time.Millisecond), n)
	// Person 01 predicts and sees the leak, Person 02 runs the fix.
	if code, body := do(t, clients[0], "POST", ts.URL+"/lessons/set-leak/predictions", ctJSON, `{"variant":"session-set","choice":1}`); code != http.StatusOK {
		t.Fatalf("predict: %d %s", code, body)
	}
	runToEnd(t, ts, clients[0], labs[0], "set-leak", engine.PatternSessionSet)
	runToEnd(t, ts, clients[1], labs[1], "set-leak", engine.PatternTxLocal)

	fac.do(chromedp.EmulateViewport(1280, 720))
	fac.openWait(w.FacilitatorURL, "dash-live")
	fac.poll("dashboard socket", `window.rlslabTest.wsOpen > 0`)
	fac.poll("the table of thirty", fmt.Sprintf(`document.getElementById("dash-live").getAttribute("data-layout") === "table" &&
		document.querySelectorAll("#dash-live .p-item").length === %d`, n))
	height := run(fac, chromedp.Evaluate[int](`document.documentElement.scrollHeight`))
	t.Logf("the dashboard of %d at 1280x720 is %d px high (%.2f screens)", n, height, float64(height)/720)
	if height > 2*720 {
		t.Errorf("the dashboard of %d is %d px high at 1280x720, more than two screens", n, height)
	}
	fac.shoot(shots, "dashboard", [][2]int64{{390, 844}, {1280, 720}, {1920, 1080}})
	fac.do(chromedp.EmulateViewport(1280, 720))

	// A run going says so, not "N s idle".
	if code, body := do(t, clients[2], "POST", ts.URL+"/labs/"+labs[2]+"/runs", ctJSON, `{"scenario":"set-leak","variant":"session-set","speed":"step"}`); code != http.StatusAccepted {
		t.Fatalf("step run: %d %s", code, body)
	}
	fac.poll("Person 03 running", `(function () { var r = document.querySelector('#dash-live .p-item[data-name="Person 03"] [data-field="idle"]');
		return !!r && r.textContent.trim() === "running"; })()`)

	// Sort by name, then filter: who saw the leak. The live update keeps
	// the filter: Person 04's leak adds a row without a reload.
	fac.follow(`a[data-tool="sort=name"]`)
	fac.poll("sorted by name", `location.search.indexOf("sort=name") >= 0 && document.querySelector('a[data-tool="sort=name"]').getAttribute("aria-current") === "true"`)
	rows := fac.dashRows()
	names := make([]string, len(rows))
	for i, r := range rows {
		names[i] = r[0]
	}
	if len(names) != n || !slices.IsSorted(names) {
		t.Errorf("sorted by name: %v", names)
	}
	fac.follow(`a[data-tool="filter=leak"]`)
	fac.poll("filtered", `location.search.indexOf("filter=leak") >= 0 && location.search.indexOf("sort=name") >= 0`)
	fac.poll("dashboard socket", `window.rlslabTest.wsOpen > 0`)
	if rows := fac.dashRows(); len(rows) != 1 || rows[0][0] != "Person 01" {
		t.Errorf("filter leak: %v", rows)
	}
	runToEnd(t, ts, clients[3], labs[3], "set-leak", engine.PatternSessionSet)
	fac.poll("Person 04 added live", `document.querySelectorAll("#dash-live .p-item").length === 2 &&
		document.querySelectorAll("#dash-live .p-item")[1].getAttribute("data-name") === "Person 04"`)
	fac.shoot(shots, "dashboard-filtered", [][2]int64{{1280, 720}})

	// A new lab for Person 01, from the row: a new lab id, the leak still
	// seen.
	// (Clicked from a script: the row may be redrawn by a frame between a
	// look-up of its node and a click through the protocol.)
	fac.do(chromedp.Evaluate[chromedp.Void](`window.confirm = function () { return true; };
		document.querySelector('#dash-live .p-item[data-name="Person 01"] form.reset-lab button').click()`))
	fac.poll("the reset's message", `document.getElementById("dash-msg").textContent.indexOf("Person 01 has a new lab") === 0`)
	fac.poll("the new lab in the row", fmt.Sprintf(`(function () { var r = document.querySelector('#dash-live .p-item[data-name="Person 01"]');
		return !!r && r.getAttribute("data-lab") !== %q && r.getAttribute("data-lab") !== "" && r.getAttribute("data-leak-seen") === "yes"; })()`, labs[0]))
	if _, err := ts.Labs.Get(labs[0]); err == nil {
		t.Errorf("Person 01's old lab is still open")
	}

	// The CSV has a row each.
	facHTTP := facilitatorClient(t, ts, w)
	if rows := readCSV(t, ts, facHTTP, w.ID); len(rows) != n+1 {
		t.Errorf("CSV: %d lines, want %d", len(rows), n+1)
	}

	// The room view, on a projector.
	room := fac
	room.openWait(ts.URL+"/workshops/"+w.ID+"/room", "room-live")
	got := run(room, chromedp.Evaluate[map[string]string](`({answered: document.querySelector('.room-q[data-variant="session-set"]').getAttribute("data-answered"),
		leak: document.querySelector('[data-group="leak"]').getAttribute("data-count"),
		noleak: document.querySelector('[data-group="no-leak"]').getAttribute("data-count"),
		font: getComputedStyle(document.querySelector(".room-choices .n")).fontSize})`))
	if got["answered"] != "1" || got["leak"] != "2" || got["noleak"] != fmt.Sprint(n-2) || got["font"] < "28px" && len(got["font"]) <= 4 {
		t.Errorf("room view: %v", got)
	}
	room.shoot(shots, "room", [][2]int64{{1280, 720}, {1920, 1080}, {390, 844}})

	// The workshop ends elsewhere: the open dashboard says so and drops
	// its Move control, without a reload.
	fac.openWait(ts.URL+"/workshops/"+w.ID, "move")
	fac.poll("dashboard socket", `window.rlslabTest.wsOpen > 0`)
	fac.do(chromedp.Evaluate[chromedp.Void](`window.rlslabLoaded = true`))
	ended := time.Now()
	facHTTP.Timeout = 2 * time.Minute // it drops thirty databases
	if code, body := do(t, facHTTP, "POST", ts.URL+"/workshops/"+w.ID+"/end", "", "", "Accept", ctJSON); code != http.StatusOK {
		t.Fatalf("end: %d %s", code, body)
	}
	t.Logf("ending the workshop of %d took %v", n, time.Since(ended).Round(time.Millisecond))
	fac.poll("ended, live", `window.rlslabLoaded === true && !!document.getElementById("ws-ended") && !document.getElementById("move") &&
		!document.getElementById("copy-join") && !document.querySelector("#dash-join .join-code")`)
	fac.shoot(shots, "dashboard-ended", [][2]int64{{1280, 720}})
	t.Logf("%v: done; screenshots in %s", time.Since(start).Round(time.Millisecond), shots)
}
