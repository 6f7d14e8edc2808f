package web_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/sessions"
)

// codeFormRE finds the form that asks for a join code, and where it goes.
var codeFormRE = regexp.MustCompile(`<form class="[^"]*join-code-form[^"]*" method="get" action="([^"]*)">`)

// TestJoinLinkWithoutCodeAsksForIt opens a workshop's join link without
// its ?code= (and the home page's /join with an empty one): the page asks
// for the code, with no error (it said "no open workshop has that join
// code"), and sends it where the code leads on to the name form. Asking
// counts no wrong code against the address.
func TestJoinLinkWithoutCodeAsksForIt(t *testing.T) {
	t.Parallel()
	s := mustStartServer(t, sessions.Config{MaxLabs: 2, Spares: -1})
	w := mustCreateWorkshop(t, s, "Codes", "set-leak")
	c := newBrowserClient(t)
	joinPath := "/workshops/" + w.ID + "/join"
	for _, tc := range []struct{ path, action string }{
		{joinPath, joinPath},
		{joinPath + "?code=", joinPath},
		{joinPath + "?code=%20", joinPath},
		{"/join", "/join"},
		{"/join?code=", "/join"},
	} {
		code, page := do(t, c, "GET", s.URL+tc.path, "", "")
		m := codeFormRE.FindStringSubmatch(page)
		if code != http.StatusOK || m == nil || m[1] != tc.action || !strings.Contains(page, `name="code"`) {
			t.Errorf("GET %s: %d, code form %v, want one sent to %s: %.600s", tc.path, code, m, tc.action, page)
		}
		if strings.Contains(page, "no open workshop") || strings.Contains(page, `role="alert"`) || strings.Contains(page, "Codes") {
			t.Errorf("GET %s shows an error or the workshop's title before the code: %.600s", tc.path, page)
		}
	}
	// The form's GET, with the code typed in, is the name form.
	code, page := do(t, c, "GET", s.URL+joinPath+"?code="+w.Code, "", "")
	if code != http.StatusOK || !strings.Contains(page, `name="name"`) || !strings.Contains(page, "Codes") {
		t.Errorf("the join page with its code: %d %.400s", code, page)
	}
	code, _ = do(t, c, "GET", s.URL+"/join?code="+w.Code, "", "")
	if code != http.StatusSeeOther {
		t.Errorf("/join with the code: %d, want 303 to the name form", code)
	}
	// Asking for the code 40 times is no guessing: the right code still
	// works from this address (30 wrong ones a minute block it).
	for range 40 {
		do(t, c, "GET", s.URL+joinPath, "", "")
	}
	if code, body := do(t, c, "GET", s.URL+joinPath+"?code="+w.Code, "", ""); code != http.StatusOK {
		t.Errorf("after 40 asks for the code, the right one: %d %.200s", code, body)
	}
	// A JSON client without a code still gets the look-up's answer.
	if code, _ := do(t, c, "GET", s.URL+joinPath, "", "", "Accept", ctJSON); code != http.StatusNotFound {
		t.Errorf("JSON join page without a code: %d, want 404", code)
	}
}
