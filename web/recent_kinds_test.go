package web_test

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/sessions"
)

// TestRecentRunsNameEachOutcome runs side-channels' truncate (a breach:
// Acme's request wipes every tenant's contacts, no row leaks) and
// no-truncate (refused: failed closed) on the real server, and reads the
// lesson's "Your recent runs" fragment: each run's chip names its outcome
// kind in words, and neither says "no leak"; so do the truncate run's
// replay and export, and the comparison of the two.
func TestRecentRunsNameEachOutcome(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	code, body := do(t, c, "POST", ts.URL+"/labs", "", "", "Accept", "application/json")
	if code != http.StatusCreated {
		t.Fatalf("create lab: %d %s", code, body)
	}
	var lab struct{ ID string }
	if err := json.Unmarshal([]byte(body), &lab); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{scenarios.SideChannelsTruncate, scenarios.SideChannelsNoTruncate} {
		code, body := do(t, c, "POST", ts.URL+"/labs/"+lab.ID+"/runs", "application/json", `{"scenario":"side-channels","variant":"`+v+`","speed":"max"}`)
		if code != http.StatusAccepted {
			t.Fatalf("run %s: %d %s", v, code, body)
		}
		waitRunEnd(t, ts.Labs, lab.ID)
	}
	code, frag := do(t, c, "GET", ts.URL+"/labs/"+lab.ID+"/recent-runs?limit=5&scenario=side-channels", "", "")
	if code != http.StatusOK {
		t.Fatalf("recent runs: %d %s", code, frag)
	}
	chip := regexp.MustCompile(`data-variant="([\w-]+)"(?s:.*?)data-kind="([\w-]*)"><span class="sr-only">outcome: </span>([^<]+)</span>`)
	got := map[string]string{}
	for _, m := range chip.FindAllStringSubmatch(frag, -1) {
		got[m[1]] = m[2] + "|" + m[3]
	}
	for v, want := range map[string]string{
		scenarios.SideChannelsTruncate:   "breach|breach",
		scenarios.SideChannelsNoTruncate: "failed-closed|failed closed",
	} {
		if got[v] != want {
			t.Errorf("%s: chip %q, want %q", v, got[v], want)
		}
	}
	if strings.Contains(frag, "no leak") {
		t.Errorf("the recent runs say no leak: %s", frag)
	}
	ids := regexp.MustCompile(`<li data-run="([\w-]+)" data-variant="([\w-]+)"`).FindAllStringSubmatch(frag, -1)
	if len(ids) != 2 {
		t.Fatalf("runs listed: %v", ids)
	}
	fixed, truncate := ids[0][1], ids[1][1]
	const breach = `data-kind="breach"><span class="sr-only">outcome: </span>breach</span>`
	for _, u := range []string{"/runs/" + truncate, "/runs/" + truncate + "/export", "/runs/" + truncate + "/vs/" + fixed} {
		code, page := do(t, c, "GET", ts.URL+u, "", "")
		if code != http.StatusOK || !strings.Contains(page, breach) || strings.Contains(page, "leaked</span>") || strings.Contains(page, `"ok-chip">no leak`) {
			t.Errorf("GET %s: %d, no breach chip in %.3000s", u, code, page)
		}
	}
}
