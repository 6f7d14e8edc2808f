package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"strings"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// exportStyles are the style sheets an exported recording inlines, in the
// order the replay page links them.
var exportStyles = []string{"rlslab.css", "workshop.css"}

// exportScript is the player an exported recording inlines.
const exportScript = "replay.js"

// exportPart is one part of a frame in an export's data: the live view's
// section or item with its id, where it goes, and its HTML (see
// views.Part).
type exportPart struct {
	ID        string `json:"id"`
	Section   string `json:"s,omitempty"`
	Container string `json:"c,omitempty"`
	Wrap      string `json:"w,omitempty"`
	HTML      string `json:"h"`
}

// exportFrame is one frame of an export's data: when it happened and the
// parts it is made of, as indexes into the parts, in document order.
type exportFrame struct {
	AtMs  int64 `json:"at"`
	Parts []int `json:"p"`
}

// exportData is what an exported recording's player reads: every distinct
// part once, and each frame as the list of its parts. A part that does not
// change between frames (a finished request row, an unchanged section) is
// kept once, so that the file grows with what changes, not with the
// frames times the page.
type exportData struct {
	Parts  []exportPart  `json:"parts"`
	Frames []exportFrame `json:"frames"`
}

// buildExportData renders every frame of rec as parts.
func buildExportData(rec sessions.Recording) (exportData, error) {
	d := exportData{Parts: []exportPart{}, Frames: make([]exportFrame, len(rec.Frames))}
	index := map[exportPart]int{}
	rows := views.NewRowCache()
	for i := range rec.Frames {
		st, err := frameState(rec, i)
		if err != nil {
			return exportData{}, err
		}
		parts, err := rows.FrameParts(views.NewFrame(st, st.Tenants))
		if err != nil {
			return exportData{}, rlslab.Errorf(rlslab.EINTERNAL, "frame %d of recording %s: %v", i, rec.ID, err)
		}
		f := exportFrame{AtMs: rec.Frames[i].AtMs, Parts: make([]int, len(parts))}
		for j, p := range parts {
			key := exportPart{ID: p.ID, Section: p.Section, Container: p.Container, Wrap: p.Wrap, HTML: string(p.HTML)}
			n, ok := index[key]
			if !ok {
				n = len(d.Parts)
				index[key] = n
				d.Parts = append(d.Parts, key)
			}
			f.Parts[j] = n
		}
		d.Frames[i] = f
	}
	return d, nil
}

// closingTag finds a closing tag that would end an inlined <style> or
// <script> early.
var closingTag = regexp.MustCompile(`(?i)</(style|script)`)

// inlineFile reads a static file for inlining into a <style> or <script>
// element; one that holds a closing tag of either cannot be inlined.
func (s *Server) inlineFile(name string) (string, error) {
	b, err := fs.ReadFile(s.static, name)
	if err != nil {
		return "", rlslab.Errorf(rlslab.EINTERNAL, "the export needs static/%s: %v", name, err)
	}
	if closingTag.Match(b) {
		return "", rlslab.Errorf(rlslab.EINTERNAL, "static/%s holds a closing </style> or </script> and cannot be inlined", name)
	}
	return string(b), nil
}

// exportFileName is the name an exported recording is saved under.
func exportFileName(rec sessions.Recording) string {
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
				return r
			}
			return '-'
		}, s)
	}
	return fmt.Sprintf("rlslab-%s-%s-%s.html", clean(rec.Scenario), clean(rec.Variant), clean(rec.ID))
}

// handleExport serves GET /runs/{id}/export: the recording as one HTML
// file, to be saved (Content-Disposition: attachment) and opened without
// rlslab. Its styles, its player and all its frames are inside it; it
// loads nothing.
func (s *Server) handleExport(w http.ResponseWriter, r *http.Request) {
	rec, err := s.recording(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(rec.Frames) == 0 {
		s.fail(w, r, rlslab.Errorf(rlslab.ENOTFOUND, "this recording has no frames to export"))
		return
	}
	p, err := s.replayOf(rec, 0)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p.Exported = true
	e := views.Export{Replay: p}
	var css []string
	for _, name := range exportStyles {
		c, err := s.inlineFile(name)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		css = append(css, c)
	}
	e.CSS = strings.Join(css, "\n")
	if e.Script, err = s.inlineFile(exportScript); err != nil {
		s.fail(w, r, err)
		return
	}
	data, err := buildExportData(rec)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// json.Marshal escapes <, > and &, so the data cannot close its
	// <script> element.
	b, err := json.Marshal(data)
	if err != nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EINTERNAL, "encoding the export: %v", err))
		return
	}
	e.Data = string(b)
	var buf bytes.Buffer
	if err := views.ExportPage(e).Render(r.Context(), &buf); err != nil {
		s.fail(w, r, rlslab.Errorf(rlslab.EINTERNAL, "rendering the export: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, exportFileName(rec)))
	w.Header().Set("Content-Length", fmt.Sprint(buf.Len()))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// refuseFraming keeps every page of rlslab out of other sites' frames
// (clickjacking): a lab's controls are one click away. The replay page
// with ?embed=1 lifts it (allowFraming).
func refuseFraming(w http.ResponseWriter) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
}

// allowFraming lets any site frame this response: a replay holds no
// control and nothing of the viewer's.
func allowFraming(w http.ResponseWriter) {
	w.Header().Del("X-Frame-Options")
	w.Header().Set("Content-Security-Policy", "frame-ancestors *")
}
