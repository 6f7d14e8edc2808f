package lessons

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Observed is what one run of a variant showed, counted from its request log
// and its metrics: the only things an expect: line or a prediction's choice
// may look at. Package lessons does not import the scenario engine; callers
// build an Observed from a run's outcome with Observe.
type Observed struct {
	Requests    int                // rows in the request log
	Leaks       int                // requests that got another tenant's rows
	Errors      int                // requests that failed
	ForeignRows int                // other tenants' rows returned, over all requests
	SeenNull    int                // requests whose row shows the tenant setting NULL (never set on that backend, or no query ran)
	SeenEmpty   int                // requests whose query ran with the tenant setting '' (empty)
	SQLStates   map[string]int     // failed requests per SQLSTATE
	Metrics     map[string]float64 // the run's named metrics (their raw numbers)
	Ratios      map[string]float64 // the run's ratios, by name
}

// Request is one row of a run's request log, as far as conditions look at
// it (the engine's RequestRow has these fields under the same names).
type Request struct {
	Leak        bool
	Error       string
	SQLState    string
	ForeignRows int
	SeenTenant  *string // the tenant setting the query ran under; nil is NULL
}

// Observe counts a run's request log, metrics and ratios into an Observed.
// metrics and ratios may be nil.
func Observe(reqs []Request, metrics, ratios map[string]float64) Observed {
	o := Observed{Requests: len(reqs), SQLStates: map[string]int{}, Metrics: metrics, Ratios: ratios}
	for _, r := range reqs {
		if r.Leak {
			o.Leaks++
		}
		if r.Error != "" {
			o.Errors++
			if r.SQLState != "" {
				o.SQLStates[r.SQLState]++
			}
		}
		o.ForeignRows += r.ForeignRows
		switch {
		case r.SeenTenant == nil:
			o.SeenNull++
		case *r.SeenTenant == "":
			o.SeenEmpty++
		}
	}
	return o
}

// Condition is a parsed condition over an Observed, such as
// `leaks >= 1 && sqlstate("42501") == 0`.
//
// Grammar (whitespace between tokens is free):
//
//	expr    = and { "||" and }
//	and     = term { "&&" term }
//	term    = "(" expr ")" | operand op operand
//	op      = "==" | "!=" | ">=" | "<=" | ">" | "<"
//	operand = number | count | func "(" string ")"
//	count   = "requests" | "leaks" | "errors" | "foreign_rows" | "seen_null" | "seen_empty"
//	func    = "sqlstate" | "metric" | "ratio"
//	number  = digits [ "." digits ]
//	string  = '"' { any character but '"' and control characters } '"'
//
// sqlstate("XXXXX") counts the failed requests with that SQLSTATE (0 when
// none); metric("name") and ratio("name") are the run's named values, and
// evaluating one the run did not report is an error. A comparison needs at
// least one side that comes from the run.
type Condition struct {
	src  string
	root node
}

// String returns the condition as written.
func (c Condition) String() string { return c.src }

// Eval reports whether the condition holds for o. The error says which
// metric or ratio the run did not report.
func (c Condition) Eval(o Observed) (bool, error) {
	if c.root == nil {
		return false, fmt.Errorf("empty condition")
	}
	return c.root.eval(o)
}

// Explain lists the run's values of every quantity the condition reads, e.g.
// `leaks = 0, errors = 1`, for messages about a condition that did not hold.
func (c Condition) Explain(o Observed) string {
	seen := map[string]bool{}
	var parts []string
	var walk func(n node)
	walk = func(n node) {
		switch n := n.(type) {
		case *binNode:
			walk(n.l)
			walk(n.r)
		case *cmpNode:
			for _, x := range []operand{n.l, n.r} {
				if x.kind == opNumber || seen[x.String()] {
					continue
				}
				seen[x.String()] = true
				if v, err := x.value(o); err != nil {
					parts = append(parts, err.Error())
				} else {
					parts = append(parts, fmt.Sprintf("%s = %s", x, formatNumber(v)))
				}
			}
		}
	}
	walk(c.root)
	return strings.Join(parts, ", ")
}

// ParseCondition parses s (see Condition for the grammar).
func ParseCondition(s string) (Condition, error) {
	p := &condParser{src: s}
	if err := p.lex(); err != nil {
		return Condition{}, err
	}
	if len(p.toks) == 0 {
		return Condition{}, fmt.Errorf("empty condition")
	}
	n, err := p.expr(0)
	if err != nil {
		return Condition{}, err
	}
	if p.pos < len(p.toks) {
		return Condition{}, fmt.Errorf("unexpected %s at column %d", p.toks[p.pos].text, p.toks[p.pos].col)
	}
	return Condition{src: strings.TrimSpace(s), root: n}, nil
}

// counts are the names a condition may use for the request log's counts.
var counts = map[string]func(Observed) int{
	"requests":     func(o Observed) int { return o.Requests },
	"leaks":        func(o Observed) int { return o.Leaks },
	"errors":       func(o Observed) int { return o.Errors },
	"foreign_rows": func(o Observed) int { return o.ForeignRows },
	"seen_null":    func(o Observed) int { return o.SeenNull },
	"seen_empty":   func(o Observed) int { return o.SeenEmpty },
}

