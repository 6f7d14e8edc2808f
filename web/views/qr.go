package views

import (
	"strconv"
	"strings"

	qrcode "github.com/skip2/go-qrcode"
)

// QRSVG returns text as a QR code in an inline SVG (medium error
// correction, a quiet zone of four modules), drawn in the page's colours
// by CSS class "qr". It fails only for text too long for a QR code.
func QRSVG(text, label string) (string, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", err
	}
	bits := q.Bitmap() // with its quiet zone
	n := len(bits)
	var path strings.Builder
	for y, row := range bits {
		for x := 0; x < len(row); x++ {
			if !row[x] {
				continue
			}
			// One horizontal run of dark modules per path segment.
			end := x
			for end < len(row) && row[end] {
				end++
			}
			path.WriteString("M" + strconv.Itoa(x) + " " + strconv.Itoa(y) + "h" + strconv.Itoa(end-x) + "v1h-" + strconv.Itoa(end-x) + "z")
			x = end
		}
	}
	size := strconv.Itoa(n)
	return `<svg class="qr" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ` + size + " " + size + `" role="img" aria-label="` +
		htmlEscape(label) + `" shape-rendering="crispEdges"><rect width="` + size + `" height="` + size + `" fill="#fff"/><path fill="#000" d="` +
		path.String() + `"/></svg>`, nil
}

// htmlEscape escapes s for an HTML attribute.
func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace(s)
}
