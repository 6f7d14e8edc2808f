package web

import (
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestPageAfterResume(t *testing.T) {
	for _, c := range []struct {
		current, lab, want string
	}{
		{"http://rlslab.example/lessons/set-leak", "new1", "/lessons/set-leak"},
		{"http://rlslab.example/lessons/set-leak?frame=2#x", "new1", "/lessons/set-leak?frame=2"},
		{"http://rlslab.example/labs/old1", "new1", "/labs/new1"},
		{"http://rlslab.example/labs/old1/present", "new1", "/labs/new1/present"},
		{"http://rlslab.example/labs/old10", "new1", "/labs/new1"}, // another lab's page
		{"http://rlslab.example/workshops/w1", "new1", "/labs/new1"},
		{"", "new1", "/labs/new1"},
		{"http://evil.example//evil.example/x", "new1", "/labs/new1"},
		{"http://rlslab.example/labs/old1", "", "/"}, // being prepared
		{"http://rlslab.example/lessons/set-leak", "", "/lessons/set-leak"},
	} {
		r := httptest.NewRequest("POST", "/labs/old1/runs", nil)
		if c.current != "" {
			r.Header.Set("HX-Current-URL", c.current)
		}
		if got := pageAfterResume(r, "old1", c.lab); got != c.want {
			t.Errorf("from %q to lab %q: %q, want %q", c.current, c.lab, got, c.want)
		}
	}
}

// FuzzPageAfterResume checks that whatever page htmx says it is on, the
// page to load instead is a path of this site: it starts with one slash,
// never two or a backslash (which a browser would take for another host),
// and holds no control character.
func FuzzPageAfterResume(f *testing.F) {
	for _, s := range []string{"http://h/lessons/set-leak", "http://h/labs/old1/present?x=1", "//evil", "http://h/lessons/\\evil", "/labs/old1//evil", "http://h/lessons/%0d%0a"} {
		f.Add(s, "new1")
	}
	f.Fuzz(func(t *testing.T, current, lab string) {
		if !plausibleLab(lab) {
			return
		}
		r := httptest.NewRequest("POST", "/labs/old1/runs", nil)
		r.Header["Hx-Current-Url"] = []string{current}
		got := pageAfterResume(r, "old1", lab)
		if !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.HasPrefix(got, "/\\") {
			t.Fatalf("from %q: %q leaves the site", current, got)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("from %q: %q holds a control character", current, got)
		}
		if u, err := url.Parse(got); err != nil || u.Host != "" || u.Scheme != "" {
			t.Fatalf("from %q: %q is not a path of this site (%v)", current, got, err)
		}
	})
}

// plausibleLab is what a lab id from the manager looks like.
func plausibleLab(id string) bool {
	if id == "" || len(id) > 32 {
		return id == ""
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// FuzzLabsOf: whatever the lab cookie holds, only lab ids come back, at
// most labsRemembered of them.
func FuzzLabsOf(f *testing.F) {
	f.Add("0a1b2c3d.ffffffff")
	f.Add("0a1b2c3d..<script>.FFFFFFFF.12345678901")
	f.Fuzz(func(t *testing.T, v string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Cookie", LabCookie+"="+v)
		ids := labsOf(r)
		if len(ids) > labsRemembered {
			t.Fatalf("%q: %d ids", v, len(ids))
		}
		for _, id := range ids {
			if !validLabID(id) {
				t.Fatalf("%q: %q is no lab id", v, id)
			}
		}
	})
}
