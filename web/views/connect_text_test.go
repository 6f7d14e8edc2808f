package views

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestConnectPanelShowsTheTagComment: the panel's hint shows the
// sqlcommenter comment it asks for. Written as markup, templ took
// /* tenant='2' */ for a comment of its own and the page read "as a
// sqlcommenter comment : a statement whose tag…".
func TestConnectPanelShowsTheTagComment(t *testing.T) {
	var buf bytes.Buffer
	p := ConnectPanel{Lab: "abc", On: true, URL: "postgres://app:pw@127.0.0.1:5433/lab_abc?sslmode=require"}
	if err := ConnectYourApp(p).Render(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if html := buf.String(); !strings.Contains(html, "sqlcommenter comment <code>/* tenant=&#39;2&#39; */</code>:") {
		t.Errorf("the hint lacks the comment: %s", html)
	}
}
