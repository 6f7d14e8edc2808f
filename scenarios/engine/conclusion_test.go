package engine

import "testing"

func TestConclusionSaysWhoseRowsWentToWhom(t *testing.T) {
	s := func(v string) *string { return &v }
	names := map[string]string{"1": "Acme", "2": "Globex", "3": "Initech"}
	name := func(v string) string { return names[v] }
	own := RequestRow{Tenant: s("1"), SeenTenant: s("1"), Rows: 3, FinishedAt: 1}
	leak := RequestRow{Tenant: s("2"), SeenTenant: s("1"), Rows: 3, ForeignRows: 3, Leak: true, FinishedAt: 2}
	closed := RequestRow{Tenant: s("2"), SeenTenant: s(""), FinishedAt: 3}
	failed := RequestRow{Tenant: s("3"), Error: "syntax error", SQLState: "42601"}
	refused := RequestRow{Tenant: s("3"), Error: "invalid input syntax for type integer", SQLState: "22P02"}
	waiting := RequestRow{Tenant: s("3"), Phase: "waiting"}
	bypass := RequestRow{Tenant: s("1"), SeenTenant: s("1"), Rows: 9, ForeignRows: 6, Leak: true, FinishedAt: 4}
	for _, c := range []struct {
		rows []RequestRow
		want string
	}{
		{[]RequestRow{own, leak, waiting}, "Globex got 3 of Acme's rows: leak."},
		{[]RequestRow{own, leak, leak}, "Globex got 6 of Acme's rows in 2 requests: 2 leaks."},
		{[]RequestRow{bypass, leak}, "Acme got 6 of other tenants' rows; Globex got 3 of Acme's rows: 2 leaks."},
		{[]RequestRow{closed, closed, closed, closed}, "Failed closed: 4 requests got 0 rows; no leak."},
		{[]RequestRow{own, closed, refused, waiting}, "Failed closed: 1 request refused by the database, 1 got 0 rows, 1 got only its own rows; no leak."},
		{[]RequestRow{own, closed, failed, waiting}, "Error: 1 request failed with an error (SQLSTATE 42601), 1 got 0 rows, 1 got only its own rows."},
		{[]RequestRow{own, own}, "No leak: 2 requests got only their own rows."},
		{[]RequestRow{waiting}, "No leak: no request queried."},
	} {
		if got := Conclusion(c.rows, name); got != c.want {
			t.Errorf("Conclusion = %q, want %q", got, c.want)
		}
	}
}
