// Command rlslab serves the rlslab playground (rlslab serve, the default),
// lists its scenarios (rlslab list) and runs one headless (rlslab run).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rlslab/rlslab"
	"github.com/rlslab/rlslab/internal/bouncer"
	"github.com/rlslab/rlslab/internal/docker"
	"github.com/rlslab/rlslab/internal/pgenv"
	"github.com/rlslab/rlslab/lessons"
	"github.com/rlslab/rlslab/scenarios"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/sessions"
	"github.com/rlslab/rlslab/sessions/store"
	"github.com/rlslab/rlslab/static"
	"github.com/rlslab/rlslab/web"
)

// Bounds of the graceful shutdown: httpShutdownTimeout for the requests
// in flight, shutdownTimeout for the labs (runs cancelled and recorded,
// sandboxes dropped); mainExitTimeout for all of it after the first signal.
const (
	httpShutdownTimeout = 2 * time.Second
	shutdownTimeout     = 5 * time.Second
	mainExitTimeout     = httpShutdownTimeout + shutdownTimeout + time.Second
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal starts a graceful shutdown; a second one exits
		// at once.
		<-sigs
		cancel()
		select {
		case <-sigs:
			fmt.Fprintln(os.Stderr, "rlslab: second signal, exiting at once")
		case <-time.After(mainExitTimeout):
			fmt.Fprintf(os.Stderr, "rlslab: not shut down within %s of the signal, exiting\n", mainExitTimeout)
		}
		os.Exit(1)
	}()
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rlslab:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode is 2 for usage errors (bad flags, unknown scenario or variant)
// and 1 for everything else.
func exitCode(err error) int {
	if errors.Is(err, flag.ErrHelp) || rlslab.ErrorCode(err) == rlslab.EINVALID {
		return 2
	}
	return 1
}

// usageError marks err as a usage error (exit 2).
func usageError(format string, args ...any) error {
	return rlslab.Errorf(rlslab.EINVALID, format, args...)
}

// run is the whole program: it parses args, reads the environment through
// getenv and writes results to stdout and logs to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(ctx, args, getenv, stdout, stderr)
	case "list":
		return list(args, stdout, stderr)
	case "run":
		return runScenario(ctx, args, getenv, stdout, stderr)
	case "bench":
		if len(args) == 0 || args[0] != "workshop" {
			return usageError("usage: rlslab bench workshop [-url URL] [-participants N] [-db URL] [-pid PID]")
		}
		return benchWorkshop(ctx, args[1:], stdout, stderr)
	case "help":
		fmt.Fprintln(stdout, "usage: rlslab [serve|list|run] [flags]; rlslab COMMAND -h for its flags")
		return nil
	}
	return usageError("unknown command %q (commands: serve, list, run, bench)", cmd)
}

// dbFlags are the provisioning flags serve and run share.
type dbFlags struct {
	db        string
	dataDir   string
	ephemeral bool
	maxLabs   int
	connLimit int
	pgbouncer string
	budget    int
	margin    int
	verbose   bool
}

// register adds the flags to fs. keeps says whether a local cluster outlives
// the command by default (serve keeps it in -data-dir's default; a one-off
// run removes it unless -data-dir is given), for -db's help text.
func (d *dbFlags) register(fs *flag.FlagSet, keeps bool) {
	local := "a local cluster of the PostgreSQL binaries, kept in -data-dir (temporary with -ephemeral)"
	if !keeps {
		local = "a temporary local cluster of the PostgreSQL binaries (kept when -data-dir is given)"
	}
	fs.StringVar(&d.db, "db", "auto", `PostgreSQL to use: "auto" (DATABASE_URL, else `+local+`, else Docker) or a postgres:// URL of a superuser`)
	fs.StringVar(&d.dataDir, "data-dir", "", "keep the local cluster in this directory; default: "+rootDataDir+" as root, else a per-user directory ($XDG_DATA_HOME/rlslab/pgdata, else the user cache directory's rlslab/pgdata), so progress and fast restarts survive")
	fs.BoolVar(&d.ephemeral, "ephemeral", false, "use a temporary local cluster, removed on exit (progress is lost)")
	fs.IntVar(&d.connLimit, "lab-conn-limit", sessions.DefaultConnLimit, "CONNECTION LIMIT of each lab's app role")
	fs.StringVar(&d.pgbouncer, "pgbouncer", "auto", `PgBouncer for the PgBouncer lesson: "auto" (local binary, else Docker) or the postgres:// URL of a running PgBouncer's admin console`)
	fs.IntVar(&d.budget, "conn-budget", 0, "the most PostgreSQL connections rlslab may hold; 0 computes it from the server (max_connections − reserved − margin)")
	fs.IntVar(&d.margin, "conn-margin", sessions.DefaultMargin, "connections the computed budget leaves for other clients of the server")
	fs.BoolVar(&d.verbose, "v", false, "log debug messages")
}

