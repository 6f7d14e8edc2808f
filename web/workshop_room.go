package web

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"html"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/web/views"
)

// handleRoom is the projector's room view (GET /workshops/{id}/room) and
// its live part (…/room/live, polled by the page).
func (s *Server) handleRoom(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	room, err := s.workshops.Room(ctx, ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v := s.roomView(room, roomLesson(r.URL.Query().Get("lesson"), len(room.Workshop.Lessons), room.Workshop.CurrentLesson))
	if strings.HasSuffix(r.URL.Path, "/live") {
		s.render(w, r, http.StatusOK, views.RoomLive(v))
		return
	}
	v.JoinURL = baseURL(r) + "/workshops/" + ws.ID + "/join?code=" + ws.Code
	v.QR = s.joinQR(v.JoinURL)
	s.render(w, r, http.StatusOK, views.RoomPage(v))
}

// roomLesson reads the room view's ?lesson= (1-based): the index of the
// lesson to show, current when the value is missing or out of 1..n.
func roomLesson(q string, n, current int) int {
	if i, err := strconv.Atoi(q); err == nil && i >= 1 && i <= n {
		return i - 1
	}
	return current
}

// roomView is the view model of the room view, showing the lesson at
// index.
func (s *Server) roomView(room sessions.Room, index int) views.RoomView {
	ws := room.Workshop
	v := views.RoomView{ID: ws.ID, Title: ws.Title, Code: ws.Code, Ended: ws.Ended(), Joined: len(room.Cards), Lesson: index,
		Fixed: []string{}, LeakOnly: []string{}, NoLeak: []string{}}
	for i, slug := range ws.Lessons {
		v.Lessons = append(v.Lessons, views.LessonRef{Index: i, Slug: slug, Title: s.lessonTitle(slug)})
	}
	for _, c := range room.Cards {
		switch {
		case c.FixRun:
			v.Fixed = append(v.Fixed, c.Name)
		case c.LeakSeen:
			v.LeakOnly = append(v.LeakOnly, c.Name)
		default:
			v.NoLeak = append(v.NoLeak, c.Name)
		}
	}
	if index < 0 || index >= len(ws.Lessons) {
		return v
	}
	l, err := s.lessons.Get(ws.Lessons[index])
	if err != nil {
		return v
	}
	for _, p := range l.Predictions {
		q := views.RoomQuestion{Variant: p.Variant, Question: p.Question}
		at := map[string]int{}
		for i, c := range p.Choices {
			q.Choices = append(q.Choices, views.RoomChoice{Text: c.Text})
			at[c.Text] = i
		}
		for _, a := range room.Answers {
			if a.Lesson != l.Slug || a.Variant != p.Variant {
				continue
			}
			i, ok := at[a.Choice]
			if !ok {
				continue // the lesson's choices changed since
			}
			q.Answered++
			q.Choices[i].Count++
			if !a.Checked {
				continue
			}
			q.Checked++
			if a.Correct {
				q.Right++
				q.Choices[i].Right++
				q.Choices[i].Shown = true
			}
			if j, ok := at[a.Actual]; ok {
				q.Choices[j].Shown = true
			}
		}
		v.Questions = append(v.Questions, q)
	}
	return v
}

// csvHeader is the first line of GET /workshops/{id}/participants.csv.
var csvHeader = []string{"name", "lab", "lesson", "runs", "predictions_right", "predictions_checked", "seen_leak", "ran_fix", "last_active"}

// handleParticipantsCSV exports the workshop's participants as CSV, one
// line each in the order they joined.
func (s *Server) handleParticipantsCSV(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	room, err := s.workshops.Room(ctx, ws.ID)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="workshop-`+ws.ID+`-participants.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	out := csv.NewWriter(w)
	_ = out.Write(csvHeader)
	yes := map[bool]string{true: "yes", false: "no"}
	for _, c := range room.Cards {
		lab := c.Lab
		if c.Status == "lab closed" {
			lab = ""
		}
		_ = out.Write(csvRow(c.Name, lab, c.Lesson, strconv.Itoa(room.Runs[c.Learner]), strconv.Itoa(c.PredRight), strconv.Itoa(c.PredTotal),
			yes[c.LeakSeen], yes[c.FixRun], c.LastActive.UTC().Format(time.RFC3339)))
	}
	out.Flush()
	if err := out.Error(); err != nil {
		s.log.Info("participants CSV not sent in full", "workshop", ws.ID, "err", err)
	}
}

// csvRow makes cells safe for a spreadsheet (see CSVCell).
func csvRow(cells ...string) []string {
	for i, c := range cells {
		cells[i] = CSVCell(c)
	}
	return cells
}

// CSVCell keeps a cell from being read as a formula by a spreadsheet: one
// that starts with =, +, -, @, a tab or a carriage return gets a leading
// apostrophe. Control characters other than tab and newline are dropped.
func CSVCell(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' && r != '\n' && r != '\r' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

// handleResetLab gives the participant named in the form (field "name")
// a fresh lab. It answers a form with a redirect to the dashboard, htmx or
// a script with a line of text, and JSON with the new lab's id.
func (s *Server) handleResetLab(w http.ResponseWriter, r *http.Request, ws sessions.Workshop) {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var name string
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		var f struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "the body is not JSON with a name: %s", shortJSONError(err)))
			return
		}
		name = f.Name
	} else {
		if err := r.ParseForm(); err != nil {
			s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "the form could not be read"))
			return
		}
		name = r.PostForm.Get("name")
	}
	if name == "" {
		s.fail(w, r, rlslab.Errorf(rlslab.EINVALID, "name the participant whose lab to reset"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.createWait)
	defer cancel()
	lab, err := s.workshops.ResetLab(ctx, ws.ID, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	switch {
	case wantsJSON(r):
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "lab": lab})
	case r.Header.Get("HX-Request") != "":
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<span>" + html.EscapeString(name) + " has a new lab (" + html.EscapeString(lab) + "); their runs and progress are kept.</span>"))
	default:
		http.Redirect(w, r, "/workshops/"+ws.ID, http.StatusSeeOther)
	}
}
