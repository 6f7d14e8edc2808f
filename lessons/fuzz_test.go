package lessons

import (
	"strings"
	"testing"
)

// fuzzCatalog is a catalog of one scenario for the fuzzer.
type fuzzCatalog struct{}

func (fuzzCatalog) Variants(id string) ([]string, bool) {
	if id == "s" {
		return []string{"a", "b"}, true
	}
	return nil, false
}

// FuzzHeader feeds arbitrary lesson files to the header parser. It must
// never panic; what it accepts must be consistent (known variants, 2 to 4
// choices, conditions that print back to themselves and evaluate without
// panicking on any run).
func FuzzHeader(f *testing.F) {
	f.Add("---\nslug: x\ntitle: X\nscenario: s\nexpect: a: leaks >= 1\nexpect: b: leaks == 0 && errors == 0\n---\nbody\n")
	f.Add("---\nslug: x\ntitle: X\nscenario: s\nvariants: a\nexpect: a: sqlstate(\"42501\") == 1 || (metric(\"m x\") > 2.5 && ratio(\"r\") < ratio(\"q\"))\npredict: a: Q?\n  - one => leaks >= 1\n  - two => leaks == 0\n---\nbody\n")
	f.Add("---\r\nslug: x\r\ntitle: X\r\nscenario: s\r\nvariants: a\r\nexpect: a: seen_null != 0\r\n# c\r\npredict: a: Q: with a colon?\r\n  - x => y => foreign_rows <= 3\r\n  - z => requests > 0\r\n---\r\nbody\r\n")
	f.Fuzz(func(t *testing.T, file string) {
		l, _, err := parseHeader("f.md", []byte(file), fuzzCatalog{})
		if err != nil {
			return
		}
		runs := []Observed{{}, {Requests: 3, Leaks: 1, Errors: 2, ForeignRows: 3, SeenNull: 1, SeenEmpty: 1,
			SQLStates: map[string]int{"42501": 1}, Metrics: map[string]float64{"m x": 3}, Ratios: map[string]float64{"r": 1, "q": 2}}}
		check := func(c Condition) {
			again, err := ParseCondition(c.String())
			if err != nil || again.String() != c.String() {
				t.Fatalf("condition %q does not parse back: %v", c, err)
			}
			for _, o := range runs {
				ok1, err1 := c.Eval(o)
				ok2, err2 := again.Eval(o)
				if ok1 != ok2 || (err1 == nil) != (err2 == nil) {
					t.Fatalf("condition %q evaluates differently after a round trip", c)
				}
				_ = c.Explain(o)
			}
		}
		for _, e := range l.Expect {
			if !contains(l.Variants, e.Variant) {
				t.Fatalf("expect for unknown variant %q accepted", e.Variant)
			}
			check(e.When)
		}
		for _, p := range l.Predictions {
			if !contains(l.Variants, p.Variant) || len(p.Choices) < minChoices || len(p.Choices) > maxChoices {
				t.Fatalf("bad prediction accepted: %+v", p)
			}
			for _, c := range p.Choices {
				if c.Text == "" || strings.Contains(c.When.String(), "=>") {
					t.Fatalf("bad choice accepted: %+v", c)
				}
				check(c.When)
			}
			for _, o := range runs {
				_, _ = p.Answer(o)
				_, _ = p.Check(0, o)
			}
		}
		for _, v := range l.Variants {
			if len(l.ExpectationsFor(v)) == 0 {
				t.Fatalf("variant %q without expect: accepted", v)
			}
		}
	})
}

// FuzzCondition parses arbitrary conditions: no panic, and an accepted
// condition prints back to itself.
func FuzzCondition(f *testing.F) {
	for _, s := range []string{"leaks >= 1", "leaks == 0 && errors == 0", `sqlstate("42P05") == 2`,
		`metric("users refused (53300)") >= 1 || ratio("four-trips") > 1.5`, "((leaks > 0))", "1 < leaks"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			return
		}
		again, err := ParseCondition(c.String())
		if err != nil || again.String() != c.String() {
			t.Fatalf("%q does not parse back: %v", s, err)
		}
		_, _ = c.Eval(Observed{})
		_ = c.Explain(Observed{})
	})
}
