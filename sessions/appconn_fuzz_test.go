package sessions_test

import (
	"context"
	"errors"
	"testing"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
)

// FuzzProxyLookup feeds the proxy's Lookup the database and user names a
// client may send: anything but an open lab's database with the app's user
// is refused (unknown database, or refused like a wrong password), nothing
// panics, and the connection budget is left as it was.
func FuzzProxyLookup(f *testing.F) {
	m := sessionstest.MustOpenManager(f, sessions.Config{MaxLabs: 1, Spares: -1})
	lab := sessionstest.MustCreateLab(f, m, sessions.NewToken())
	for _, s := range [][2]string{
		{lab.ProxyDatabase(), "app"}, {lab.ProxyDatabase(), lab.Sandbox.AppRole}, {lab.ProxyDatabase(), "postgres"},
		{"lab_", "app"}, {"lab_00000000", "app"}, {"postgres", "app"}, {"", ""}, {"lab_" + lab.ID + "\x00", "app"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, database, user string) {
		target, err := m.ProxyLookup(context.Background(), database, user)
		ok := database == lab.ProxyDatabase() && (user == sessions.AppUser || user == lab.Sandbox.AppRole)
		switch {
		case ok && err != nil:
			t.Fatalf("%q as %q: %v", database, user, err)
		case ok:
			if target.ClientPassword != lab.ProxyPassword() || target.Release == nil {
				t.Fatalf("%q as %q: target %+v", database, user, target)
			}
			target.Release()
			target.Release() // a second call gives nothing back twice
		case !errors.Is(err, pgproxy.ErrUnknownDatabase) && !errors.Is(err, pgproxy.ErrRefused):
			t.Fatalf("%q as %q: %v, want refused", database, user, err)
		}
		if n := m.Usage().RunConns; n != 0 {
			t.Fatalf("%q as %q: %d connections left in the budget", database, user, n)
		}
	})
}
