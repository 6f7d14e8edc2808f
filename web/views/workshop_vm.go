package views

import (
	"strconv"
	"time"
)

// WorkshopLinks are the two links of a new workshop.
type WorkshopLinks struct {
	ID, Title, Code         string
	JoinURL, FacilitatorURL string
	QR                      string // the join link as an SVG QR code, "" when none
}

// WorkshopCounts are the numbers at the top of a workshop's dashboard.
type WorkshopCounts struct {
	Joined  int `json:"joined"`
	Running int `json:"running"`
	Leaked  int `json:"leaked"`
	Fixed   int `json:"fixed"`
	// Expected is how many participants the facilitator expects (0: not
	// said); LabsReady how many labs are ready for them: the labs of those
	// who joined plus the sandboxes prepared for the rest.
	Expected  int `json:"expected,omitempty"`
	LabsReady int `json:"labs_ready,omitempty"`
}

// Capacity is what the server holds for every lab, workshop or not.
type Capacity struct {
	Labs    int `json:"labs"`
	MaxLabs int `json:"max_labs"`
	Conns   int `json:"connections"`
	Budget  int `json:"budget"`
	Queued  int `json:"queued_runs"`
}

// LessonRef is one lesson of a workshop.
type LessonRef struct {
	Index int
	Slug  string
	Title string
}

// CardRun is a participant's last finished run.
type CardRun struct {
	Scenario string `json:"scenario"`
	Variant  string `json:"variant"`
	Status   string `json:"status"`
	Leaks    int    `json:"leaks"`
	Outcome  string `json:"outcome,omitempty"` // the run's outcome kind (leak, breach, ...)
}

// Card is one participant on the dashboard.
type Card struct {
	Name        string
	Lab         string // "" when none
	LessonSlug  string
	Lesson      string // the lesson's title
	Status      string // the lab's live status, "no lab" or "lab closed"
	Running     bool
	LiveRun     string // scenario / variant of the run going
	LastRun     *CardRun
	LeakSeen    bool
	FixRun      bool
	Predictions string // e.g. "2/3 right"; "–" when none was checked
	PredRight   int    // checked predictions that were right
	PredTotal   int    // checked predictions
	QueueAhead  int    // runs ahead in the admission queue; -1 when not waiting
	Idle        time.Duration
	LastActive  time.Time // when the participant last did something
	VariantsRun int       // variants run, over every lesson
}

// IdleText says how long the participant has been away; never idle while
// a run of theirs is going or waiting in line.
func (c Card) IdleText() string {
	switch {
	case c.Waiting():
		return "waiting in line"
	case c.Running:
		return "running"
	case c.Closed():
		return "–"
	case c.Idle < 5*time.Second:
		return "active"
	case c.Idle < time.Minute:
		return strconv.Itoa(int(c.Idle/time.Second)) + " s idle"
	}
	return strconv.Itoa(int(c.Idle/time.Minute)) + " min idle"
}

// Dashboard is the view model of a workshop's dashboard.
type Dashboard struct {
	ID, Title, Code string
	JoinURL         string
	Lessons         []LessonRef
	Current         int
	Ended           bool
	Counts          WorkshopCounts
	Capacity        Capacity
	Cards           []Card
	// QR is the join link as an SVG QR code ("" in websocket frames).
	QR string

	// Set by Apply: the view, whether it is a table, the cards it shows
	// (filtered and sorted) and how many cards match each filter.
	View         DashView
	Table        bool
	Shown        []Card
	FilterCounts map[string]int
}

// CurrentTitle is the title of the lesson everyone is on.
func (d Dashboard) CurrentTitle() string {
	if d.Current < len(d.Lessons) {
		return d.Lessons[d.Current].Title
	}
	return ""
}

// JoinForm is the view model of the join page.
type JoinForm struct {
	ID, Title, Code string
	Name            string // as typed, shown again after an error
	Error           string
	// RetryIn, when above 0, is how many seconds the page waits before it
	// sends the form again by itself (the join could not be had for now);
	// Try is the number of that next try.
	RetryIn, Try int
}

// Notice is what a participant's lesson page says about the workshop.
type Notice struct {
	Workshop string
	Ended    bool
	Moved    bool // the facilitator is on another lesson than this page
	Number   int  // 1-based
	Slug     string
	Title    string
}

// yesNo shows a boolean on a card.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
