package appview

import (
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rlslab/rlslab/internal/pgproxy"
)

// TestLeak pins what makes an app's statement a leak: other tenants'
// rows, or a declared tenant other than the setting the backend held; not
// the statement that writes the setting, nor a declared tenant meeting no
// setting at all.
func TestLeak(t *testing.T) {
	held := func(v string) pgproxy.Setting { return pgproxy.Setting{Known: true, Value: v} }
	null := pgproxy.Setting{Known: true, Null: true}
	cases := []struct {
		name string
		r    pgproxy.Result
		want bool
	}{
		{"own rows", pgproxy.Result{Text: "SELECT * FROM invoices /* tenant='1' */", Declared: "1", Setting: held("1"), Rows: 3}, false},
		{"declared another", pgproxy.Result{Text: "SELECT * FROM invoices /* tenant='2' */", Declared: "2", Setting: held("1"), Rows: 3, ForeignRows: 3}, true},
		{"declared another, no tenant column", pgproxy.Result{Text: "SELECT count(*) FROM invoices /* tenant='2' */", Declared: "2", Setting: held("1"), Rows: 1}, true},
		{"undeclared, foreign rows", pgproxy.Result{Text: "SELECT * FROM invoices", Setting: held("1"), Rows: 3, ForeignRows: 1}, true},
		{"the scope itself", pgproxy.Result{Text: "/* tenant='2' */ SELECT set_config('app.current_tenant', $1, false)", Declared: "2", Setting: held("1"), Rows: 1}, false},
		{"a SET", pgproxy.Result{Text: "SET app.current_tenant = '2' /* tenant='2' */", Declared: "2", Setting: held("1")}, false},
		{"SET LOCAL", pgproxy.Result{Text: "set local app.current_tenant to '2' /* tenant='2' */", Declared: "2", Setting: held("1")}, false},
		{"no setting", pgproxy.Result{Text: "SELECT * FROM invoices /* tenant='2' */", Declared: "2", Setting: null}, false},
		{"unknown setting", pgproxy.Result{Text: "SELECT * FROM invoices /* tenant='2' */", Declared: "2"}, false},
		{"failed, another's setting", pgproxy.Result{Text: "SELECT 1/0 /* tenant='2' */", Declared: "2", Setting: held("1"), Err: &pgconn.PgError{Code: "22012"}}, true},
	}
	for _, tc := range cases {
		if got := Leak(tc.r); got != tc.want {
			t.Errorf("%s: leak %v, want %v", tc.name, got, tc.want)
		}
	}
}
