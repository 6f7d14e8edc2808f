package lessons

import (
	"fmt"
	"strings"
)

// Expectation is one expect: line of a lesson's header: what a run of the
// variant, with the scenario's default parameters, must show in data.
//
//	expect: session-set: leaks == 1 && foreign_rows == 3
type Expectation struct {
	Variant string
	When    Condition
	Line    int // the line of the lesson file it was read from
}

// Check returns nil if the expectation holds for o, otherwise an error that
// quotes the expectation and the values the run showed.
func (e Expectation) Check(o Observed) error {
	ok, err := e.When.Eval(o)
	switch {
	case err != nil:
		return fmt.Errorf("expect %s: %s (line %d): %w", e.Variant, e.When, e.Line, err)
	case !ok:
		return fmt.Errorf("expect %s: %s (line %d) does not hold: the run showed %s", e.Variant, e.When, e.Line, e.When.Explain(o))
	}
	return nil
}

// Prediction is the question a lesson asks before the first run of a
// variant. Each choice carries the condition under which the run proves it
// right, so an answer is checked against what the run showed, not against a
// stored letter.
//
//	predict: session-set: Globex's request forgot to scope. What does it get?
//	  - Acme's invoices => leaks >= 1
//	  - no invoices => leaks == 0 && errors == 0
//	  - an error => errors >= 1 && leaks == 0
type Prediction struct {
	Variant  string
	Question string
	Choices  []Choice
	Line     int // the line of the predict: line
}

// Choice is one answer to a prediction and the condition that makes it the
// one the run showed.
type Choice struct {
	Text string
	When Condition
}

// Verdict is a learner's answer to a prediction checked against a run.
type Verdict struct {
	Picked  int  // the choice the learner picked (index into Choices)
	Actual  int  // the choice the run showed
	Correct bool // Picked == Actual
}

// Answer returns the index of the one choice whose condition holds for o.
// It is an error when none or several hold (the lesson's choices do not
// cover what the run showed) or when a condition cannot be evaluated.
func (p Prediction) Answer(o Observed) (int, error) {
	found := -1
	for i, c := range p.Choices {
		ok, err := c.When.Eval(o)
		if err != nil {
			return -1, fmt.Errorf("predict %s, choice %q: %w", p.Variant, c.Text, err)
		}
		if !ok {
			continue
		}
		if found >= 0 {
			return -1, fmt.Errorf("predict %s: the run fits both %q and %q", p.Variant, p.Choices[found].Text, c.Text)
		}
		found = i
	}
	if found < 0 {
		return -1, fmt.Errorf("predict %s: the run fits none of the choices", p.Variant)
	}
	return found, nil
}

// Check judges the learner's choice picked against the run o.
func (p Prediction) Check(picked int, o Observed) (Verdict, error) {
	if picked < 0 || picked >= len(p.Choices) {
		return Verdict{}, fmt.Errorf("predict %s: no choice %d (it has %d)", p.Variant, picked, len(p.Choices))
	}
	actual, err := p.Answer(o)
	if err != nil {
		return Verdict{}, err
	}
	return Verdict{Picked: picked, Actual: actual, Correct: picked == actual}, nil
}

// Prediction returns the lesson's prediction for variant, if it has one.
func (l *Lesson) Prediction(variant string) (Prediction, bool) {
	for _, p := range l.Predictions {
		if p.Variant == variant {
			return p, true
		}
	}
	return Prediction{}, false
}

// ExpectationsFor returns the lesson's expect: lines for variant, in order.
func (l *Lesson) ExpectationsFor(variant string) []Expectation {
	var out []Expectation
	for _, e := range l.Expect {
		if e.Variant == variant {
			out = append(out, e)
		}
	}
	return out
}

// Bounds of a prediction.
const (
	minChoices     = 2
	maxChoices     = 4
	maxQuestionLen = 500
	maxChoiceLen   = 200
)

// lineError is a header problem at one line of the lesson file.
type lineError struct {
	line int
	err  error
}