// logger returns the program's logger.
func (d *dbFlags) logger(stderr io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if d.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// autoMaxConnections is max_connections of a cluster rlslab starts itself:
// it owns that cluster, so it sizes it for a budget that lets many runs go
// at once (a backend costs a few MB only while it exists).
const autoMaxConnections = 200

// provision finds or starts PostgreSQL. A cluster rlslab starts is sized
// for the budget asked for (or autoMaxConnections).
func (d *dbFlags) provision(ctx context.Context, getenv func(string) string, log *slog.Logger) (*pgenv.Server, error) {
	maxConns := autoMaxConnections
	if d.budget > 0 {
		maxConns = d.budget + d.margin + 3
	}
	if d.ephemeral && d.dataDir != "" {
		return nil, usageError("-ephemeral and -data-dir exclude each other")
	}
	dir, chosen := d.dataDir, d.dataDir != ""
	if !chosen && !d.ephemeral {
		dir = defaultDataDir(getenv, os.Geteuid())
	}
	pg, err := pgenv.Start(ctx, pgenv.Options{DB: d.db, DataDir: dir, MaxConnections: maxConns, Getenv: getenv, Logger: log, Containers: docker.Containers{}})
	if err != nil && !chosen && dir != "" {
		// The default directory is a convenience: when it cannot be used
		// (another rlslab holds it), fall back to a temporary cluster.
		log.Warn("the per-user data directory cannot be used; using a temporary cluster (progress is lost on exit)", "dir", dir, "err", err)
		return pgenv.Start(ctx, pgenv.Options{DB: d.db, MaxConnections: maxConns, Getenv: getenv, Logger: log, Containers: docker.Containers{}})
	}
	return pg, err
}

// rootDataDir is where -db auto keeps its cluster when rlslab runs as
// root: PostgreSQL then runs as an unprivileged user, who cannot reach
// root's home directory but can reach /var/lib (rlslab creates
// /var/lib/rlslab and gives pgdata in it to that user).
const rootDataDir = "/var/lib/rlslab/pgdata"

// defaultDataDir is where -db auto keeps its local cluster unless told
// otherwise: rootDataDir as root; else $XDG_DATA_HOME/rlslab/pgdata, else
// rlslab/pgdata in the user cache directory, or "" (a temporary cluster)
// when neither is known.
func defaultDataDir(getenv func(string) string, euid int) string {
	if euid == 0 {
		return rootDataDir
	}
	if x := getenv("XDG_DATA_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "rlslab", "pgdata")
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "rlslab", "pgdata")
}

// parseInterleaved parses flags that may come before or after positional
// arguments (Go's flag package stops at the first positional argument).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// serve runs the web server until ctx ends.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var d dbFlags
	d.register(fs, true)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on")
	fs.IntVar(&d.maxLabs, "max-labs", sessions.DefaultMaxLabs, "labs open at once")
	ttl := fs.Duration("lab-ttl", sessions.DefaultTTL, "a lab whose owner is away this long is closed and dropped")
	lifetime := fs.Duration("lab-max-life", sessions.DefaultMaxLifetime, "no lab lives longer than this")
	sqlTimeout := fs.Duration("sql-timeout", sessions.DefaultSQLTimeout, "free play: rlslab cancels a learner's statement after this long")
	readTimeout := fs.Duration("read-timeout", 15*time.Second, "how long a client may take to send a request (a third of it for the headers)")
	spares := fs.Int("spares", sessions.DefaultSpares, "sandboxes kept ready in advance so a new lab is ready at once (-1: none); workshops add what they expect")
	proxyAddr := fs.String("proxy-addr", defaultProxyAddr, `where rlslab's PostgreSQL proxy listens, through which a learner's own app connects to their lab ("off": no proxy)`)
	instance := fs.String("instance", "", "this instance's name among the rlslab instances sharing the database (default: the host's name and a random suffix)")
	advertise := fs.String("advertise", "", "host:port where the other instances reach this one's HTTP (default: the -addr it listens on)")
	proxyAdvertise := fs.String("proxy-advertise", "", "host:port where the other instances' proxies reach this one's PostgreSQL proxy, to forward an app's connection to a lab this one runs (default: the -proxy-addr it listens on)")
	pprofAddr := fs.String("pprof-addr", "", "serve Go's runtime profiles (CPU, block, mutex) on this loopback address, for profiling under a benchmark (default: off)")
	var labDBs labDBFlags
	fs.Var(&labDBs, "lab-db", "a postgres:// URL of a superuser of a PostgreSQL server to make labs on; repeat it for several (a new lab goes to one with a spare ready, else the least loaded; each has its own budget, spares and sweep). Default: the server of -db")
	perAddr := fs.Int("labs-per-address", sessions.DefaultLabsPerAddress, "labs one client address may hold outside a workshop; one more recycles its least recently active idle lab (0: no cap)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageError("%v", err)
	}
	if len(pos) > 0 {
		return usageError("serve takes no arguments, got %q", pos)
	}
	if d.maxLabs < 1 || d.maxLabs > sessions.MaxMaxLabs {
		return usageError("-max-labs %d: want 1 to %d", d.maxLabs, sessions.MaxMaxLabs)
	}
	log := d.logger(stderr)

	catalog := scenarios.DefaultCatalog()
	ls, err := lessons.Load(lessons.Content(), catalog)
	if err != nil {
		return fmt.Errorf("lessons: %w", err)
	}
	pg, err := d.provision(ctx, getenv, log)
	if err != nil {
		return err
	}
	defer pg.Close()
	// From here on, PostgreSQL's death ends every phase: start-up, spare
	// building, serving.
	ctx, stopWatching := watchPostgres(ctx, pg)
	defer stopWatching()
	bouncer.Sweep(log) // PgBouncer directories a killed rlslab left
	// The admin pool and rlslab's own tables come first: the lab manager
	// shares the pool, and the services that the manager tells of run ends
	// (recordings, progress) need the tables from the start.
	admin, err := sessions.OpenAdmin(ctx, pg.URL)
	if err != nil {
		return postgresDied(ctx, err)
	}
	defer admin.Close()
	st, err := store.Open(ctx, admin, log)
	if err != nil {
		return postgresDied(ctx, fmt.Errorf("rlslab's own tables: %w", err))
	}
	defer st.Close() // after the keeper has saved (the defer below runs first)
	var pgVersion string
	if err := admin.QueryRow(ctx, "SHOW server_version").Scan(&pgVersion); err != nil {
		return postgresDied(ctx, err)
	}
	if n, err := st.Prune(ctx); err == nil && n > 0 {
		log.Info("old recordings pruned", "count", n)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if err := servePprof(ctx, *pprofAddr, log); err != nil {
		return err
	}
	if *advertise == "" {
		*advertise = advertiseAddr(ln.Addr())
	}
	// The proxy's address is had before the labs open: the instance
	// registers it, for the other instances' proxies to forward to.
	proxyLn := listenProxy(*proxyAddr, log)
	if proxyLn != nil {
		defer proxyLn.Close()
		if *proxyAdvertise == "" {
			*proxyAdvertise = advertiseAddr(proxyLn.Addr())
		}
	} else {
		*proxyAdvertise = ""
	}
	db := sessions.NewDB(st, admin, log)
	keeper := sessions.NewKeeper(st, pgVersion, log)
	progress := sessions.NewProgress(db, ls, log)
	labs, err := sessions.Open(ctx, sessions.Config{AdminURL: pg.URL, Admin: admin, MaxLabs: d.maxLabs, TTL: *ttl, MaxLifetime: *lifetime,
		ConnLimit: d.connLimit, Budget: d.budget, Margin: d.margin, Spares: *spares, LabsPerAddress: labsPerAddress(*perAddr), SQLTimeout: *sqlTimeout,
		Bouncers: bouncerStarter(d.pgbouncer, log), Catalog: catalog, Logger: log,
		Subscribers: []sessions.RunSubscriber{keeper, progress}, Shared: admin, Instance: *instance, Address: *advertise, ProxyAddress: *proxyAdvertise, LabServers: labDBs})
	if err != nil {
		return postgresDied(ctx, err)
	}
	defer func() {
		// In this order: the labs' runs are cancelled and handed to the
		// keeper, the keeper saves them, and only then is the store
		// closed. After PostgreSQL died there is nothing to wait for.
		budget := shutdownTimeout
		if errors.Is(context.Cause(ctx), errPostgresDied) {
			budget = diedCloseTimeout
		}
		cctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		begin := time.Now()
		labs.Close(cctx)
		keeper.Close(cctx)
		log.Info("runs recorded, labs closed", "took", time.Since(begin).Round(time.Millisecond))
	}()

	workshops := sessions.NewWorkshops(db, labs, ls, log)
	if err := workshops.Prepare(ctx); err != nil {
		log.Warn("labs not prepared for open workshops", "err", err)
	}
	// Every instance keeps its share of each open workshop's labs ready,
	// whichever instance the workshop was made on. It stops before the
	// labs close (defers run last first).
	kctx, stopKeeping := context.WithCancel(ctx)
	keeping := make(chan struct{})
	go func() { defer close(keeping); workshops.KeepPrepared(kctx, keepPreparedEvery) }()
	defer func() { stopKeeping(); <-keeping }()
	// The proxy's connections end before the labs close (defers run last
	// first).
	proxy, stopProxy := startProxy(ctx, proxyLn, labs, log)
	defer stopProxy()
	handler := web.NewServer(labs, ls, static.FS(), log).WithServices(web.Services{
		Workshops: workshops, Progress: progress, Recordings: sessions.NewRecordings(db)}).WithProxy(proxy)
	defer handler.Close()
	// A request for a lab another instance runs goes there.
	srv := newHTTPServer(web.NewForwarder(handler, labs.Locate, labs.Name(), labs.Tag(), log), *readTimeout)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "rlslab listening on http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	died := errors.Is(context.Cause(ctx), errPostgresDied)
	log.Info("shutting down", "postgres_died", died)
	// Websockets are hijacked connections that Shutdown does not wait for:
	// tell their watchers first, so they close at once.
	handler.Close()
	budget := httpShutdownTimeout
	if died {
		budget = diedCloseTimeout
	}
	sctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("shutdown: connections still open were closed", "err", err)
		srv.Close()
	}
	if died {
		return errPostgresDied
	}
	return nil
}

