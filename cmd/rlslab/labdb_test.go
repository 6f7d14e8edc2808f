package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// FuzzLabDBFlag feeds -lab-db values to the flag: it never panics, keeps
// only postgres URLs the driver reads, never keeps one twice, and never
// prints a password in its String.
func FuzzLabDBFlag(f *testing.F) {
	for _, s := range []string{
		"postgres://rlslab:secret@10.0.0.5:5432/postgres",
		"postgresql://u@/db?host=/tmp",
		"postgres://u:p@h:notaport/db",
		"mysql://u@h/db",
		"",
		"postgres://",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var l labDBFlags
		err := l.Set(v)
		if err != nil {
			if len(l) != 0 {
				t.Fatalf("refused %q but kept it", v)
			}
			return
		}
		if _, perr := pgx.ParseConfig(v); perr != nil || !strings.HasPrefix(v, "postgres") {
			t.Fatalf("kept %q, which the driver cannot read (%v)", v, perr)
		}
		if l.Set(v) == nil || len(l) != 1 {
			t.Fatalf("kept %q twice", v)
		}
		c, _ := pgx.ParseConfig(v)
		hostPort := fmt.Sprintf("%s:%d", c.Host, c.Port)
		if c.Password != "" && strings.Contains(l.String(), c.Password) && !strings.Contains(hostPort, c.Password) {
			t.Fatalf("String %q shows the password of %q", l.String(), v)
		}
	})
}

// FuzzPIDFlag feeds the bench's -pid values to its flag: it never panics
// and keeps only positive numbers, exactly as given.
func FuzzPIDFlag(f *testing.F) {
	for _, s := range []string{"1234", "0", "-5", "12a", "", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		var p pidFlags
		if err := p.Set(v); err != nil {
			if len(p) != 0 {
				t.Fatalf("refused %q but kept it", v)
			}
			return
		}
		if len(p) != 1 || p[0] <= 0 || fmt.Sprint(p[0]) != strings.TrimLeft(strings.TrimPrefix(v, "+"), "0") {
			t.Fatalf("kept %v for %q", p, v)
		}
	})
}
