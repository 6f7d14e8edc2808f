package views

import (
	"strconv"

	"github.com/a-h/templ"
)

// RoomView is the projector's view of a workshop: how the room predicted
// the questions of one lesson, and who saw the leak and ran the fix.
type RoomView struct {
	ID, Title, Code string
	JoinURL         string
	QR              string // the join link as an SVG QR code, "" when none
	Ended           bool
	Joined          int
	Lessons         []LessonRef
	Lesson          int // index of the lesson shown
	Questions       []RoomQuestion
	// Names of the participants: who ran the fix, who saw the leak but
	// has not run the fix yet, who has not seen a leak yet.
	Fixed, LeakOnly, NoLeak []string
}

// LessonTitle is the title of the lesson shown.
func (r RoomView) LessonTitle() string {
	if r.Lesson >= 0 && r.Lesson < len(r.Lessons) {
		return r.Lessons[r.Lesson].Title
	}
	return ""
}

// RoomQuestion is one prediction question and the room's answers.
type RoomQuestion struct {
	Variant  string
	Question string
	Answered int // answers given, checked or not
	Checked  int // answers a run checked
	Right    int // checked answers that were right
	Choices  []RoomChoice
}

// RoomChoice is one choice of a question: how many picked it, and how many
// of those a run checked right.
type RoomChoice struct {
	Text  string
	Count int
	Right int
	// Shown is whether a run showed this choice (some checked answer to
	// it was right, or some other checked answer named it as the actual).
	Shown bool
}

// Percent is the choice's share of the question's answers, 0 to 100.
func (q RoomQuestion) Percent(c RoomChoice) int {
	if q.Answered == 0 {
		return 0
	}
	return (c.Count*100 + q.Answered/2) / q.Answered
}

// barWidth is the inline width of a choice's bar.
func barWidth(percent int) templ.SafeCSS {
	return templ.SafeCSS("width:" + strconv.Itoa(percent) + "%")
}
