package web_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestWebDoesNotReachTheStore checks that package web only translates
// HTTP: rlslab's tables are the sessions package's business, so none of
// web's own files imports sessions/store.
func TestWebDoesNotReachTheStore(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == "github.com/rlslab/rlslab/sessions/store" {
				t.Errorf("%s imports %s: ask the sessions package instead", f, p)
			}
		}
	}
}
