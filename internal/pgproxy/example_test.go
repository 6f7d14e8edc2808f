package pgproxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"github.com/rlslab/rlslab/internal/pgproxy"
)

// printEvents prints the tenant settings the proxy reports.
type printEvents struct{ pgproxy.NopEvents }

func (printEvents) Setting(c pgproxy.ConnInfo, s pgproxy.Setting) {
	fmt.Printf("backend %d: %q (inferred %v)\n", c.PID, s.Value, s.Inferred)
}

// A proxy routing the database "lab_1" to one server's role, until ctx ends.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := pgproxy.New(pgproxy.Config{
		Lookup: func(ctx context.Context, database, user string) (pgproxy.Target, error) {
			if database != "lab_1" {
				return pgproxy.Target{}, pgproxy.ErrUnknownDatabase
			}
			if user != "app" {
				return pgproxy.Target{}, pgproxy.ErrRefused
			}
			return pgproxy.Target{
				URL:            "postgres://127.0.0.1:5432/lab_1?sslmode=disable",
				User:           "lab_1_app",
				Password:       "the role's password",
				ClientPassword: "the password given to the app",
			}, nil
		},
		Events: printEvents{},
		Logger: slog.Default(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	cancel() // a real caller serves until shutdown
	fmt.Println(srv.Serve(ctx, ln))
	// Output: <nil>
}
