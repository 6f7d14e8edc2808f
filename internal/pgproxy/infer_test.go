package pgproxy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/rlslab/rlslab"
)

func strp(s string) *string { return &s }

func TestAnalyze(t *testing.T) {
	t.Parallel()
	const name = DefaultSetting
	cases := []struct {
		sql    string
		params []*string
		want   []stmtEffect
	}{
		{"SELECT 1", nil, []stmtEffect{{}}},
		{"SET app.current_tenant = '1'", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "1"}}}}},
		{"set APP.CURRENT_TENANT to 42", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "42"}}}}},
		{"SET SESSION app.current_tenant TO 'a''b'", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "a'b"}}}}},
		{"SET LOCAL app.current_tenant = E'x\\'y'", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "x'y", local: true}}}}},
		{"SET app.current_tenant = -3", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "-3"}}}}},
		{"SET app.current_tenant TO DEFAULT", nil, []stmtEffect{{effects: []effect{{kind: effReset}}}}},
		{"SET app.other = '1'", nil, []stmtEffect{{}}},
		{"SET search_path = public", nil, []stmtEffect{{}}},
		{"RESET app.current_tenant", nil, []stmtEffect{{effects: []effect{{kind: effReset}}}}},
		{"RESET ALL", nil, []stmtEffect{{effects: []effect{{kind: effReset}, {kind: effReset, role: true}}}}},
		{"DISCARD ALL", nil, []stmtEffect{{effects: []effect{{kind: effReset}, {kind: effReset, role: true}}}}},
		{"SET ROLE tenant_1", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "tenant_1", role: true}}}}},
		{`set local role "Tenant 2"`, nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "Tenant 2", local: true, role: true}}}}},
		{"SET SESSION ROLE 'x'", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "x", role: true}}}}},
		{"SET role = Acme", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "acme", role: true}}}}},
		{"SET LOCAL role TO DEFAULT", nil, []stmtEffect{{effects: []effect{{kind: effReset, local: true, role: true}}}}},
		{"SET ROLE NONE", nil, []stmtEffect{{effects: []effect{{kind: effReset, role: true}}}}},
		{"SET ROLE 'none'", nil, []stmtEffect{{effects: []effect{{kind: effReset, role: true}}}}},
		{`SET ROLE "none"`, nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "none", role: true}}}}},
		{"RESET ROLE", nil, []stmtEffect{{effects: []effect{{kind: effReset, role: true}}}}},
		{"RESET role.x", nil, []stmtEffect{{}}},
		{"SET role.x = 1", nil, []stmtEffect{{}}},
		{"SET roles = 1", nil, []stmtEffect{{}}},
		{"SET ROLE a b", nil, []stmtEffect{{effects: []effect{{kind: effUnknown, role: true}}}}},
		{"SELECT set_config('role', $1, false)", []*string{strp("t1")}, []stmtEffect{{effects: []effect{{kind: effSet, value: "t1", role: true}}}}},
		{"SELECT set_config('ROLE', 'none', true)", nil, []stmtEffect{{effects: []effect{{kind: effReset, local: true, role: true}}}}},
		{"SELECT set_config('role', $1, false)", nil, []stmtEffect{{effects: []effect{{kind: effUnknown, role: true}}}}},
		{"DISCARD PLANS", nil, []stmtEffect{{}}},
		{"SELECT set_config('app.current_tenant', '7', false)", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: "7"}}}}},
		{"select pg_catalog.set_config('app.current_tenant', $1, true), now()", []*string{strp("9")}, []stmtEffect{{effects: []effect{{kind: effSet, value: "9", local: true}}}}},
		{"SELECT set_config('app.current_tenant', $1::text, $2)", []*string{strp("4"), strp("t")}, []stmtEffect{{effects: []effect{{kind: effSet, value: "4", local: true}}}}},
		{"SELECT set_config('app.current_tenant', $1, false)", nil, []stmtEffect{{effects: []effect{{kind: effUnknown}}}}},
		{"SELECT set_config('app.current_tenant', x || 'y', false) FROM t", nil, []stmtEffect{{effects: []effect{{kind: effUnknown}}}}},
		{"SELECT set_config('app.current_tenant', NULL, false)", nil, []stmtEffect{{effects: []effect{{kind: effSet, value: ""}}}}},
		{"SELECT set_config('search_path', 'x', false)", nil, []stmtEffect{{}}},
		{"SELECT 'SET app.current_tenant = 1'", nil, []stmtEffect{{}}},
		{"-- SET app.current_tenant = 1\nSELECT 1", nil, []stmtEffect{{}}},
		{"/* SET app.current_tenant = 1; */ SELECT $$set_config('app.current_tenant', '1', false)$$", nil, []stmtEffect{{}}},
		{"BEGIN; SET LOCAL app.current_tenant = '2'; SELECT 1; COMMIT", nil, []stmtEffect{
			{tx: txBegin}, {effects: []effect{{kind: effSet, value: "2", local: true}}}, {}, {tx: txEnd}}},
		{"START TRANSACTION", nil, []stmtEffect{{tx: txBegin}}},
		{"ROLLBACK", nil, []stmtEffect{{tx: txEnd}}},
		{"ROLLBACK TO SAVEPOINT a", nil, []stmtEffect{{effects: []effect{{kind: effUnknown}}}}},
		{";;", nil, []stmtEffect{}},
	}
	for _, tc := range cases {
		got := analyze(tc.sql, name, tc.params)
		if got == nil && noEffects(tc.want) {
			continue // skipped by the keyword filter
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("analyze(%q) = %+v, want %+v", tc.sql, got, tc.want)
		}
	}
}

