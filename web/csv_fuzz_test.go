package web

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCSVCell checks that no cell of the participants CSV starts a
// spreadsheet formula, that a harmless cell is kept as it is, and that a
// row of cells reads back as written.
func FuzzCSVCell(f *testing.F) {
	for _, s := range []string{"Ann", "=HYPERLINK(\"http://x\",\"y\")", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "a,b\"c\nd", "\x00=1", "Zoë", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := CSVCell(s)
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			t.Fatalf("CSVCell(%q) = %q starts a formula", s, c)
		}
		clean := utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
		if clean && (s == "" || !strings.ContainsRune("=+-@", rune(s[0]))) && c != s {
			t.Fatalf("CSVCell(%q) = %q changed a harmless cell", s, c)
		}
		var buf bytes.Buffer
		w := csv.NewWriter(&buf)
		if err := w.Write(csvRow(s, "x")); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		back, err := csv.NewReader(&buf).Read()
		// encoding/csv turns \r\n inside a quoted field into \n.
		if want := strings.ReplaceAll(c, "\r\n", "\n"); err != nil || len(back) != 2 || strings.ReplaceAll(back[0], "\r", "") != strings.ReplaceAll(want, "\r", "") {
			t.Fatalf("row of %q reads back as %q (%v)", c, back, err)
		}
	})
}
