package main

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// labDBFlags collects repeated -lab-db URL flags: the PostgreSQL servers
// labs are made on.
type labDBFlags []string

// String lists the servers' hosts (never their passwords).
func (l *labDBFlags) String() string {
	if l == nil {
		return ""
	}
	hosts := make([]string, 0, len(*l))
	for _, u := range *l {
		if c, err := pgx.ParseConfig(u); err == nil {
			hosts = append(hosts, fmt.Sprintf("%s:%d", c.Host, c.Port))
		}
	}
	return strings.Join(hosts, ",")
}

// Set adds one server's URL: a postgres:// (or postgresql://) URL that
// the driver can read, given once.
func (l *labDBFlags) Set(v string) error {
	if !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
		return fmt.Errorf("want a postgres:// URL of a superuser, got %.80q", v)
	}
	if _, err := pgx.ParseConfig(v); err != nil {
		// The driver's error may quote the URL, password and all.
		return fmt.Errorf("not a PostgreSQL URL the driver can read")
	}
	for _, u := range *l {
		if u == v {
			return fmt.Errorf("a lab server is given twice")
		}
	}
	*l = append(*l, v)
	return nil
}
