package views

import (
	"html/template"
	"regexp"
	"strings"
)

// revealHeading matches a lesson heading (h2 or h3, as goldmark writes
// them) whose section tells what a run shows ("What the database shows",
// "What the fix runs show") or explains it ("Why").
var revealHeading = regexp.MustCompile(`<h([23]) id="(what-the-[a-z0-9-]*show[a-z0-9-]*|why)">([^<]*)</h[23]>`)

// RevealNote is the line beside a folded section's title: what it holds,
// and when to open it; WhyNote the same for the section that explains the
// result.
const (
	RevealNote = "what the run shows: predict, then run, before you open it"
	WhyNote    = "why the run shows what it shows: predict, then run, before you open it"
)

// FoldResults wraps each section of a lesson's HTML that tells what a run
// shows or why (from its heading to the next heading of the same or a higher
// level) in a details element whose summary is the heading, so that a
// reader going top to bottom does not read the result before predicting
// it. open unfolds them all: the learner has predicted or run the lesson.
func FoldResults(html template.HTML, open bool) template.HTML {
	s := string(html)
	var out strings.Builder
	for {
		m := revealHeading.FindStringSubmatchIndex(s)
		if m == nil {
			out.WriteString(s)
			break
		}
		level := s[m[2]:m[3]]
		id, title := s[m[4]:m[5]], s[m[6]:m[7]]
		out.WriteString(s[:m[0]])
		rest := s[m[1]:]
		end := sectionEnd(rest, level)
		out.WriteString(`<details class="reveal" data-reveal="` + id + `"`)
		if open {
			out.WriteString(" open")
		}
		note := RevealNote
		if id == "why" {
			note = WhyNote
		}
		out.WriteString(`><summary><h` + level + ` id="` + id + `">` + title + `</h` + level + `> <span class="reveal-note">` + note + `</span></summary>`)
		out.WriteString(rest[:end])
		out.WriteString("</details>\n")
		s = rest[end:]
	}
	return template.HTML(out.String()) // the lesson's own HTML, rearranged
}

// sectionEnd is where the section that starts s ends: at the next heading
// of level or higher (a smaller number), or at the end.
func sectionEnd(s, level string) int {
	end := len(s)
	for _, tag := range []string{"<h1", "<h2", "<h3"} {
		if tag[2] > level[0] {
			continue
		}
		if i := strings.Index(s, tag); i >= 0 && i < end {
			end = i
		}
	}
	return end
}