// CountNames returns the count names a condition may use, sorted.
func CountNames() []string {
	out := make([]string, 0, len(counts))
	for k := range counts {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type node interface {
	eval(Observed) (bool, error)
}

type binNode struct {
	and  bool // && if true, || otherwise
	l, r node
}

func (n *binNode) eval(o Observed) (bool, error) {
	l, err := n.l.eval(o)
	if err != nil {
		return false, err
	}
	if n.and && !l {
		return false, nil
	}
	if !n.and && l {
		return true, nil
	}
	return n.r.eval(o)
}

type cmpNode struct {
	op   string
	l, r operand
}

func (n *cmpNode) eval(o Observed) (bool, error) {
	l, err := n.l.value(o)
	if err != nil {
		return false, err
	}
	r, err := n.r.value(o)
	if err != nil {
		return false, err
	}
	switch n.op {
	case "==":
		return l == r, nil
	case "!=":
		return l != r, nil
	case ">=":
		return l >= r, nil
	case "<=":
		return l <= r, nil
	case ">":
		return l > r, nil
	case "<":
		return l < r, nil
	}
	return false, fmt.Errorf("unknown operator %q", n.op) // the parser admits none
}

type operandKind int

const (
	opNumber operandKind = iota
	opCount
	opSQLState
	opMetric
	opRatio
)

type operand struct {
	kind operandKind
	num  float64
	name string // the count's name, or the function's argument
}

func (x operand) String() string {
	switch x.kind {
	case opNumber:
		return formatNumber(x.num)
	case opCount:
		return x.name
	case opSQLState:
		return fmt.Sprintf("sqlstate(%q)", x.name)
	case opMetric:
		return fmt.Sprintf("metric(%q)", x.name)
	case opRatio:
		return fmt.Sprintf("ratio(%q)", x.name)
	}
	return "?"
}

func (x operand) value(o Observed) (float64, error) {
	switch x.kind {
	case opNumber:
		return x.num, nil
	case opCount:
		return float64(counts[x.name](o)), nil
	case opSQLState:
		return float64(o.SQLStates[x.name]), nil
	case opMetric:
		v, ok := o.Metrics[x.name]
		if !ok {
			return 0, fmt.Errorf("the run reported no metric %q (it has %s)", x.name, keyList(o.Metrics))
		}
		return v, nil
	case opRatio:
		v, ok := o.Ratios[x.name]
		if !ok {
			return 0, fmt.Errorf("the run reported no ratio %q (it has %s)", x.name, keyList(o.Ratios))
		}
		return v, nil
	}
	return 0, fmt.Errorf("bad operand")
}

func keyList(m map[string]float64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, strconv.Quote(k))
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func formatNumber(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// maxDepth bounds the nesting of parentheses, so no input can exhaust the
// stack.
const maxDepth = 16

// maxConditionLen bounds a condition's length; front matter lines are short.
const maxConditionLen = 1000

type token struct {
	kind int // tokIdent, tokNumber, tokString, tokOp, tokLParen, tokRParen, tokAnd, tokOr
	text string
	col  int // 1-based byte column in the condition
}

const (
	tokIdent = iota
	tokNumber
	tokString
	tokOp
	tokLParen
	tokRParen
	tokAnd
	tokOr
)

type condParser struct {
	src  string
	toks []token
	pos  int
}

func (p *condParser) lex() error {
	s := p.src
	if len(s) > maxConditionLen {
		return fmt.Errorf("condition longer than %d bytes", maxConditionLen)
	}
	for i := 0; i < len(s); {
		c := s[i]
		col := i + 1
		switch {
		case c == ' ' || c == '\t':
			i++
		case c == '(':
			p.toks = append(p.toks, token{tokLParen, "(", col})
			i++
		case c == ')':
			p.toks = append(p.toks, token{tokRParen, ")", col})
			i++
		case strings.HasPrefix(s[i:], "&&"):
			p.toks = append(p.toks, token{tokAnd, "&&", col})
			i += 2
		case strings.HasPrefix(s[i:], "||"):
			p.toks = append(p.toks, token{tokOr, "||", col})
			i += 2
		case strings.HasPrefix(s[i:], "=="), strings.HasPrefix(s[i:], "!="),
			strings.HasPrefix(s[i:], ">="), strings.HasPrefix(s[i:], "<="):
			p.toks = append(p.toks, token{tokOp, s[i : i+2], col})
			i += 2
		case c == '>' || c == '<':
			p.toks = append(p.toks, token{tokOp, s[i : i+1], col})
			i++
		case c == '"':
			j := i + 1
			for j < len(s) && s[j] != '"' {
				if s[j] < 0x20 || s[j] == 0x7f {
					return fmt.Errorf("control character in string at column %d", j+1)
				}
				j++
			}
			if j == len(s) {
				return fmt.Errorf("unterminated string at column %d", col)
			}
			p.toks = append(p.toks, token{tokString, s[i+1 : j], col})
			i = j + 1
		case c >= '0' && c <= '9':
			j := i
			for j < len(s) && s[j] >= '0' && s[j] <= '9' {
				j++
			}
			if j < len(s) && s[j] == '.' {
				k := j + 1
				for k < len(s) && s[k] >= '0' && s[k] <= '9' {
					k++
				}
				if k == j+1 {
					return fmt.Errorf("number without digits after the point at column %d", col)
				}
				j = k
			}
			if j-i > 20 {
				return fmt.Errorf("number too long at column %d", col)
			}
			p.toks = append(p.toks, token{tokNumber, s[i:j], col})
			i = j
		case c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'):
			j := i
			for j < len(s) && (s[j] == '_' || (s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z') || (s[j] >= '0' && s[j] <= '9')) {
				j++
			}
			p.toks = append(p.toks, token{tokIdent, s[i:j], col})
			i = j
		default:
			return fmt.Errorf("unexpected character %q at column %d", rune(c), col)
		}
	}
	return nil
}

func (p *condParser) peek() (token, bool) {
	if p.pos < len(p.toks) {
		return p.toks[p.pos], true
	}
	return token{}, false
}

func (p *condParser) expr(depth int) (node, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("parentheses nested deeper than %d", maxDepth)
	}
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != tokOr {
			return l, nil
		}
		p.pos++
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = &binNode{and: false, l: l, r: r}
	}
}

func (p *condParser) and(depth int) (node, error) {
	l, err := p.term(depth)
	if err != nil {
		return nil, err
	}
	for {
		t, ok := p.peek()
		if !ok || t.kind != tokAnd {
			return l, nil
		}
		p.pos++
		r, err := p.term(depth)
		if err != nil {
			return nil, err
		}
		l = &binNode{and: true, l: l, r: r}
	}
}

func (p *condParser) term(depth int) (node, error) {
	t, ok := p.peek()
	if !ok {
		return nil, fmt.Errorf("condition ends where a comparison should start")
	}
	if t.kind == tokLParen {
		p.pos++
		n, err := p.expr(depth + 1)
		if err != nil {
			return nil, err
		}
		c, ok := p.peek()
		if !ok || c.kind != tokRParen {
			return nil, fmt.Errorf("missing ) for the ( at column %d", t.col)
		}
		p.pos++
		return n, nil
	}
	l, err := p.operand()
	if err != nil {
		return nil, err
	}
	op, ok := p.peek()
	if !ok || op.kind != tokOp {
		if ok {
			return nil, fmt.Errorf("want a comparison operator after %s, got %s at column %d", l, op.text, op.col)
		}
		return nil, fmt.Errorf("want a comparison operator after %s", l)
	}
	p.pos++
	r, err := p.operand()
	if err != nil {
		return nil, err
	}
	if l.kind == opNumber && r.kind == opNumber {
		return nil, fmt.Errorf("%s %s %s compares two numbers: one side must come from the run", l, op.text, r)
	}
	return &cmpNode{op: op.text, l: l, r: r}, nil
}

func (p *condParser) operand() (operand, error) {
	t, ok := p.peek()
	if !ok {
		return operand{}, fmt.Errorf("condition ends where a value should be")
	}
	p.pos++
	switch t.kind {
	case tokNumber:
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return operand{}, fmt.Errorf("bad number %s at column %d", t.text, t.col)
		}
		return operand{kind: opNumber, num: f}, nil
	case tokIdent:
		if _, ok := counts[t.text]; ok {
			return operand{kind: opCount, name: t.text}, nil
		}
		var kind operandKind
		switch t.text {
		case "sqlstate":
			kind = opSQLState
		case "metric":
			kind = opMetric
		case "ratio":
			kind = opRatio
		default:
			return operand{}, fmt.Errorf("unknown name %q at column %d (want one of %s, or sqlstate/metric/ratio(\"...\"))",
				t.text, t.col, strings.Join(CountNames(), ", "))
		}
		if lp, ok := p.peek(); !ok || lp.kind != tokLParen {
			return operand{}, fmt.Errorf("%s at column %d wants (\"...\")", t.text, t.col)
		}
		p.pos++
		arg, ok := p.peek()
		if !ok || arg.kind != tokString {
			return operand{}, fmt.Errorf("%s( at column %d wants a quoted name", t.text, t.col)
		}
		p.pos++
		if rp, ok := p.peek(); !ok || rp.kind != tokRParen {
			return operand{}, fmt.Errorf("%s(%q at column %d wants a )", t.text, arg.text, t.col)
		}
		p.pos++
		name := arg.text
		switch {
		case kind == opSQLState && !isSQLState(name):
			return operand{}, fmt.Errorf("sqlstate(%q) at column %d: want five digits or capital letters", name, t.col)
		case strings.TrimSpace(name) == "":
			return operand{}, fmt.Errorf("%s at column %d has an empty name", t.text, t.col)
		}
		return operand{kind: kind, name: name}, nil
	}
	return operand{}, fmt.Errorf("unexpected %s at column %d", t.text, t.col)
}

func isSQLState(s string) bool {
	if len(s) != 5 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9') && !(c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