// noEffects says whether none of the statements does anything.
func noEffects(es []stmtEffect) bool {
	for _, e := range es {
		if len(e.effects) > 0 || e.tx != txNone {
			return false
		}
	}
	return true
}

func TestDeclaredTenant(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"SELECT 1":                           "",
		"SELECT * FROM items /*tenant='2'*/": "2",
		"SELECT 1 /* route='%2Fitems',tenant='acme%20co' */": "acme co",
		"/* controller='x' */ SELECT 1 /* tenant='3' */":     "3",
		"SELECT '/* tenant=''4'' */'":                        "",
		"SELECT 1 /* tenant='a\\'b' */":                      "a'b",
		"SELECT 1 /* tenant=5 */":                            "",
		"SELECT 1 /* db_driver='pg',tenant='1+2' */":         "1+2",
	}
	for sql, want := range cases {
		if got := declaredTenant(sql); got != want {
			t.Errorf("declaredTenant(%q) = %q, want %q", sql, got, want)
		}
	}
}

// FuzzAnalyze feeds arbitrary statement text to the tokenizer and the
// readers of settings and declared tenants: no panic, and every statement
// it reports comes from the text.
func FuzzAnalyze(f *testing.F) {
	for _, s := range []string{
		"SET app.current_tenant = '1'",
		"SELECT set_config('app.current_tenant', $1, true), $2",
		"BEGIN; SET LOCAL app.current_tenant TO 2; COMMIT",
		"SELECT $tag$ ; $tag$ /* tenant='x' */ -- c\n; RESET ALL",
		"E'\\'' \"q\"\"x\" /* /* nested */ */ DISCARD ALL",
		"BEGIN; SET LOCAL ROLE \"t 1\"; RESET ROLE; SET role TO DEFAULT",
		"SELECT set_config('role', $1, false); SET SESSION ROLE NONE",
	} {
		f.Add(s, "1")
	}
	f.Fuzz(func(t *testing.T, sql, param string) {
		effects := analyze(sql, DefaultSetting, []*string{&param, nil})
		if len(effects) > maxStatements {
			t.Fatalf("%d statements", len(effects))
		}
		_ = declaredTenant(sql)
	})
}

func TestResultLeak(t *testing.T) {
	t.Parallel()
	set := func(v string) Setting { return Setting{Known: true, Value: v} }
	cases := []struct {
		r    Result
		leak bool
	}{
		{Result{Declared: "1", Setting: set("1"), Rows: 3, TenantColumn: true}, false},
		{Result{Declared: "2", Setting: set("1")}, true},
		{Result{Declared: "2", Setting: Setting{Known: true, Null: true}}, true},
		{Result{Declared: "2", Setting: Setting{}}, false},
		{Result{Setting: set("1"), Rows: 3, ForeignRows: 1, TenantColumn: true}, true},
		{Result{Rows: 3}, false},
	}
	for _, tc := range cases {
		if got := tc.r.Leak(); got != tc.leak {
			t.Errorf("%+v.Leak() = %v, want %v", tc.r, got, tc.leak)
		}
	}
}

func TestLookupErrorCodes(t *testing.T) {
	t.Parallel()
	st := startup{database: "lab_x", user: "app"}
	cases := []struct {
		err  error
		code string
	}{
		{ErrUnknownDatabase, "3D000"},
		{fmt.Errorf("lab: %w", ErrUnknownDatabase), "3D000"},
		{ErrTooManyConnections, "53300"},
		{ErrUnavailable, "57P03"},
		{rlslab.Errorf(rlslab.ENOTFOUND, "no such lab"), "3D000"},
		{rlslab.Errorf(rlslab.EUNAVAILABLE, "the budget is full"), "53300"},
		{&pgconn.PgError{Code: "53400", Message: "x"}, "53400"},
		{errors.New("secret detail"), "XX000"},
	}
	for _, tc := range cases {
		pe := lookupError(tc.err, st)
		if pe.Code != tc.code {
			t.Errorf("lookupError(%v) = %s, want %s", tc.err, pe.Code, tc.code)
		}
		if strings.Contains(pe.Message, "secret") {
			t.Errorf("lookupError(%v) tells the client %q", tc.err, pe.Message)
		}
	}
	if !refused(ErrRefused) || !refused(rlslab.Errorf(rlslab.EFORBIDDEN, "not yours")) || refused(ErrUnknownDatabase) {
		t.Error("refused() does not match ErrRefused and EFORBIDDEN only")
	}
}

// tenantColumn finds tenant_id, or an ORM's alias of a table's column that
// ends in _tenant_id (TypeORM's "Invoice_tenant_id"), preferring tenant_id.
func TestTenantColumn(t *testing.T) {
	t.Parallel()
	field := func(name string, table uint32) pgproto3.FieldDescription {
		return pgproto3.FieldDescription{Name: []byte(name), TableOID: table}
	}
	cases := []struct {
		fields []pgproto3.FieldDescription
		want   int
	}{
		{nil, -1},
		{[]pgproto3.FieldDescription{field("id", 1), field("tenant_id", 1)}, 1},
		{[]pgproto3.FieldDescription{field("Invoice_id", 1), field("Invoice_tenant_id", 1)}, 1},
		{[]pgproto3.FieldDescription{field("x_tenant_id", 1), field("tenant_id", 0)}, 1},
		{[]pgproto3.FieldDescription{field("computed_tenant_id", 0)}, -1},
		{[]pgproto3.FieldDescription{field("tenant_ids", 1)}, -1},
	}
	for _, tc := range cases {
		if got := tenantColumn(tc.fields); got != tc.want {
			t.Errorf("tenantColumn(%v) = %d, want %d", tc.fields, got, tc.want)
		}
	}
}
