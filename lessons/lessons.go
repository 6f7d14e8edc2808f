// Package lessons loads the lesson content: Markdown files with a small
// header, embedded in the binary, parsed and validated at start-up. A lesson
// that names an unknown scenario or variant stops the boot.
package lessons

import (
	"bufio"
	"bytes"
	"embed"
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

// parse reads one lesson: a header between two "---" lines of "key: value"
// pairs (slug, title, summary, scenario, variants, order), then Markdown.
func parse(name string, raw []byte, md goldmark.Markdown, cat Catalog) (*Lesson, error) {
	raw = bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	if !bytes.HasPrefix(raw, []byte("---\n")) {
		return nil, fmt.Errorf("must start with a --- header")
	}
	head, body, ok := bytes.Cut(raw[4:], []byte("\n---\n"))
	if !ok {
		return nil, fmt.Errorf("header has no closing ---")
	}
	l := &Lesson{Source: path.Base(name)}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(head))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("header line %d: want key: value", n)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if seen[k] {
			return nil, fmt.Errorf("header key %q given twice", k)
		}
		seen[k] = true
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
				return nil, fmt.Errorf("order %q: %w", v, err)
			}
			l.Order = o
		default:
			return nil, fmt.Errorf("unknown header key %q", k)
		}
	}
	switch {
	case !slugPattern.MatchString(l.Slug):
		return nil, fmt.Errorf("slug %q: want lower-case words joined by -", l.Slug)
	case l.Title == "":
		return nil, fmt.Errorf("no title")
	case l.Scenario == "":
		return nil, fmt.Errorf("no scenario")
	}
	known, ok := cat.Variants(l.Scenario)
	if !ok {
		return nil, fmt.Errorf("unknown scenario %q", l.Scenario)
	}
	if len(l.Variants) == 0 {
		l.Variants = known
	}
	for _, v := range l.Variants {
		if !contains(known, v) {
			return nil, fmt.Errorf("scenario %s has no variant %q (it has %s)", l.Scenario, v, strings.Join(known, ", "))
		}
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