func (e *lineError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }
func (e *lineError) Unwrap() error { return e.err }

func atLine(line int, format string, args ...any) error {
	return &lineError{line: line, err: fmt.Errorf(format, args...)}
}

// splitVariant splits "variant: rest" as written after expect: or predict:.
func splitVariant(v string) (variant, rest string, ok bool) {
	variant, rest, ok = strings.Cut(v, ":")
	variant, rest = strings.TrimSpace(variant), strings.TrimSpace(rest)
	return variant, rest, ok && variant != "" && rest != ""
}

// parseExpect reads the value of one expect: line.
func parseExpect(line int, v string) (Expectation, error) {
	variant, cond, ok := splitVariant(v)
	if !ok {
		return Expectation{}, atLine(line, "expect: want \"expect: VARIANT: CONDITION\"")
	}
	c, err := ParseCondition(cond)
	if err != nil {
		return Expectation{}, atLine(line, "expect %s: %v", variant, err)
	}
	return Expectation{Variant: variant, When: c, Line: line}, nil
}

// parsePredict reads the value of one predict: line; its choices follow.
func parsePredict(line int, v string) (Prediction, error) {
	variant, q, ok := splitVariant(v)
	if !ok {
		return Prediction{}, atLine(line, "predict: want \"predict: VARIANT: QUESTION\"")
	}
	if len(q) > maxQuestionLen {
		return Prediction{}, atLine(line, "predict %s: question longer than %d bytes", variant, maxQuestionLen)
	}
	return Prediction{Variant: variant, Question: q, Line: line}, nil
}

// parseChoice reads one "- TEXT => CONDITION" line under a predict: line.
func parseChoice(line int, s string) (Choice, error) {
	s = strings.TrimSpace(strings.TrimPrefix(s, "-"))
	i := strings.LastIndex(s, "=>")
	if i < 0 {
		return Choice{}, atLine(line, "choice %q has no condition: want \"- TEXT => CONDITION\"", s)
	}
	text, cond := strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+2:])
	switch {
	case text == "":
		return Choice{}, atLine(line, "choice without text before =>")
	case len(text) > maxChoiceLen:
		return Choice{}, atLine(line, "choice text longer than %d bytes", maxChoiceLen)
	case cond == "":
		return Choice{}, atLine(line, "choice %q has no condition after =>", text)
	}
	c, err := ParseCondition(cond)
	if err != nil {
		return Choice{}, atLine(line, "choice %q: %v", text, err)
	}
	return Choice{Text: text, When: c}, nil
}

// checkFrontMatter validates the expect: and predict: lines of l against
// the variants the lesson runs.
func checkFrontMatter(l *Lesson) error {
	for _, e := range l.Expect {
		if !contains(l.Variants, e.Variant) {
			return atLine(e.Line, "expect: unknown variant %q (the lesson runs %s)", e.Variant, strings.Join(l.Variants, ", "))
		}
	}
	for _, v := range l.Variants {
		if len(l.ExpectationsFor(v)) == 0 {
			return fmt.Errorf("variant %s has no expect: line", v)
		}
	}
	seen := map[string]int{}
	for _, p := range l.Predictions {
		if !contains(l.Variants, p.Variant) {
			return atLine(p.Line, "predict: unknown variant %q (the lesson runs %s)", p.Variant, strings.Join(l.Variants, ", "))
		}
		if first, dup := seen[p.Variant]; dup {
			return atLine(p.Line, "predict %s: a second question for the variant (the first is on line %d)", p.Variant, first)
		}
		seen[p.Variant] = p.Line
		if len(p.Choices) < minChoices || len(p.Choices) > maxChoices {
			return atLine(p.Line, "predict %s: %d choices, want %d to %d", p.Variant, len(p.Choices), minChoices, maxChoices)
		}
		texts := map[string]bool{}
		for _, c := range p.Choices {
			if texts[c.Text] {
				return atLine(p.Line, "predict %s: choice %q given twice", p.Variant, c.Text)
			}
			texts[c.Text] = true
		}
	}
	return nil
}
