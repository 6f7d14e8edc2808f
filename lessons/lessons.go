// Package lessons loads the lesson content: Markdown files with a small
// header, embedded in the binary, parsed and validated at start-up. A lesson
// that names an unknown scenario or variant, or whose expect: and predict:
// lines do not parse, stops the boot with an error naming the file and line.
//
// The header is "key: value" lines between two "---" lines:
//
//	---
//	slug: set-leak
//	title: SET and the next request on a pooled connection
//	summary: One line for the lesson list.
//	scenario: set-leak
//	variants: session-set, tx-local
//	order: 1
//	expect: session-set: leaks == 1 && foreign_rows == 3
//	expect: tx-local: leaks == 0 && errors == 0
//	predict: session-set: Globex's request forgot to scope. What does it get?
//	  - Acme's invoices => leaks >= 1
//	  - no invoices => leaks == 0 && errors == 0
//	  - an error => errors >= 1 && leaks == 0
//	---
//
// Every variant the lesson runs needs at least one expect: line; a
// prediction is optional per variant, with 2 to 4 choices, each "- TEXT =>
// CONDITION" on its own line right under its predict: line (see Condition
// for what a condition may say). Lines starting with # are comments.
package lessons

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/yuin/goldmark"
	"github.com/yuin/goldmark/extension"
	"github.com/yuin/goldmark/parser"

	"github.com/rlslab/rlslab"
)

//go:embed content/*.md
var content embed.FS

// Content returns the embedded lesson files.
func Content() fs.FS {
	sub, err := fs.Sub(content, "content")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// Catalog is what the loader checks lessons against: the scenarios and
// their variants (scenarios.Catalog satisfies it).
type Catalog interface {
	Variants(scenario string) ([]string, bool)
}

// Lesson is one lesson: its header and its body rendered to HTML.
type Lesson struct {
	Slug     string
	Title    string
	Summary  string
	Scenario string
	Variants []string // the variants the lesson runs, in the order it discusses them
	Order    int
	HTML     template.HTML
	Source   string // the file name
	// Expect holds the expect: lines: what a run of each variant, with the
	// scenario's default parameters, must show in data.
	Expect []Expectation
	// Predictions holds the questions asked before the first run of a
	// variant, at most one per variant, in header order.
	Predictions []Prediction
}

// Set is the loaded lessons in order.
type Set struct {
	list   []*Lesson
	bySlug map[string]*Lesson
}

// All returns the lessons in order.
func (s *Set) All() []*Lesson { return append([]*Lesson(nil), s.list...) }

// Get returns the lesson with that slug, or ENOTFOUND.
func (s *Set) Get(slug string) (*Lesson, error) {
	if l, ok := s.bySlug[slug]; ok {
		return l, nil
	}
	return nil, rlslab.Errorf(rlslab.ENOTFOUND, "no lesson %q", slug)
}

// ForScenario returns the lesson that runs scenario id, or nil.
func (s *Set) ForScenario(id string) *Lesson {
	for _, l := range s.list {
		if l.Scenario == id {
			return l
		}
	}
	return nil
}

var slugPattern = regexp.MustCompile(`^[a-z0-9]+(-[a-z0-9]+)*$`)

// Load reads every *.md file of fsys, parses it and checks it against cat.
// Any problem in any lesson is an error naming the file.
func Load(fsys fs.FS, cat Catalog) (*Set, error) {
	files, err := fs.Glob(fsys, "*.md")
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("lessons: no lesson files")
	}
	md := goldmark.New(goldmark.WithExtensions(extension.GFM), goldmark.WithParserOptions(parser.WithAutoHeadingID()))
	set := &Set{bySlug: map[string]*Lesson{}}
	for _, f := range files {
		raw, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		l, err := parse(f, raw, md, cat)
		if err != nil {
			var le *lineError
			if errors.As(err, &le) {
				return nil, fmt.Errorf("lesson %s:%d: %w", f, le.line, le.err)
			}
			return nil, fmt.Errorf("lesson %s: %w", f, err)
		}
		if other, dup := set.bySlug[l.Slug]; dup {
			return nil, fmt.Errorf("lesson %s: slug %q already used by %s", f, l.Slug, other.Source)
		}
		set.bySlug[l.Slug] = l
		set.list = append(set.list, l)
	}
	sort.SliceStable(set.list, func(i, j int) bool {
		if set.list[i].Order != set.list[j].Order {
			return set.list[i].Order < set.list[j].Order
		}
		return set.list[i].Slug < set.list[j].Slug
	})
	return set, nil
}

