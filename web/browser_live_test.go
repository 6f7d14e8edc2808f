package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
)

// domPolicy is the policy box as the browser shows it.
type domPolicy struct {
	Hidden  bool   `json:"hidden"`
	Table   string `json:"table"`
	Using   string `json:"using"`
	Enabled string `json:"enabled"`
	Force   string `json:"force"`
}

// policyBox reads the live view's policy box.
func policyBox(b *tab) domPolicy {
	b.t.Helper()
	return run(b, chromedp.Evaluate[domPolicy](`(function () {
		var s = document.getElementById("hidden-vars");
		function text(sel) { var e = s.querySelector(sel); return e ? e.textContent.replace(/\s+/g, " ").trim() : ""; }
		function attr(sel, a) { var e = s.querySelector(sel); return e ? e.getAttribute(a) : ""; }
		return {hidden: s.hidden, table: text("dl.policy dd code"), using: text("code.using"),
			enabled: attr("[data-rls-enabled]", "data-rls-enabled"), force: attr("[data-rls-force]", "data-rls-force")};
	})()`))
}

// runLesson opens the lesson page, runs variant at full speed and returns
// the run's state.json.
func runLesson(t *testing.T, ts *testServer, b *tab, lesson, variant string) engine.State {
	t.Helper()
	b.open(ts.URL + "/lessons/" + lesson)
	id := b.labID()
	since := b.pressRun(variant, "max")
	b.waitDone(since)
	waitRunEnd(t, ts.Labs, id)
	return fetchState(t, ts.URL, id)
}

// checkNoOverflow checks that the page is no wider than a phone's screen
// and a laptop's.
func checkNoOverflow(t *testing.T, b *tab, page string) {
	t.Helper()
	for _, sz := range [][2]int64{{390, 844}, {1280, 720}} {
		b.do(chromedp.EmulateViewport(sz[0], sz[1]))
		got := run(b, chromedp.Evaluate[[]int](`[document.documentElement.scrollWidth, window.innerWidth]`))
		if got[0] > got[1] {
			t.Errorf("%s at %dx%d: the page is %d px wide in a %d px window", page, sz[0], sz[1], got[0], got[1])
		}
	}
	b.do(chromedp.EmulateViewport(browserWidth, browserHeight))
}

