package views

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/rlslab/rlslab/scenarios/engine"
)

func ptr(s string) *string { return &s }

func TestLiveViewShowsWhatTheStateSays(t *testing.T) {
	st := engine.State{
		Lab: "abc", Status: engine.StatusDone, Scenario: "set-leak", Variant: "session-set",
		Narration:   `<script>alert(1)</script>`,
		Pool:        engine.PoolCounts{Max: 2, Total: 2, Idle: 2},
		Connections: []engine.Connection{{Pool: "app", Slot: 1, PID: 4711, State: engine.ConnIdle, Tenant: ptr("1"), Role: "lab_abc_app"}},
		Requests: []engine.RequestRow{
			{Seq: 3, Tenant: ptr("2"), Pattern: "forgot", PID: 4711, SeenTenant: ptr("1"), Rows: 3, ForeignRows: 3, Leak: true, Phase: "released", FinishedAt: 1, Why: "LEAK: held Acme"},
			{Seq: 4, Tenant: ptr("2"), Pattern: "forgot", PID: 4712, SeenTenant: ptr(""), Phase: "released", FinishedAt: 2},
		},
	}
	var buf bytes.Buffer
	if err := LiveView(NewLive(st, []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}})).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	html := buf.String()
	for _, want := range []string{
		`data-lab-id="abc"`, `data-status="done"`,
		`<div id="req-3" class="req-row leak" role="row" data-seq="3" data-pid="4711" data-leak="true"`,
		`<div id="req-4" class="req-row closed" role="row" data-seq="4" data-pid="4712" data-leak="false"`,
		`data-outcome="leak"`, `LEAK: Globex got Acme&#39;s 3 rows on backend 4711 (request #3).`,
		`Acme (1)`, `Globex (2)`, `&#39;&#39; (empty)`, `held Acme`, `0 rows, fails closed`,
		`&lt;script&gt;`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("live view lacks %q", want)
		}
	}
	if strings.Contains(html, "<script>alert") || strings.Contains(html, "LEAK: held") {
		t.Error("narration not escaped, or the verdict repeated in the explanation")
	}
}

func TestTenantLabels(t *testing.T) {
	v := NewLive(engine.State{}, []engine.Tenant{{ID: 1, Name: "Acme"}})
	cases := map[string]string{"1": "Acme (1)", "": "'' (empty)", "17": "Tenant 17", "x'y": "'x'y'"}
	for in, want := range cases {
		if got := v.TenantLabel(ptr(in)); got != want {
			t.Errorf("TenantLabel(%q) = %q, want %q", in, got, want)
		}
	}
	if got := v.TenantLabel(nil); got != "NULL" {
		t.Errorf("TenantLabel(nil) = %q", got)
	}
	if TenantClass(nil) != "tenant-null" || TenantClass(ptr("")) != "tenant-empty" || TenantClass(ptr("2")) != "tenant-2" || TenantClass(ptr("40")) != "tenant-other" {
		t.Error("tenant classes")
	}
}

func TestChartScalesIntoTheViewBox(t *testing.T) {
	c := drawChart(engine.Chart{Title: "t", Lines: []engine.Line{{Name: "a", Points: []engine.Point{{X: 0, Y: 0}, {X: 10, Y: 5}}}}}, 0)
	// The plot area runs from x 44 to 600 and from y 160 (0) up to 8 (5).
	if c.Lines[0].Points != "44,160 600,8" || c.YMax != "5" || c.XMax != "10" {
		t.Errorf("chart %+v", c)
	}
	if len(c.YTicks) != 3 || c.YTicks[2].Label != "5" || c.YTicks[0].Label != "0" {
		t.Errorf("y ticks %+v", c.YTicks)
	}
	one := drawChart(engine.Chart{Lines: []engine.Line{{Name: "a", Points: []engine.Point{{X: 3, Y: 1}}}}}, 2)
	if one.Lines[0].Points != "44,84 600,84" {
		t.Errorf("one-point chart %q", one.Lines[0].Points)
	}
}

func TestHiddenVariablesShowWhenRecorded(t *testing.T) {
	render := func(st engine.State) string {
		var buf bytes.Buffer
		if err := HiddenVars(NewLive(st, []engine.Tenant{{ID: 1, Name: "Acme"}, {ID: 2, Name: "Globex"}})).Render(context.Background(), &buf); err != nil {
			t.Fatal(err)
		}
		return buf.String()
	}
	if html := render(engine.State{}); !strings.Contains(html, `hidden`) || strings.Contains(html, "USING") {
		t.Errorf("nothing recorded, yet the panel shows: %s", html)
	}
	html := render(engine.State{
		Policy:      &engine.Policy{Table: "invoices", Name: "tenant_isolation", Using: "(tenant_id = NULLIF(current_setting('app.current_tenant', true), '')::integer)", Enabled: true, Force: false},
		SharedField: []engine.FieldReading{{Value: "1", Seq: 1, Wrote: true}, {Value: "2", Seq: 2, Wrote: true}, {Value: "2", Seq: 1}},
	})
	for _, want := range []string{"USING", "NULLIF(current_setting(&#39;app.current_tenant&#39;, true)", `data-rls-force="false"`, `data-rls-enabled="true"`,
		"request #1 wrote <b>Acme</b>", "request #1 read <b>Globex</b>"} {
		if !strings.Contains(html, want) {
			t.Errorf("hidden variables lack %q: %s", want, html)
		}
	}
}
