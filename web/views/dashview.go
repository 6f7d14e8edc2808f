package views

import (
	"net/url"
	"slices"
	"strings"
	"time"
)

// TableAbove is how many participants make the dashboard show its compact
// table rather than cards, unless the facilitator chose.
const TableAbove = 12

// IdleAfter is how long without activity makes a participant idle.
const IdleAfter = time.Minute

// DashView is how the facilitator looks at the participants: as cards or
// a table (Mode "" picks by their number), in which order, and which of
// them. It travels in the dashboard's query string (view, sort, filter),
// and the dashboard's websocket keeps it.
type DashView struct {
	Mode   string // "", "cards" or "table"
	Sort   string // one of Sorts' keys
	Filter string // one of Filters' keys
}

// DashOption is one choice of a dashboard control: its value in the query
// string and its label.
type DashOption struct{ Key, Label string }

// Sorts are the orders the dashboard offers, the default first.
var Sorts = []DashOption{
	{"joined", "joined"},
	{"name", "name"},
	{"idle", "longest idle"},
	{"progress", "least progress"},
}

// Filters are the subsets the dashboard offers, the default first.
var Filters = []DashOption{
	{"all", "everyone"},
	{"idle", "idle"},
	{"waiting", "waiting in line"},
	{"running", "running"},
	{"no-leak", "not yet leaked"},
	{"leak", "seen the leak"},
	{"no-fix", "leak seen, no fix"},
	{"fixed", "ran the fix"},
}

// ParseDashView reads a view from a query string; anything unknown is the
// default (a bookmark with an old value still opens the dashboard).
func ParseDashView(q url.Values) DashView {
	v := DashView{Sort: Sorts[0].Key, Filter: Filters[0].Key}
	switch m := q.Get("view"); m {
	case "cards", "table":
		v.Mode = m
	}
	if k := q.Get("sort"); hasKey(Sorts, k) {
		v.Sort = k
	}
	if k := q.Get("filter"); hasKey(Filters, k) {
		v.Filter = k
	}
	return v
}

// hasKey reports whether key is one of opts.
func hasKey(opts []DashOption, key string) bool {
	return slices.ContainsFunc(opts, func(o DashOption) bool { return o.Key == key })
}

// IsDefault reports whether v is the view of a dashboard opened without a
// query string.
func (v DashView) IsDefault() bool { return v == ParseDashView(nil) }

// Query is v as a query string ("" for the default view, else starting
// with "?"), naming only what differs from the default.
func (v DashView) Query() string {
	q := url.Values{}
	if v.Mode != "" {
		q.Set("view", v.Mode)
	}
	if v.Sort != Sorts[0].Key {
		q.Set("sort", v.Sort)
	}
	if v.Filter != Filters[0].Key {
		q.Set("filter", v.Filter)
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// With returns v with one of its fields ("view", "sort" or "filter") set.
func (v DashView) With(field, value string) DashView {
	switch field {
	case "view":
		v.Mode = value
	case "sort":
		v.Sort = value
	case "filter":
		v.Filter = value
	}
	return v
}

// Table reports whether the view shows n participants as a table.
func (v DashView) Table(n int) bool {
	return v.Mode == "table" || v.Mode == "" && n > TableAbove
}

// Closed reports whether the participant has no open lab.
func (c Card) Closed() bool { return c.Lab == "" || c.Status == "lab closed" }

// Waiting reports whether the participant's run waits in line.
func (c Card) Waiting() bool { return c.QueueAhead >= 0 }

// IsIdle reports whether the participant does nothing: no run going or
// waiting, and no activity for IdleAfter (or no open lab).
func (c Card) IsIdle() bool {
	return !c.Running && !c.Waiting() && (c.Closed() || c.Idle >= IdleAfter)
}

// Matches reports whether the participant is in the subset filter.
func (c Card) Matches(filter string) bool {
	switch filter {
	case "idle":
		return c.IsIdle()
	case "waiting":
		return c.Waiting()
	case "running":
		return c.Running && !c.Waiting()
	case "no-leak":
		return !c.LeakSeen
	case "leak":
		return c.LeakSeen
	case "no-fix":
		return c.LeakSeen && !c.FixRun
	case "fixed":
		return c.FixRun
	}
	return true
}

// progress orders participants by how far they got: the fix run, the leak
// seen, variants run, predictions right.
func (c Card) progress() [4]int {
	b := func(x bool) int {
		if x {
			return 1
		}
		return 0
	}
	return [4]int{b(c.FixRun), b(c.LeakSeen), c.VariantsRun, c.PredRight}
}

// sortCards orders cards by the view's sort, stably (ties keep the order
// they joined in).
func sortCards(cards []Card, by string) {
	switch by {
	case "name":
		slices.SortStableFunc(cards, func(a, b Card) int {
			return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
		})
	case "idle":
		slices.SortStableFunc(cards, func(a, b Card) int { return a.LastActive.Compare(b.LastActive) })
	case "progress":
		slices.SortStableFunc(cards, func(a, b Card) int {
			pa, pb := a.progress(), b.progress()
			return slices.Compare(pa[:], pb[:])
		})
	}
}

// Apply returns the dashboard as the view shows it: its cards filtered and
// sorted (a copy: d is not changed), with how many match each filter.
func (d Dashboard) Apply(v DashView) Dashboard {
	d.View = v
	d.Table = v.Table(len(d.Cards))
	d.FilterCounts = make(map[string]int, len(Filters))
	cards := make([]Card, 0, len(d.Cards))
	for _, c := range d.Cards {
		for _, f := range Filters {
			if c.Matches(f.Key) {
				d.FilterCounts[f.Key]++
			}
		}
		if c.Matches(v.Filter) {
			cards = append(cards, c)
		}
	}
	sortCards(cards, v.Sort)
	d.Shown = cards
	return d
}

// layoutName names the dashboard's layout for tests and styles.
func layoutName(table bool) string {
	if table {
		return "table"
	}
	return "cards"
}

// optionLabel returns the label of key among opts, or key.
func optionLabel(opts []DashOption, key string) string {
	for _, o := range opts {
		if o.Key == key {
			return o.Label
		}
	}
	return key
}
