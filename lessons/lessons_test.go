package lessons_test

import (
	"fmt"
	"slices"
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
	// head builds a header for set-leak's session-set only; extra goes
	// after line 6 (the expect: line), so its first line is line 7.
	head := func(extra string) string {
		return "---\nslug: x\ntitle: X\nscenario: set-leak\nvariants: session-set\nexpect: session-set: leaks >= 1\n" + extra + "---\nbody\n"
	}
	choices := "  - a => leaks >= 1\n  - b => leaks == 0\n"
	cases := map[string]struct{ file, want string }{
		"unknown scenario":         {"---\nslug: x\ntitle: X\nscenario: nope\n---\nbody\n", `unknown scenario "nope"`},
		"unknown variant":          {"---\nslug: x\ntitle: X\nscenario: set-leak\nvariants: session-set, nope\n---\nbody\n", `no variant "nope"`},
		"no header":                {"# just markdown\n", "must start with a --- header"},
		"unknown key":              {head("colour: red\n"), `bad.md:7: unknown header key "colour"`},
		"bad slug":                 {"---\nslug: X Y\ntitle: X\nscenario: set-leak\nexpect: session-set: leaks >= 1\n---\nbody\n", "slug"},
		"empty body":               {head("")[:len(head(""))-len("body\n")] + "\n", "empty body"},
		"no expect":                {"---\nslug: x\ntitle: X\nscenario: set-leak\nvariants: session-set, tx-local\nexpect: session-set: leaks >= 1\n---\nbody\n", "variant tx-local has no expect: line"},
		"expect unknown variant":   {head("expect: tx-local: leaks == 0\n"), `bad.md:7: expect: unknown variant "tx-local"`},
		"expect bad expression":    {head("expect: session-set: leaks >=\n"), "bad.md:7: expect session-set: condition ends where a value should be"},
		"expect unknown name":      {head("expect: session-set: leak >= 1\n"), `bad.md:7: expect session-set: unknown name "leak"`},
		"expect no condition":      {head("expect: session-set\n"), "bad.md:7: expect: want"},
		"expect two numbers":       {head("expect: session-set: 1 == 1\n"), "bad.md:7: expect session-set: 1 == 1 compares two numbers"},
		"bad sqlstate":             {head(`expect: session-set: sqlstate("4250") == 1` + "\n"), `bad.md:7: expect session-set: sqlstate("4250")`},
		"predict unknown variant":  {head("predict: tx-local: Q?\n" + choices), `bad.md:7: predict: unknown variant "tx-local"`},
		"choice without condition": {head("predict: session-set: Q?\n  - a => leaks >= 1\n  - b\n"), `bad.md:9: choice "b" has no condition`},
		"choice empty condition":   {head("predict: session-set: Q?\n  - a => leaks >= 1\n  - b =>\n"), `bad.md:9: choice "b" has no condition after =>`},
		"choice bad condition":     {head("predict: session-set: Q?\n  - a => leaks >= 1\n  - b => leaks = 0\n"), `bad.md:9: choice "b": unexpected character '='`},
		"choice without predict":   {head("  - a => leaks >= 1\n"), `bad.md:7: choice "- a => leaks >= 1" is not under a predict: line`},
		"one choice":               {head("predict: session-set: Q?\n  - a => leaks >= 1\n"), "bad.md:7: predict session-set: 1 choices, want 2 to 4"},
		"five choices":             {head("predict: session-set: Q?\n" + strings.Repeat(choices, 2) + "  - e => errors == 0\n"), "bad.md:7: predict session-set: 5 choices"},
		"same choice twice":        {head("predict: session-set: Q?\n  - a => leaks >= 1\n  - a => leaks == 0\n"), `choice "a" given twice`},
		"two predictions":          {head("predict: session-set: Q?\n" + choices + "predict: session-set: R?\n" + choices), "bad.md:10: predict session-set: a second question for the variant (the first is on line 7)"},
		"choices cut by a key":     {head("predict: session-set: Q?\n  - a => leaks >= 1\norder: 2\n  - b => leaks == 0\n"), `bad.md:10: choice "- b => leaks == 0" is not under a predict: line`},
	}
	for name, tc := range cases {
		_, err := lessons.Load(fstest.MapFS{"bad.md": {Data: []byte(tc.file)}}, cat)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bad.md") {
			t.Errorf("%s: got %v, want an error naming bad.md and %q", name, err, tc.want)
		}
	}
	two := fstest.MapFS{"a.md": {Data: []byte(head(""))}, "b.md": {Data: []byte(head(""))}}
	good := head("# a comment\npredict: session-set: Q?\n" + choices)
	set, err := lessons.Load(fstest.MapFS{"good.md": {Data: []byte(good)}}, cat)
	if err != nil {
		t.Fatalf("a good header: %v", err)
	}
	l := set.All()[0]
	p, ok := l.Prediction("session-set")
	if !ok || len(p.Choices) != 2 || p.Question != "Q?" || p.Line != 8 || len(l.ExpectationsFor("session-set")) != 1 || l.Expect[0].Line != 6 {
		t.Errorf("a good header: %+v", l)
	}
	if _, err := lessons.Load(two, cat); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("duplicate slug: %v", err)
	}
}

