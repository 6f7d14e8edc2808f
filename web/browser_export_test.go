package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// exportShots is where the export and embed tests save their screenshots:
// RLSLAB_SHOTS if set, else nowhere ("").
func exportShots(t *testing.T) string {
	t.Helper()
	return os.Getenv("RLSLAB_SHOTS")
}

// liveText is the text of the frame a replay shows, blanks squeezed.
const liveText = `(document.querySelector("#replay-target #live") || {textContent: ""}).textContent.replace(/\s+/g, " ").trim()`

// frameIs is true once the replay shows frame n.
func frameIs(n int) string {
	return fmt.Sprintf(`(document.querySelector("#replay-target .replay-frame") || {getAttribute: function () {}}).getAttribute("data-frame") === "%d"`, n)
}

// getExport downloads a recording's export and checks that it is an
// attachment that refers to nothing outside itself.
func getExport(t *testing.T, base, id string) []byte {
	t.Helper()
	resp, err := http.Get(base + "/runs/" + id + "/export")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("export: %d %s %.300s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") || !strings.Contains(cd, `filename="rlslab-`) || !strings.Contains(cd, id+`.html"`) {
		t.Errorf("export's Content-Disposition: %q", cd)
	}
	// Nothing in it loads from elsewhere: no linked style sheet, no
	// script or image with a source, no url() in its styles.
	for _, re := range []*regexp.Regexp{regexp.MustCompile(`(?i)<link\b`), regexp.MustCompile(`(?i)\bsrc\s*=`), regexp.MustCompile(`(?i)url\(`), regexp.MustCompile(`(?i)@import`)} {
		if m := re.Find(body); m != nil {
			t.Errorf("the export holds %q", m)
		}
	}
	return body
}

