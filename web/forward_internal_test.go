package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzLabOfPath: the lab id read from a path is the whole segment after
// /labs/, never contains a slash, and is empty for any other path.
func FuzzLabOfPath(f *testing.F) {
	for _, p := range []string{"/labs/0a1b2c3d", "/labs/0a1b2c3d/ws", "/labs/", "/lessons/x", "/labs//x", "/labsx/1"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		id := labOfPath(p)
		if strings.Contains(id, "/") {
			t.Fatalf("labOfPath(%q) = %q holds a slash", p, id)
		}
		if !strings.HasPrefix(p, "/labs/") && id != "" {
			t.Fatalf("labOfPath(%q) = %q for a path outside /labs/", p, id)
		}
		if id != "" && !strings.HasPrefix(p, "/labs/"+id) {
			t.Fatalf("labOfPath(%q) = %q is not the segment after /labs/", p, id)
		}
	})
}

// TestForwarderSendsABrowsersRequestsToItsLab: a request outside
// /labs/{id} from a browser whose lab cookie names another instance's lab
// is forwarded there (marked as forwarded); its health checks and static
// files, a browser without a lab or with a lab of this instance, and a
// request already forwarded are served here.
func TestForwarderSendsABrowsersRequestsToItsLab(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "other:"+r.Header.Get(ForwardedHeader))
	}))
	defer other.Close()
	otherAddr := strings.TrimPrefix(other.URL, "http://")
	locate := func(_ context.Context, id string) (string, string, error) {
		if strings.HasPrefix(id, "bb") {
			return "b", otherAddr, nil
		}
		return "", "", nil
	}
	here := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "here") })
	f := NewForwarder(here, locate, "a", "aa", nil)
	for _, c := range []struct {
		path, cookie, forwarded, want string
	}{
		{"/lessons/set-leak", "bb000001", "", "other:a"},
		{"/labs", "bb000001.aa000002", "", "other:a"},
		{"/lessons/set-leak", "aa000002.bb000001", "", "here"},
		{"/lessons/set-leak", "", "", "here"},
		{"/lessons/set-leak", "not-a-lab", "", "here"},
		{"/healthz", "bb000001", "", "here"},
		{"/static/app.js", "bb000001", "", "here"},
		{"/lessons/set-leak", "bb000001", "b", "here"},
		{"/labs/bb000003/state.json", "", "", "other:a"},
	} {
		r := httptest.NewRequest("GET", c.path, nil)
		if c.cookie != "" {
			r.AddCookie(&http.Cookie{Name: LabCookie, Value: c.cookie})
		}
		if c.forwarded != "" {
			r.Header.Set(ForwardedHeader, c.forwarded)
		}
		w := httptest.NewRecorder()
		f.ServeHTTP(w, r)
		if got := w.Body.String(); got != c.want {
			t.Errorf("%s with lab cookie %q (forwarded %q): %q, want %q", c.path, c.cookie, c.forwarded, got, c.want)
		}
		if tag := w.Header().Get(TagHeader); tag != "aa" {
			t.Errorf("%s: %s %q, want this instance's", c.path, TagHeader, tag)
		}
	}
}
