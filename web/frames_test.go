package web

import (
	"strings"
	"testing"

	"github.com/rlslab/rlslab/web/views"
)

func TestFrameDiffSendsOnlyWhatChanged(t *testing.T) {
	frame := func(section string, rows ...string) []views.Part {
		parts := []views.Part{{ID: "requests", HTML: []byte(section)}}
		for _, r := range rows {
			id, html, _ := strings.Cut(r, "=")
			parts = append(parts, views.Part{ID: id, Section: "requests", Container: "request-rows", Wrap: "tbody", HTML: []byte(html)})
		}
		parts = append(parts, views.Part{ID: "tl-lane-7", Section: "requests", Wrap: "svg", HTML: []byte("<text>7</text>")})
		return parts
	}
	d := &frameDiff{}
	steps := []struct {
		name  string
		frame []views.Part
		want  string
	}{
		{"first: everything", frame("<S1>", "req-1=<r1>"),
			`<S1><tbody hx-swap-oob="beforeend:#request-rows"><r1></tbody><svg hx-swap-oob="innerHTML:#tl-lane-7"><text>7</text></svg>`},
		{"nothing changed", frame("<S1>", "req-1=<r1>"), ""},
		{"a new row is appended", frame("<S1>", "req-1=<r1>", "req-2=<r2>"),
			`<tbody hx-swap-oob="beforeend:#request-rows"><r2></tbody>`},
		{"a changed row is swapped by id", frame("<S1>", "req-1=<r1>", "req-2=<r2b>"), `<r2b>`},
		{"a gone row is deleted", frame("<S1>", "req-2=<r2b>"), `<div id="req-1" hx-swap-oob="delete"></div>`},
		{"a changed section brings its items again", frame("<S2>", "req-2=<r2b>"),
			`<S2><tbody hx-swap-oob="beforeend:#request-rows"><r2b></tbody><svg hx-swap-oob="innerHTML:#tl-lane-7"><text>7</text></svg>`},
	}
	for _, s := range steps {
		if got := string(d.next(s.frame)); got != s.want {
			t.Errorf("%s:\n got %s\nwant %s", s.name, got, s.want)
		}
	}
}