// keepPreparedEvery is how often an instance reads what the open
// workshops still expect.
const keepPreparedEvery = 2 * time.Second

// errPostgresDied ends serve when the PostgreSQL rlslab started exits
// without being told to.
var errPostgresDied = errors.New("PostgreSQL exited unexpectedly; rlslab stops (start it again)")

// diedCloseTimeout bounds the shutdown after PostgreSQL died: nothing is
// left to drop or save, only goroutines to end.
const diedCloseTimeout = time.Second

// watchPostgres returns a context that ends, with the cause
// errPostgresDied, when pg dies; stop releases the watch.
func watchPostgres(ctx context.Context, pg *pgenv.Server) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-pg.Died():
			cancel(errPostgresDied)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(context.Canceled) }
}

// postgresDied returns errPostgresDied when ctx ended by PostgreSQL's
// death (err is then a consequence of it), else err.
func postgresDied(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errPostgresDied) {
		return errPostgresDied
	}
	return err
}

// scenarioJSON is one scenario as rlslab list -json prints it.
type scenarioJSON struct {
	ID       string           `json:"id"`
	Title    string           `json:"title"`
	Variants []engine.Variant `json:"variants"`
	Pacing   engine.Pacing    `json:"pacing"`
	LiveWhy  string           `json:"live_why,omitempty"`
}