// TestBrowserHiddenVariables runs the lessons whose point no query
// returns, and finds it in the DOM: the policy in force (read from the
// catalog) for unset-setting and rls-bypass, the shared field in
// wrong-scope's timeline, and PgBouncer's clients as lanes of their own,
// each request joined to the server lane its query ran on.
func TestBrowserHiddenVariables(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 4})
	browser := newBrowser(t)

	t.Run("unset-setting", func(t *testing.T) {
		b := newTab(t, browser, "learner")
		st := runLesson(t, ts, b, "unset-setting", "fail-open")
		got := policyBox(b)
		if st.Policy == nil {
			t.Fatal("state.json has no policy")
		}
		want := domPolicy{Table: "invoices", Using: st.Policy.Using, Enabled: "true", Force: "true"}
		if got != want || !strings.HasPrefix(got.Using, "CASE WHEN") {
			t.Errorf("policy box %+v, want %+v (fail-open's CASE policy, as pg_policies prints it)", got, want)
		}
		shots(t, b, "policy-unset-setting", "hidden-vars")
		checkNoOverflow(t, b, "unset-setting")
	})

	t.Run("rls-bypass", func(t *testing.T) {
		b := newTab(t, browser, "learner")
		runLesson(t, ts, b, "rls-bypass", "owner")
		// The owner variant's NO FORCE, as its own transaction read it.
		if got := policyBox(b); got.Hidden || got.Table != "invoices" || got.Force != "false" || got.Enabled != "true" || !strings.Contains(got.Using, "NULLIF(current_setting('app.current_tenant'::text, true)") {
			t.Errorf("owner: policy box %+v, want invoices' NULLIF policy, RLS on, FORCE off", got)
		}
		since := b.pressRun("owner-forced", "max")
		b.waitDone(since)
		if got := policyBox(b); got.Force != "true" {
			t.Errorf("owner-forced: policy box %+v, want FORCE on", got)
		}
		shots(t, b, "policy-rls-bypass", "hidden-vars")
		checkNoOverflow(t, b, "rls-bypass")
	})

	t.Run("wrong-scope", func(t *testing.T) {
		b := newTab(t, browser, "learner")
		st := runLesson(t, ts, b, "wrong-scope", "global")
		marks := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#tl-lane-field g.tl-mark text")).map(function (e) { return e.textContent; })`))
		if strings.Join(marks, " ") != "W#1 W#2 R#1 R#2" || len(st.SharedField) != 4 {
			t.Errorf("shared field lane marks %v (state.json has %d readings), want W#1 W#2 R#1 R#2", marks, len(st.SharedField))
		}
		bands := run(b, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#tl-lane-field g.tl-band")).map(function (e) { return e.getAttribute("data-tenant"); })`))
		if strings.Join(bands, " ") != "1 2" {
			t.Errorf("shared field bands %v, want Acme's (1) then Globex's (2)", bands)
		}
		shots(t, b, "shared-field", "timeline")
		checkNoOverflow(t, b, "wrong-scope")
	})

	t.Run("pgbouncer-tx", func(t *testing.T) {
		b := newTab(t, browser, "learner")
		st := runLesson(t, ts, b, "pgbouncer-tx", engine.PatternSessionSet)
		type lane struct {
			Client string  `json:"client"`
			Seqs   []int   `json:"seqs"`
			Y      float64 `json:"y"`
		}
		clients := run(b, chromedp.Evaluate[[]lane](`Array.from(document.querySelectorAll("#timeline g.tl-lane[data-kind=client]")).map(function (g) {
			return {client: g.getAttribute("data-client"), y: g.querySelector("g.tl-block rect").getBBox().y,
				seqs: Array.from(g.querySelectorAll("g.tl-block")).map(function (e) { return parseInt(e.getAttribute("data-seq"), 10); })};
		})`))
		if len(clients) != 3 {
			t.Fatalf("client lanes %+v, want app-1, app-2 and app-3", clients)
		}
		servers := run(b, chromedp.Evaluate[map[string]float64](`(function () {
			var out = {};
			document.querySelectorAll("#timeline g.tl-lane[data-kind=backend]").forEach(function (g) {
				var r = g.querySelector("g.tl-block rect"); if (r) out[g.getAttribute("data-pid")] = r.getBBox().y;
			});
			return out;
		})()`))
		pairs := run(b, chromedp.Evaluate[map[string][]float64](`(function () {
			var out = {};
			document.querySelectorAll("#timeline line.tl-pair").forEach(function (l) {
				out[l.getAttribute("data-seq")] = [parseFloat(l.getAttribute("y1")), parseFloat(l.getAttribute("y2"))];
			});
			return out;
		})()`))
		onClient := map[int]string{}
		for _, c := range clients {
			for _, s := range c.Seqs {
				onClient[s] = c.Client
			}
		}
		for _, r := range st.Requests {
			if want := r.Pool + " #1"; onClient[r.Seq] != want {
				t.Errorf("request #%d: on client lane %q, sent by %s", r.Seq, onClient[r.Seq], want)
			}
			p, ok := pairs[fmt.Sprint(r.Seq)]
			if sy, has := servers[fmt.Sprint(r.PID)]; !ok || !has || p[1] != sy {
				t.Errorf("request #%d: the pair line %v does not reach the block on server %d (y %v)", r.Seq, p, r.PID, sy)
			}
		}
		shots(t, b, "pgbouncer-clients", "timeline")
		checkNoOverflow(t, b, "pgbouncer-tx")
	})
}

// shots saves screenshots of the live view (phone, laptop, big screen;
// light and dark) into the directory RLSLAB_SHOTS names, for a person to
// look at; without it, nothing is taken.
func shots(t *testing.T, b *tab, name, id string) {
	t.Helper()
	dir := os.Getenv("RLSLAB_SHOTS")
	if dir == "" {
		return
	}
	for _, s := range []struct {
		w, h   int64
		scheme string
	}{{390, 844, "light"}, {1280, 720, "light"}, {1280, 720, "dark"}, {1920, 1080, "light"}, {1920, 1080, "dark"}} {
		b.do(
			chromedp.EmulateViewport(s.w, s.h),
			chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: s.scheme}}})
				return err
			}),
			chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`window.scrollTo(0, document.getElementById(%q).getBoundingClientRect().top + window.scrollY - document.getElementById("outcome").offsetHeight - 16)`, id)),
		)
		png := run(b, chromedp.CaptureScreenshot())
		out := filepath.Join(dir, fmt.Sprintf("%s-%dx%d-%s.png", name, s.w, s.h, s.scheme))
		if err := os.WriteFile(out, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b.do(chromedp.EmulateViewport(browserWidth, browserHeight), chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
		return err
	}))
}
