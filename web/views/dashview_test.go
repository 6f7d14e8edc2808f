package views

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestIdleTextWhileARunGoes(t *testing.T) {
	for _, c := range []struct {
		card Card
		want string
	}{
		{Card{Lab: "a", Status: "running", Running: true, QueueAhead: -1, Idle: 18 * time.Second}, "running"},
		{Card{Lab: "a", Status: "queued", Running: true, QueueAhead: 2, Idle: 3 * time.Minute}, "waiting in line"},
		{Card{Lab: "a", Status: "done", QueueAhead: -1, Idle: 18 * time.Second}, "18 s idle"},
		{Card{Lab: "a", Status: "done", QueueAhead: -1, Idle: 3 * time.Minute}, "3 min idle"},
		{Card{Lab: "a", Status: "lab closed", QueueAhead: -1, Idle: 3 * time.Minute}, "–"},
	} {
		if got := c.card.IdleText(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.card, got, c.want)
		}
	}
}

// cards are participants in every state a filter tells apart.
func testCards() []Card {
	now := time.Now()
	return []Card{
		{Name: "dora", Lab: "l1", Status: "done", QueueAhead: -1, Idle: 2 * time.Minute, LastActive: now.Add(-2 * time.Minute), LeakSeen: true, FixRun: true, VariantsRun: 2},
		{Name: "Al", Lab: "l2", Status: "running", Running: true, QueueAhead: -1, LastActive: now, VariantsRun: 1},
		{Name: "cy", Lab: "l3", Status: "queued", Running: true, QueueAhead: 1, LastActive: now},
		{Name: "Bo", Lab: "l4", Status: "done", QueueAhead: -1, Idle: 10 * time.Second, LastActive: now.Add(-10 * time.Second), LeakSeen: true, VariantsRun: 1},
		{Name: "eve", Status: "no lab", QueueAhead: -1, LastActive: now.Add(-time.Hour)},
	}
}

func names(cs []Card) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestDashboardSortsAndFilters(t *testing.T) {
	d := Dashboard{ID: "w", Cards: testCards()}
	for q, want := range map[string][]string{
		"":                          {"dora", "Al", "cy", "Bo", "eve"},
		"sort=name":                 {"Al", "Bo", "cy", "dora", "eve"},
		"sort=idle":                 {"eve", "dora", "Bo", "Al", "cy"},
		"sort=progress":             {"cy", "eve", "Al", "Bo", "dora"},
		"filter=idle":               {"dora", "eve"},
		"filter=waiting":            {"cy"},
		"filter=running":            {"Al"},
		"filter=no-leak":            {"Al", "cy", "eve"},
		"filter=leak":               {"dora", "Bo"},
		"filter=no-fix":             {"Bo"},
		"filter=fixed":              {"dora"},
		"filter=leak&sort=name":     {"Bo", "dora"},
		"filter=nonsense&sort=evil": {"dora", "Al", "cy", "Bo", "eve"},
	} {
		v, _ := url.ParseQuery(q)
		got := d.Apply(ParseDashView(v))
		if !slices.Equal(names(got.Shown), want) {
			t.Errorf("?%s shows %v, want %v", q, names(got.Shown), want)
		}
	}
	if names(d.Cards)[0] != "dora" {
		t.Errorf("Apply changed the dashboard's own cards: %v", names(d.Cards))
	}
	got := d.Apply(ParseDashView(nil))
	if got.FilterCounts["idle"] != 2 || got.FilterCounts["all"] != 5 || got.Table {
		t.Errorf("counts %v, table %v", got.FilterCounts, got.Table)
	}
	many := Dashboard{Cards: make([]Card, TableAbove+1)}
	if !many.Apply(ParseDashView(nil)).Table || many.Apply(ParseDashView(url.Values{"view": {"cards"}})).Table {
		t.Errorf("a room of %d: not a table by default, or a table when cards were asked for", TableAbove+1)
	}
}

func TestEndedFrameDropsTheControls(t *testing.T) {
	var buf bytes.Buffer
	d := Dashboard{ID: "w", Ended: true, Cards: testCards()}
	if err := DashboardLive(d.Apply(ParseDashView(nil)), true).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `<div id="dash-controls" hx-swap-oob="true" hidden></div>`) || strings.Contains(buf.String(), "reset-lab") {
		t.Errorf("the ended frame keeps its controls: %s", buf.String())
	}
}

func TestQRSVG(t *testing.T) {
	svg, err := QRSVG("http://127.0.0.1:8080/workshops/abcdefghijklmnop/join?code=K7M2QX", `join "link"`)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ViewBox string `xml:"viewBox,attr"`
		Label   string `xml:"aria-label,attr"`
		Path    struct {
			D string `xml:"d,attr"`
		} `xml:"path"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("not XML: %v", err)
	}
	// A version v code is 17+4v modules, plus a quiet zone of 4 each side.
	var n, m int
	if _, err := fmt.Sscanf(doc.ViewBox, "0 0 %d %d", &n, &m); err != nil || n != m || (n-8-17)%4 != 0 || n < 8+21 || doc.Label != `join "link"` || strings.Count(doc.Path.D, "M") < 100 {
		t.Errorf("QR SVG: viewBox %q, label %q, %d runs", doc.ViewBox, doc.Label, strings.Count(doc.Path.D, "M"))
	}
	if _, err := QRSVG(strings.Repeat("x", 5000), ""); err == nil {
		t.Errorf("a text too long for a QR code made one")
	}
}

func FuzzParseDashView(f *testing.F) {
	for _, q := range []string{"", "view=table&sort=name&filter=idle", "sort=progress&filter=no-fix", "view=cards&view=table", "filter=%00", "sort=joined&filter=all"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		vals, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		v := ParseDashView(vals)
		if (v.Mode != "" && v.Mode != "cards" && v.Mode != "table") || !hasKey(Sorts, v.Sort) || !hasKey(Filters, v.Filter) {
			t.Fatalf("?%s: %+v", q, v)
		}
		again, err := url.ParseQuery(strings.TrimPrefix(v.Query(), "?"))
		if err != nil || ParseDashView(again) != v {
			t.Fatalf("?%s: %+v does not round-trip through %q", q, v, v.Query())
		}
	})
}