// parse reads one lesson: a header between two "---" lines (see the
// package comment), then Markdown.
func parse(name string, raw []byte, md goldmark.Markdown, cat Catalog) (*Lesson, error) {
	l, body, err := parseHeader(name, raw, cat)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, fmt.Errorf("empty body")
	}
	var out bytes.Buffer
	if err := md.Convert(body, &out); err != nil {
		return nil, fmt.Errorf("markdown: %w", err)
	}
	l.HTML = template.HTML(out.String()) // lesson files are ours, embedded at build time
	return l, nil
}

// maxHeaderLine bounds one header line.
const maxHeaderLine = 4096

// parseHeader reads and checks the header of one lesson file and returns the
// lesson without its HTML, and the body.
func parseHeader(name string, raw []byte, cat Catalog) (*Lesson, []byte, error) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	if !bytes.HasPrefix(raw, []byte("---\n")) {
		return nil, nil, fmt.Errorf("must start with a --- header")
	}
	head, body, ok := bytes.Cut(raw[4:], []byte("\n---\n"))
	if !ok {
		return nil, nil, fmt.Errorf("header has no closing ---")
	}
	l := &Lesson{Source: path.Base(name)}
	seen := map[string]bool{}
	var open *Prediction // the prediction whose choices may follow
	sc := bufio.NewScanner(bytes.NewReader(head))
	sc.Buffer(nil, maxHeaderLine)
	// Header line n is line n+1 of the file (line 1 is the opening ---).
	n := 1
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "-") {
			if open == nil {
				return nil, nil, atLine(n, "choice %q is not under a predict: line", line)
			}
			c, err := parseChoice(n, line)
			if err != nil {
				return nil, nil, err
			}
			open.Choices = append(open.Choices, c)
			continue
		}
		open = nil
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, nil, atLine(n, "want key: value")
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if k != "expect" && k != "predict" {
			if seen[k] {
				return nil, nil, atLine(n, "header key %q given twice", k)
			}
			seen[k] = true
		}
		switch k {
		case "slug":
			l.Slug = v
		case "title":
			l.Title = v
		case "summary":
			l.Summary = v
		case "scenario":
			l.Scenario = v
		case "variants":
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					l.Variants = append(l.Variants, p)
				}
			}
		case "order":
			o, err := strconv.Atoi(v)
			if err != nil {
				return nil, nil, atLine(n, "order %q: %w", v, err)
			}
			l.Order = o
		case "expect":
			e, err := parseExpect(n, v)
			if err != nil {
				return nil, nil, err
			}
			l.Expect = append(l.Expect, e)
		case "predict":
			p, err := parsePredict(n, v)
			if err != nil {
				return nil, nil, err
			}
			l.Predictions = append(l.Predictions, p)
			open = &l.Predictions[len(l.Predictions)-1]
		default:
			return nil, nil, atLine(n, "unknown header key %q", k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, atLine(n+1, "%v", err)
	}
	switch {
	case !slugPattern.MatchString(l.Slug):
		return nil, nil, fmt.Errorf("slug %q: want lower-case words joined by -", l.Slug)
	case l.Title == "":
		return nil, nil, fmt.Errorf("no title")
	case l.Scenario == "":
		return nil, nil, fmt.Errorf("no scenario")
	}
	known, ok := cat.Variants(l.Scenario)
	if !ok {
		return nil, nil, fmt.Errorf("unknown scenario %q", l.Scenario)
	}
	if len(l.Variants) == 0 {
		l.Variants = known
	}
	for _, v := range l.Variants {
		if !contains(known, v) {
			return nil, nil, fmt.Errorf("scenario %s has no variant %q (it has %s)", l.Scenario, v, strings.Join(known, ", "))
		}
	}
	if err := checkFrontMatter(l); err != nil {
		return nil, nil, err
	}
	return l, body, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