// list prints the scenario ids and their variants.
func list(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseInterleaved(fs, args); err != nil {
		return usageError("%v", err)
	}
	all := scenarios.DefaultCatalog().All()
	if *asJSON {
		out := make([]scenarioJSON, len(all))
		for i, s := range all {
			out[i] = scenarioJSON{ID: s.ID, Title: s.Title, Variants: s.Variants, Pacing: s.Pacing, LiveWhy: s.LiveWhy}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	for _, s := range all {
		fmt.Fprintf(stdout, "%-18s %s\n", s.ID, s.Title)
		for _, v := range s.Variants {
			fmt.Fprintf(stdout, "    -variant %-22s %s\n", v.Name, v.Summary)
		}
	}
	return nil
}

// paramFlags collects repeated -param name=value flags.
type paramFlags map[string]string

func (p paramFlags) String() string {
	keys := make([]string, 0, len(p))
	for k, v := range p {
		keys = append(keys, k+"="+v)
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}

func (p paramFlags) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", v)
	}
	p[k] = val
	return nil
}

// runScenario runs one scenario variant headless at full speed against the
// same provisioning as serve, and prints its outcome.
func runScenario(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var d dbFlags
	d.register(fs, false)
	d.maxLabs = 1
	variant := fs.String("variant", "", "variant to run (see rlslab list)")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	params := paramFlags{}
	fs.Var(params, "param", "scenario parameter name=value (repeatable)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return usageError("%v", err)
	}
	if len(pos) != 1 {
		return usageError("usage: rlslab run SCENARIO -variant VARIANT [-json] [-db URL]")
	}
	catalog := scenarios.DefaultCatalog()
	sc, err := catalog.Lookup(pos[0])
	if err != nil {
		return err
	}
	if *variant == "" {
		return usageError("-variant is required; %s has: %s", sc.ID, strings.Join(sc.VariantNames(), ", "))
	}
	if err := sc.CheckVariant(*variant); err != nil {
		return err
	}
	if _, err := sc.ParseParams(params); err != nil {
		return err
	}
	if d.dataDir == "" {
		d.ephemeral = true // a one-off run keeps nothing unless told where
	}
	log := d.logger(stderr)
	pg, err := d.provision(ctx, getenv, log)
	if err != nil {
		return err
	}
	defer pg.Close()
	labs, err := sessions.Open(ctx, sessions.Config{AdminURL: pg.URL, MaxLabs: 1, Spares: -1, ConnLimit: d.connLimit, Budget: d.budget, Margin: d.margin, Bouncers: bouncerStarter(d.pgbouncer, log), Catalog: catalog, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		labs.Close(cctx)
	}()
	lab, err := labs.Create(ctx, "cli")
	if err != nil {
		return err
	}
	if err := lab.Start(sessions.RunRequest{Scenario: sc.ID, Variant: *variant, Speed: engine.Speed{Max: true}, Params: params}); err != nil {
		return err
	}
	runErr := lab.Wait(ctx)
	st := lab.State(context.WithoutCancel(ctx))
	out := engine.OutcomeOf(st)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else {
		printOutcome(stdout, out)
	}
	if runErr != nil {
		return fmt.Errorf("run %s/%s: %w", sc.ID, *variant, runErr)
	}
	return nil
}

// printOutcome prints an outcome for people.
func printOutcome(w io.Writer, o engine.Outcome) {
	fmt.Fprintf(w, "%s / %s: %s, %d requests, %d leaks, %d errors\n", o.Scenario, o.Variant, o.Status, len(o.Requests), o.Leaks, o.Errors)
	show := func(t *string) string {
		if t == nil {
			return "NULL"
		}
		return "'" + *t + "'"
	}
	for _, r := range o.Requests {
		mark := ""
		if r.Leak {
			mark = "  LEAK"
		}
		if r.Error != "" {
			mark = "  ERROR " + r.SQLState + ": " + r.Error
		}
		fmt.Fprintf(w, "  #%-3d tenant %-4s %-12s backend %-7d ran under %-6s rows %d (other tenant's %d)%s\n",
			r.Seq, show(r.Tenant), r.Pattern, r.PID, show(r.SeenTenant), r.Rows, r.ForeignRows, mark)
	}
	for _, n := range o.Notes {
		fmt.Fprintln(w, "  -", n)
	}
}

// bouncerStarter wires internal/bouncer into the scenario engine: a
// PgBouncer got as mode says ("auto", "local", "docker" or a URL).
func bouncerStarter(mode string, log *slog.Logger) engine.BouncerStarter {
	return func(ctx context.Context, sb engine.Sandbox, o engine.BouncerOptions) (engine.Bouncer, error) {
		b, err := bouncer.ForApp(ctx, mode, sb.AppURL, o.PoolSize, o.ResetQueryAlways, docker.Containers{}, log)
		if err != nil {
			return nil, err
		}
		return b, nil
	}
}

// newHTTPServer returns the HTTP server with its timeouts: slow or idle
// clients cannot hold connections for ever (websockets keep deadlines of
// their own).
func newHTTPServer(h http.Handler, readTimeout time.Duration) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readTimeout / 3,
		ReadTimeout:       readTimeout,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
}

// labsPerAddress turns the -labs-per-address flag (0: no cap) into
// sessions.Config's field (negative: no cap).
func labsPerAddress(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// advertiseAddr is the address other instances reach this one at when
// -advertise is not given: where it listens, or the host's name with its
// port when it listens on every interface.
func advertiseAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	host, err := os.Hostname()
	if err != nil {
		return a.String()
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
