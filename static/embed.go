// Package static holds rlslab's CSS, its tiny scripts and the vendored htmx,
// embedded in the binary.
package static

import (
	"embed"
	"io/fs"
)

//go:embed rlslab.css rlslab.js theme.js progress.css predict.js workshop.css workshop.js runs.js dashboard.css dashboard.js replay.js conn.js inview.js a11y.js vendor
var files embed.FS

// FS returns the static files.
func FS() fs.FS { return files }
