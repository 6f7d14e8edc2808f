package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/web"
)

// TestBrowserKeepsItsLabBehindRoundRobin runs two instances on one server
// with no HAProxy in front, as behind a plain round-robin balancer: a
// browser whose lab the second instance runs asks the first one for a lab
// and for a lesson page, and gets its own lab both times (the first
// forwards them to the second, which knows the browser's lab), not a new
// one; a browser without a lab gets one from the instance it asked.
func TestBrowserKeepsItsLabBehindRoundRobin(t *testing.T) {
	t.Parallel()
	srv := pgenvtest.MustServer(t)
	tmp := traversableTempDir(t)
	a := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", uniqueName("rr-a"), "-proxy-addr", "off")
	b := startServeChild(t, tmp, "-addr", "127.0.0.1:0", "-db", srv.URL, "-spares", "-1", "-instance", uniqueName("rr-b"), "-proxy-addr", "off")
	baseA, baseB := a.listening(t, 60*time.Second), b.listening(t, 60*time.Second)

	c := client(t)
	mine := newLab(t, c, baseB)
	if again := newLab(t, c, baseA); again != mine {
		t.Errorf("POST /labs on the other instance: lab %s, want the browser's lab %s", again, mine)
	}
	resp, err := c.Get(baseA + "/lessons/set-leak")
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), mine) {
		t.Errorf("a lesson page from the other instance: %d, without the browser's lab %s", resp.StatusCode, mine)
	}
	if tag := resp.Header.Get(web.TagHeader); tag == "" || strings.HasPrefix(mine, tag) {
		t.Errorf("the forwarded page's %s: %q, want the tag of the instance asked", web.TagHeader, tag)
	}

	// A browser without a lab gets one where it asked.
	other := newLab(t, client(t), baseA)
	if other[:2] == mine[:2] {
		t.Errorf("a new browser's lab from the first instance %s has the second's tag (%s)", other, mine)
	}
}