// TestEveryLessonRuns runs every variant of every lesson's scenario at full
// speed on a real server, as the Tour of Go's content test runs every
// snippet: a lesson whose scenario fails does not ship. Each variant's run
// must satisfy the lesson's expect: lines, and fit exactly one choice of the
// variant's prediction, so what the prose claims is asserted on the server.
// It also samples pg_stat_activity through each run: the lab's database
// never holds more backends than the variant declares it needs; and the
// run's last narration starts with the outcome (engine.Judge's headline).
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
				// The run must fit the connections it declares: what the
				// lab manager admits it with.
				need := sc.Need(v.Name, nil, lab.Sandbox)
				sessionstest.WaitNoBackends(t, m, lab)
				stop := sessionstest.PeakBackends(m, lab)
				st, err := sessionstest.Run(lab, sc.ID, v.Name, nil)
				peak := stop()
				if err != nil || st.Status != engine.StatusDone {
					t.Errorf("%s/%s: status %q, error %v", sc.ID, v.Name, st.Status, err)
					continue
				}
				if need <= 0 || peak > need {
					t.Errorf("%s/%s: %d backends at the peak, declared need %d", sc.ID, v.Name, peak, need)
				}
				if len(st.Requests) == 0 && len(st.Timings) == 0 && len(st.Metrics) == 0 {
					t.Errorf("%s/%s: the run showed nothing", sc.ID, v.Name)
				}
				// The last narration line states the outcome, derived from
				// what the run observed (its request log and findings).
				if want := engine.Judge(st, lab.Sandbox.TenantName).Headline; !strings.HasPrefix(st.Narration, want) {
					t.Errorf("%s/%s: the last narration is %q, want it to start with the outcome %q", sc.ID, v.Name, st.Narration, want)
				}
				if !slices.Contains(l.Variants, v.Name) {
					continue
				}
				o := observed(st)
				for _, e := range l.ExpectationsFor(v.Name) {
					if err := e.Check(o); err != nil {
						t.Errorf("lesson %s (%s), variant %s: %v", l.Slug, l.Source, v.Name, err)
					}
				}
				if p, ok := l.Prediction(v.Name); ok {
					if _, err := p.Answer(o); err != nil {
						t.Errorf("lesson %s (%s:%d), variant %s: %v (%s)", l.Slug, l.Source, p.Line, v.Name, err, explainChoices(p, o))
					}
				}
			}
		})
	}
}

// observed counts a run's final state the way the web shows it.
func observed(st engine.State) lessons.Observed {
	reqs := make([]lessons.Request, len(st.Requests))
	for i, r := range st.Requests {
		reqs[i] = lessons.Request{Leak: r.Leak, Error: r.Error, SQLState: r.SQLState, ForeignRows: r.ForeignRows, SeenTenant: r.SeenTenant}
	}
	metrics := map[string]float64{}
	for _, m := range st.Metrics {
		metrics[m.Name] = m.Number
	}
	return lessons.Observe(reqs, metrics, st.Ratios)
}

func explainChoices(p lessons.Prediction, o lessons.Observed) string {
	var parts []string
	for _, c := range p.Choices {
		parts = append(parts, fmt.Sprintf("%q: %s", c.Text, c.When.Explain(o)))
	}
	return strings.Join(parts, "; ")
}
