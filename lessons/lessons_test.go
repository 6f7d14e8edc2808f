package lessons_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

func TestMain(m *testing.M) { pgenvtest.Main(m) }

func TestEmbeddedLessonsLoad(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	set, err := lessons.Load(lessons.Content(), cat)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.All()) == 0 {
		t.Fatal("no lessons")
	}
	for _, l := range set.All() {
		if !strings.Contains(string(l.HTML), "<h2") {
			t.Errorf("lesson %s: no sections", l.Slug)
		}
	}
	if _, err := set.Get("set-leak"); err != nil {
		t.Error(err)
	}
	if _, err := set.Get("nope"); err == nil {
		t.Error("unknown slug found")
	}
}

func TestBadLessonsStopTheLoad(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	head := func(extra string) string {
		return "---\nslug: x\ntitle: X\nscenario: set-leak\n" + extra + "---\nbody\n"
	}
	cases := map[string]struct{ file, want string }{
		"unknown scenario": {"---\nslug: x\ntitle: X\nscenario: nope\n---\nbody\n", `unknown scenario "nope"`},
		"unknown variant":  {head("variants: session-set, nope\n"), `no variant "nope"`},
		"no header":        {"# just markdown\n", "must start with a --- header"},
		"unknown key":      {head("colour: red\n"), `unknown header key "colour"`},
		"bad slug":         {"---\nslug: X Y\ntitle: X\nscenario: set-leak\n---\nbody\n", "slug"},
		"empty body":       {"---\nslug: x\ntitle: X\nscenario: set-leak\n---\n\n", "empty body"},
	}
	for name, tc := range cases {
		_, err := lessons.Load(fstest.MapFS{"bad.md": {Data: []byte(tc.file)}}, cat)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad.md") {
			t.Errorf("%s: got %v, want an error naming bad.md and %q", name, err, tc.want)
		}
	}
	two := fstest.MapFS{"a.md": {Data: []byte(head(""))}, "b.md": {Data: []byte(head(""))}}
	if _, err := lessons.Load(two, cat); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("duplicate slug: %v", err)
	}
}

// TestEveryLessonRuns runs every variant of every lesson's scenario at full
// speed on a real server, as the Tour of Go's content test runs every
// snippet: a lesson whose scenario fails does not ship.
func TestEveryLessonRuns(t *testing.T) {
	cat := scenarios.DefaultCatalog()
	set, err := lessons.Load(lessons.Content(), cat)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range set.All() {
		t.Run(l.Slug, func(t *testing.T) {
			t.Parallel()
			m := sessionstest.MustOpenManager(t, sessions.Config{MaxLabs: 1, Catalog: cat})
			lab := sessionstest.MustCreateLab(t, m, "owner")
			sc, err := cat.Lookup(l.Scenario)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range sc.Variants {
				st, err := sessionstest.Run(lab, sc.ID, v.Name, nil)
				if err != nil || st.Status != engine.StatusDone {
					t.Errorf("%s/%s: status %q, error %v", sc.ID, v.Name, st.Status, err)
					continue
				}
				if len(st.Requests) == 0 && len(st.Timings) == 0 && len(st.Metrics) == 0 {
					t.Errorf("%s/%s: the run showed nothing", sc.ID, v.Name)
				}
			}
		})
	}
}
