package web_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"sync"
	"testing"
	"time"

	"github.com/rlslab/rlslab/internal/pgenv/pgenvtest"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/sessionstest"
	"github.com/rlslab/rlslab/sessions/store"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

func TestMain(m *testing.M) { pgenvtest.Main(m, closeBrowser) }

// loaded holds the real lessons checked against the default catalog,
// loaded once for the package's tests: a Set is not changed after Load,
// and loading took half a second under -race on the loaded 2-core machine,
// for each of some sixty servers.
var loaded struct {
	once sync.Once
	set  *lessons.Set
	err  error
}

// defaultLessons returns the real lessons checked against the default
// catalog; it calls tb.Fatal if they do not load.
func defaultLessons(tb testing.TB) *lessons.Set {
	tb.Helper()
	loaded.once.Do(func() { loaded.set, loaded.err = lessons.Load(lessons.Content(), scenarios.DefaultCatalog()) })
	if loaded.err != nil {
		tb.Fatal(loaded.err)
	}
	return loaded.set
}

// testServer is a running rlslab web server on a free port.
type testServer struct {
	URL   string
	Labs  *sessions.Manager
	Store *store.Store
	// Stop stops the server as a restart does, before the test ends: no
	// more connections, every live view told, every lab closed. The
	// tables stay.
	Stop func()
}

// mustStartServer serves rlslab on 127.0.0.1:0 with a real lab manager,
// the real lessons and rlslab's own tables, where every finished run is
// recorded; it stops when the test ends.
func mustStartServer(tb testing.TB, cfg sessions.Config) *testServer {
	tb.Helper()
	return mustStartServerWith(tb, cfg, serverOptions{})
}

// serverOptions change what mustStartServerWith serves.
type serverOptions struct {
	log      *slog.Logger                    // nil: discarded
	services func(web.Services) web.Services // wraps the services, when set
	addr     string                          // where to listen: "" for a free port
}

// mustStartServerWith is mustStartServer with a logger of the test's and
// its services wrapped (to count calls, say).
func mustStartServerWith(tb testing.TB, cfg sessions.Config, o serverOptions) *testServer {
	tb.Helper()
	log := o.log
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	var ls *lessons.Set
	if cfg.Catalog == nil {
		cfg.Catalog = scenarios.DefaultCatalog()
		ls = defaultLessons(tb)
	} else {
		var err error
		if ls, err = lessons.Load(lessons.Content(), cfg.Catalog); err != nil {
			tb.Fatal(err)
		}
	}
	cfg.Logger = log
	// The admin pool and rlslab's own tables come first, as rlslab serve
	// wires them: every finished run is recorded and checks the learner's
	// pending prediction.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := sessions.OpenAdmin(ctx, pgenvtest.MustServer(tb).URL)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(admin.Close)
	st, err := store.Open(ctx, admin, log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	var pgVersion string
	if err := admin.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		tb.Fatal(err)
	}
	keeper := sessions.NewKeeper(st, pgVersion, log)
	db := sessions.NewDB(st, admin, log)
	progress := sessions.NewProgress(db, ls, log)
	// Saved on the run's goroutine, so that a run's recording is there
	// once the lab takes the next run (lab.Wait).
	save := sessions.RunEndFunc(func(r sessions.RunRecord) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := keeper.Save(ctx, r); err != nil {
			tb.Logf("recording not saved: %v", err)
		}
	})
	cfg.Admin = admin
	cfg.Subscribers = append([]sessions.RunSubscriber{save, progress}, cfg.Subscribers...)
	labs := sessionstest.MustOpenManager(tb, cfg)
	addr := o.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	sv := services(labs, st, ls, log)
	if o.services != nil {
		sv = o.services(sv)
	}
	handler := web.NewServer(labs, ls, static.FS(), log).WithCreateWait(time.Minute).WithServices(sv)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
			handler.Close()
			labs.Close(ctx)
		})
	}
	tb.Cleanup(stop)
	return &testServer{URL: "http://" + ln.Addr().String(), Labs: labs, Store: st, Stop: stop}
}

// services returns the store-backed services of a server on labs and st,
// as rlslab serve wires them.
func services(labs *sessions.Manager, st *store.Store, ls *lessons.Set, log *slog.Logger) web.Services {
	db := sessions.NewDB(st, labs.Admin(), log)
	return web.Services{Workshops: sessions.NewWorkshops(db, labs, ls, log), Progress: sessions.NewProgress(db, ls, log), Recordings: sessions.NewRecordings(db)}
}

// newBrowserClient returns an HTTP client with its own cookie jar (one
// "browser") that does not follow redirects.
func newBrowserClient(tb testing.TB) *http.Client {
	tb.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