// TestBrowserExportOffline records a run, downloads its export, and opens
// the file in chromium with the network off: the scrubber steps through
// every recorded frame, each showing what the server's replay shows for
// it, and the page asks for nothing (no request but the file itself, no
// Content-Security-Policy violation).
func TestBrowserExportOffline(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	lab := openLesson(t, ts, c, "set-leak")
	runToEnd(t, ts, c, lab, "set-leak", engine.PatternSessionSet)
	runs := labRuns(t, ts, lab)
	if len(runs) != 1 {
		t.Fatalf("recordings: %+v", runs)
	}
	id := runs[0].ID
	body := getExport(t, ts.URL, id)
	file := filepath.Join(t.TempDir(), "export.html")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	browser := newBrowser(t)
	shots := exportShots(t)

	// What the server's replay shows at each frame.
	online := newTab(t, browser, "online")
	online.do(chromedp.Navigate(ts.URL+"/runs/"+id+"?frame=0"), chromedp.WaitReady(chromedp.ID("player")))
	total := run(online, chromedp.Evaluate[int](`parseInt(document.getElementById("player").getAttribute("data-frames"), 10)`))
	if total < 3 {
		t.Fatalf("the recording has %d frames", total)
	}
	want := make([]string, total)
	want[0] = run(online, chromedp.Evaluate[string](liveText))
	for i := 1; i < total; i++ {
		online.do(chromedp.Click(chromedp.ID("replay-fwd")))
		online.poll("online frame", frameIs(i))
		want[i] = run(online, chromedp.Evaluate[string](liveText))
	}
	t.Logf("export of %d frames: %d bytes (%d bytes a frame)", total, len(body), len(body)/total)

	// The file, with the network off; every request the page makes is
	// noted.
	off := newTab(t, browser, "offline")
	var mu sync.Mutex
	var requests []string
	if err := chromedp.Listen(off.ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requests = append(requests, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	off.do(
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
				return err
			}
			if _, err := cdp.Call(ctx, tg, network.EmulateNetworkConditionsByRule, network.EmulateNetworkConditionsByRuleParams{
				MatchedNetworkConditions: []*network.Conditions{{Offline: true, DownloadThroughput: -1, UploadThroughput: -1}}}); err != nil {
				return err
			}
			_, err := cdp.Call(ctx, tg, network.OverrideNetworkState, network.OverrideNetworkStateParams{Offline: true, DownloadThroughput: -1, UploadThroughput: -1})
			return err
		}),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `
				window.rlslabViolations = [];
				document.addEventListener("securitypolicyviolation", function (e) { window.rlslabViolations.push(e.violatedDirective + " " + e.blockedURI); });`})
			return err
		}),
		chromedp.Navigate("file://"+file),
		chromedp.WaitReady(chromedp.ID("player")),
	)
	if n := run(off, chromedp.Evaluate[int](`parseInt(document.getElementById("player").getAttribute("data-frames"), 10)`)); n != total {
		t.Fatalf("the export has %d frames, the recording %d", n, total)
	}
	if got := run(off, chromedp.Evaluate[string](liveText)); got != want[0] {
		t.Errorf("the export opens on\n%s\nwant\n%s", got, want[0])
	}
	off.do(chromedp.EmulateViewport(1280, 720))
	off.screenshot(shots, "export-frame0-1280x720.png")
	// Forward through every frame with the scrubber, each frame the one
	// recorded; then back with the step button, and Play to the end.
	seen := map[string]bool{}
	for i := 0; i < total; i++ {
		off.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(function () { var s = document.getElementById("replay-scrub"); s.value = "%d";
			s.dispatchEvent(new Event("input", {bubbles: true})); })()`, i)))
		off.poll("exported frame", frameIs(i)+` && document.getElementById("replay-pos").textContent === "`+fmt.Sprintf("%d / %d", i+1, total)+`"`)
		got := run(off, chromedp.Evaluate[string](liveText))
		if got != want[i] {
			t.Errorf("exported frame %d shows\n%s\nthe replay shows\n%s", i, got, want[i])
		}
		seen[got] = true
	}
	if len(seen) < 3 {
		t.Errorf("the frames show %d different pictures in %d frames", len(seen), total)
	}
	if n := run(off, chromedp.Evaluate[int](`document.querySelectorAll('#live .req-row[data-leak="true"]').length`)); n == 0 {
		t.Errorf("the last exported frame of a session-set run shows no leak")
	}
	off.screenshot(shots, "export-last-1280x720.png")
	off.do(chromedp.Click(chromedp.ID("replay-back")))
	off.poll("step back", frameIs(total-2))
	if got := run(off, chromedp.Evaluate[string](liveText)); got != want[total-2] {
		t.Errorf("stepped back to frame %d: %s", total-2, got)
	}
	off.do(chromedp.Evaluate[chromedp.Void](`(function () { var s = document.getElementById("replay-scrub"); s.value = "0";
		s.dispatchEvent(new Event("input", {bubbles: true})); })()`))
	off.poll("scrubbed to frame 0", frameIs(0))
	off.do(chromedp.Click(chromedp.ID("replay-play")))
	off.poll("played to the end", frameIs(total-1)+` && document.getElementById("replay-play").textContent === "Play"`)
	off.do(chromedp.EmulateViewport(390, 844))
	if over := run(off, chromedp.Evaluate[int](`document.documentElement.scrollWidth - window.innerWidth`)); over > 0 {
		t.Errorf("the export is %d px wider than a phone", over)
	}
	off.screenshot(shots, "export-390.png")

	if v := run(off, chromedp.Evaluate[[]string](`window.rlslabViolations`)); len(v) > 0 {
		t.Errorf("Content-Security-Policy violations in the export: %v", v)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, u := range requests {
		if !strings.HasPrefix(u, "file://") && !strings.HasPrefix(u, "data:") {
			t.Errorf("the export asked for %s", u)
		}
	}
	t.Logf("requests of the export: %v", requests)
}

// TestBrowserReplayEmbed frames a replay with ?embed=1 in a page of
// another origin: it shows there without rlslab's header and its player
// works; the replay without embed=1 and a lesson refuse to be framed.
func TestBrowserReplayEmbed(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	lab := openLesson(t, ts, c, "set-leak")
	runToEnd(t, ts, c, lab, "set-leak", engine.PatternSessionSet)
	id := labRuns(t, ts, lab)[0].ID

	for _, h := range []struct {
		path       string
		xfo, frame string
	}{
		{"/runs/" + id + "?embed=1", "", "frame-ancestors *"},
		{"/runs/" + id, "DENY", "frame-ancestors 'none'"},
		{"/lessons/set-leak", "DENY", "frame-ancestors 'none'"},
		{"/", "DENY", "frame-ancestors 'none'"},
	} {
		resp, err := http.Get(ts.URL + h.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Frame-Options"); got != h.xfo {
			t.Errorf("%s: X-Frame-Options %q, want %q", h.path, got, h.xfo)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != h.frame {
			t.Errorf("%s: Content-Security-Policy %q, want %q", h.path, got, h.frame)
		}
	}

	// A wiki of another origin frames the embed and, to be sure framing
	// is refused, the plain replay.
	wiki := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><html><body><h1>Design review</h1>
<iframe id="embed" src="%[1]s/runs/%[2]s?embed=1" width="1200" height="700"></iframe>
<iframe id="plain" src="%[1]s/runs/%[2]s" width="600" height="200"></iframe>
</body></html>`, ts.URL, id)
	}))
	t.Cleanup(wiki.Close)
	browser := newBrowser(t)
	b := newTab(t, browser, "wiki")
	b.do(chromedp.EmulateViewport(1280, 800), chromedp.Navigate(wiki.URL), chromedp.WaitReady(chromedp.ID("embed")))
	embed := run(b, chromedp.Nodes(chromedp.CSS("iframe#embed")))
	b.do(chromedp.WaitReady(chromedp.CSS("#player"), chromedp.FromNode(embed[0])))
	if header := run(b, chromedp.Nodes(chromedp.CSSAll("header, nav"), chromedp.AtLeast(0), chromedp.FromNode(embed[0]))); len(header) > 0 {
		t.Errorf("the embedded replay has a header or a nav")
	}
	b.do(chromedp.Click(chromedp.CSS("#replay-fwd"), chromedp.FromNode(embed[0])),
		chromedp.WaitReady(chromedp.CSS(`#replay-target .replay-frame[data-frame="1"]`), chromedp.FromNode(embed[0])))
	b.screenshot(exportShots(t), "embed-in-wiki-1280x800.png")
	// Once the wiki has loaded (its frames included), the plain replay's
	// frame holds no replay: chromium refused to show it.
	b.poll("the wiki loaded", `document.readyState === "complete"`)
	plain := run(b, chromedp.Nodes(chromedp.CSS("iframe#plain")))
	if n := run(b, chromedp.Nodes(chromedp.CSSAll("#player"), chromedp.AtLeast(0), chromedp.FromNode(plain[0]))); len(n) > 0 {
		t.Errorf("the replay without embed=1 shows in another site's frame")
	}
}
