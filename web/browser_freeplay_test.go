package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/rlslab/rlslab/sessions"
)

// domPlay is a free-play result as the panel shows it.
type domPlay struct {
	PID      uint32 `json:"pid"`
	Leak     bool   `json:"leak"`
	SQLState string `json:"sqlstate"`
	Refused  bool   `json:"refused"`
	Text     string `json:"text"`
}

// sendPlay fills the free-play form and presses Send, and returns the
// result the panel swapped in.
func (b *tab) sendPlay(tenant, pattern, connection, sql string) domPlay {
	b.t.Helper()
	b.do(
		chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`document.getElementById("free-play-result").innerHTML = "";
			document.getElementById("free-play-tenant").value = %q;
			document.getElementById("free-play-pattern").value = %q;
			document.getElementById("free-play-connection").value = %q;
			document.getElementById("free-play-sql").value = %q;`, tenant, pattern, connection, sql)),
		chromedp.Click(chromedp.ID("free-play-send")),
	)
	return run(b, chromedp.Poll[domPlay](`(function () {
		var r = document.querySelector("#free-play-result .free-play-out");
		if (!r) return null;
		return {pid: parseInt(r.getAttribute("data-pid"), 10), leak: r.getAttribute("data-leak") === "true",
			sqlstate: r.getAttribute("data-sqlstate"), refused: r.getAttribute("data-refused") === "true",
			text: r.textContent.replace(/\s+/g, " ").trim()};
	})()`, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(actionTimeout)))
}

// TestBrowserFreePlay reproduces the seed's leak by hand in the lab page's
// free-play panel: Acme with session-set on connection 1, then Globex
// forgetting on the same connection. The panel flags the leak with the
// backend's PID, and a watcher's live view shows the same leaking request
// on the same backend; the watcher has no panel.
func TestBrowserFreePlay(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2, SQLTimeout: 300 * time.Millisecond})
	browser := newBrowser(t)
	owner := newTab(t, browser, "owner")
	owner.open(ts.URL + "/lessons/set-leak")
	id := owner.labID()
	owner.open(ts.URL + "/labs/" + id)
	watcher := newTab(t, browser, "watcher")
	watcher.open(ts.URL + "/labs/" + id)
	if run(watcher, chromedp.Evaluate[bool](`!!document.getElementById("free-play")`)) {
		t.Errorf("a watcher got the free-play panel")
	}

	acme := owner.sendPlay("Acme", "session-set", "1", "")
	if acme.PID == 0 || acme.Leak || acme.SQLState != "" {
		t.Fatalf("Acme, session-set on connection 1: %+v", acme)
	}
	globex := owner.sendPlay("Globex", "forgot", "1", "")
	if !globex.Leak || globex.PID != acme.PID {
		t.Fatalf("Globex, forgot on connection 1: %+v, want a leak on backend %d", globex, acme.PID)
	}
	// The watcher's live view shows the leak on that backend.
	leak := run(watcher, chromedp.Poll[domRow](fmt.Sprintf(`(function () {
		var r = document.querySelector('#live .req-row[data-leak="true"][data-pid="%d"]');
		return r ? {seq: parseInt(r.getAttribute("data-seq"), 10), pid: parseInt(r.getAttribute("data-pid"), 10), leak: true, text: r.textContent.replace(/\s+/g, " ").trim()} : null;
	})()`, acme.PID), chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(actionTimeout)))
	if leak.Seq != 2 {
		t.Errorf("watcher's leaking row: %+v, want request #2", leak)
	}
	// A hostile statement is cancelled, and says so in the panel.
	slow := owner.sendPlay("", "forgot", "1", "SELECT pg_sleep(60)")
	if slow.SQLState != "57014" || slow.PID != acme.PID {
		t.Errorf("pg_sleep(60): %+v", slow)
	}
	refused := owner.sendPlay("", "forgot", "1", "DROP TABLE invoices")
	if !refused.Refused {
		t.Errorf("DROP TABLE: %+v", refused)
	}
	// Several at once: each copy a request of its own, every result shown.
	owner.do(chromedp.Evaluate[chromedp.Void](`document.getElementById("free-play-times").value = "3";`))
	owner.sendPlay("Initech", "tx-local", "", "")
	shown := run(owner, chromedp.Poll[[]domPlay](`(function () {
		var rs = document.querySelectorAll("#free-play-result .free-play-out");
		if (rs.length < 3) return null;
		return Array.from(rs, function (r) { return {pid: parseInt(r.getAttribute("data-pid"), 10), leak: r.getAttribute("data-leak") === "true"}; });
	})()`, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(actionTimeout)))
	if len(shown) != 3 {
		t.Errorf("three at once: the panel shows %+v, want three results", shown)
	}
	for _, r := range shown {
		if r.PID == 0 || r.Leak {
			t.Errorf("three at once as Initech, tx-local: %+v", r)
		}
	}
	checkNoOverflow(t, owner, "the lab page with free play")
}
