package views

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestFreePlayResultWords checks a free-play result: a call cancelled
// after its columns came back shows no empty table (it showed the header
// alone), and counts agree with their number ("1 row", not "1 rows").
func TestFreePlayResultWords(t *testing.T) {
	var b bytes.Buffer
	cancelled := FreePlayView{PID: 4711, Role: "app", Columns: []string{"pg_sleep"}, Error: "canceling statement due to statement timeout", SQLState: "57014"}
	if err := FreePlayResult(cancelled).Render(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "<table") || strings.Contains(out, "0 rows") || !strings.Contains(out, "57014") {
		t.Errorf("a cancelled call shows a table or a row count, or no SQLSTATE:\n%s", out)
	}
	b.Reset()
	v := "1"
	one := FreePlayView{PID: 4711, Role: "app", Columns: []string{"id"}, Rows: [][]*string{{&v}}, RowCount: 1, Leak: true, ForeignRows: 1}
	if err := FreePlayResult(one).Render(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "<table") || !strings.Contains(out, "LEAK: 1 row of another tenant") || strings.Contains(out, "1 rows") {
		t.Errorf("one row: want a table and \"1 row\", got:\n%s", out)
	}
	b.Reset()
	// A query that returned no rows and no error keeps its header: the
	// columns say what was asked.
	if err := FreePlayResult(FreePlayView{PID: 1, Role: "app", Columns: []string{"id"}}).Render(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); !strings.Contains(out, "<table") || !strings.Contains(out, "0 rows") {
		t.Errorf("an empty result: want its header and \"0 rows\":\n%s", out)
	}
}

// TestReplayHeadLinksToPages checks the replay page's head links to no
// raw JSON list of the lab's runs (it linked "the lab's runs" to
// runs.json).
func TestReplayHeadLinksToPages(t *testing.T) {
	var b bytes.Buffer
	if err := ReplayHead(Replay{ID: "r1", Lab: "abcd1234", Scenario: "set-leak", Variant: "tx-local", Status: "done"}).Render(context.Background(), &b); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Contains(out, "runs.json") || strings.Contains(out, "the lab's runs") {
		t.Errorf("the replay head links to the lab's runs as JSON:\n%s", out)
	}
}
