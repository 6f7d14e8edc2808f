package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// browserAccept is the Accept header chromium sends with a page or a form.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// TestFormErrorsAreErrorPages posts the forms a browser sends without htmx
// (join a workshop that has ended or never was, create a workshop with no
// title, reset a lab that is gone) as a browser does: each answer is the
// error page, in HTML, with the reason (a participant joining after the
// end got raw JSON). A client that asks for nothing in particular still
// gets JSON.
func TestFormErrorsAreErrorPages(t *testing.T) {
	t.Parallel()
	ts := mustStartServer(t, sessions.Config{MaxLabs: 2})
	c := newBrowserClient(t)
	for _, f := range []struct {
		path, body string
		status     int
		says       string
	}{
		{"/workshops/AAAAAAAAAAAAAAAA/join?code=ZZZZZZ", "name=Ann", http.StatusNotFound, "no open workshop has that join code"},
		{"/workshops", "title=&lessons=set-leak", http.StatusBadRequest, "the title is empty"},
		{"/labs/abcdef12/reset", "", http.StatusNotFound, "no lab"},
	} {
		code, page := do(t, c, "POST", ts.URL+f.path, ctForm, f.body, "Accept", browserAccept)
		if code != f.status || !strings.HasPrefix(page, "<!doctype html>") || !strings.Contains(page, f.says) || !strings.Contains(page, `id="theme-toggle"`) {
			t.Errorf("POST %s as a browser: %d %.300s", f.path, code, page)
		}
		code, body := do(t, c, "POST", ts.URL+f.path, ctForm, f.body)
		if code != f.status || !strings.HasPrefix(strings.TrimSpace(body), "{") {
			t.Errorf("POST %s with no Accept: %d %.300s", f.path, code, body)
		}
	}
}
