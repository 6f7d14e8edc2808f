package scenarios

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	bouncer "github.com/rlslab/rlslab/internal/bouncer/admin"
	"github.com/rlslab/rlslab/scenarios/engine"
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// Variants of pgbouncer-tx besides the patterns session-set, tx-local and
// batch-local (stable names: tools and lessons rely on them).
const (
	PgBouncerTxResetAlways = "reset-always"
	PgBouncerTxPrepared    = "prepared"
	PgBouncerTxFanIn       = "fan-in"
)

// Metric and timing names of pgbouncer-tx (tests read them).
const (
	MetricPgBouncerPID     = "pgbouncer pid"
	MetricPgBouncerVersion = "pgbouncer version"
	TimingDirect           = "direct"
	TimingBouncer          = "pgbouncer"
	TimingBouncerReset     = "pgbouncer + reset always"
)

// bouncerPollEvery is how often the admin console is read during a run.
const bouncerPollEvery = 150 * time.Millisecond

// latencyRounds is how many requests each latency target measures.
const latencyRounds = 300

// fanInHold is how long each fan-in request keeps its server connection
// (pg_sleep inside its transaction), so that clients have to queue.
const fanInHold = 20 * time.Millisecond

// PgBouncerTx returns the pgbouncer-tx scenario: behind PgBouncer in
// transaction mode a server connection serves whichever client runs a
// transaction next, so a session-level SET made by one app instance is
// inherited by another; server_reset_query_always stops that at a cost;
// pgx's cached prepared statements fail on PgBouncer 1.18; and many client
// connections share a few server connections.
func PgBouncerTx() *engine.Scenario {
	// cross is a variant played by three app instances on one server
	// connection, the first scoping the way writer says.
	cross := func(name, writer string, reset bool, summary string) engine.Variant {
		need := 1 // PgBouncer's one server connection
		if reset {
			need = 3 // and, for the cost, a second PgBouncer's and a direct connection
		}
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(need), Run: func(ctx context.Context, env *engine.Env) error {
			return runBouncer(ctx, env, 1, reset, func(rb *bouncerRun, ctx context.Context) error { return rb.crossClient(ctx, writer, reset) })
		}}
	}
	return &engine.Scenario{
		ID:      "pgbouncer-tx",
		Pacing:  engine.PacingLive,
		LiveWhy: "clients queue behind pg_sleep inside transactions, and PgBouncer's console is sampled over time",
		Title:   "PgBouncer in transaction mode: a session SET and the other clients",
		Variants: []engine.Variant{
			cross(engine.PatternSessionSet, engine.PatternSessionSet, false, "Three app instances behind one PgBouncer (default_pool_size = 1). app-1 scopes with a session-level set_config; app-2 sends a request that forgot to scope."),
			cross(engine.PatternTxLocal, engine.PatternTxLocal, false, "The same three instances, scoping with set_config(..., true) inside BEGIN ... COMMIT; app-2 forgets to scope."),
			cross(engine.PatternBatchLocal, engine.PatternBatchLocal, false, "The same with the local set_config and the query in one pgx.Batch: one round trip."),
			cross(PgBouncerTxResetAlways, engine.PatternSessionSet, true, "session-set again, with PgBouncer running DISCARD ALL after every transaction (server_reset_query_always = 1); then timed: direct, through PgBouncer, and with the reset."),
			{Name: PgBouncerTxPrepared, Conns: engine.Fixed(1),
				Summary: "pgx's default query mode (cached prepared statements) through PgBouncer 1.18 in transaction mode, then QueryExecModeExec and the simple protocol.",
				Run: func(ctx context.Context, env *engine.Env) error {
					return runBouncer(ctx, env, 1, false, (*bouncerRun).prepared)
				}},
			{Name: PgBouncerTxFanIn,
				Summary: "N app instances × M pool connections each, multiplexed onto default_pool_size server connections; both sides counted live.",
				// PgBouncer's server connections and the direct connection of
				// the cost measurement.
				Conns: func(p engine.Params, sb engine.Sandbox) int { return fanInPoolSize(p, sb) + 1 },
				Run: func(ctx context.Context, env *engine.Env) error {
					size := fanInPoolSize(env.Params, env.Sandbox)
					if asked := env.Params.Get("pool_size"); asked > size {
						env.Tracker().Note(fmt.Sprintf("pool_size %d is more than the lab's app role may open (CONNECTION LIMIT %d, one kept for the direct measurement): PgBouncer runs with default_pool_size = %d.", asked, env.Sandbox.ConnLimit, size))
					}
					return runBouncer(ctx, env, size, false, func(rb *bouncerRun, ctx context.Context) error { return rb.fanIn(ctx, size) })
				}},
		},
		Params: []engine.Param{
			{Name: "instances", Summary: "fan-in: app instances (pools), 1 to 10", Min: 1, Max: 10, Default: 4},
			{Name: "conns", Summary: "fan-in: connections per instance's pool, 1 to 10 (instances × conns ≤ 100, under PgBouncer's max_client_conn of 200)", Min: 1, Max: 10, Default: 3},
			{Name: "pool_size", Summary: "fan-in: PgBouncer's default_pool_size (server connections), 1 to 20, capped below the lab role's CONNECTION LIMIT", Min: 1, Max: 20, Default: 2},
		},
		MinTenants: 3,
	}
}

// bouncerRun is one run's PgBouncer and what the run read about it.
type bouncerRun struct {
	env      *engine.Env
	b        engine.Bouncer
	db, user string
	password string
	started  time.Time
	cancel   context.CancelCauseFunc

	mu      sync.Mutex
	held    map[int]*string // remote_pid → the tenant setting last read on that backend
	links   map[string]int  // a client's ptr → the remote_pid of the server it was last seen linked to
	ports   map[int]string  // a client connection's local TCP port → its instance
	peakCl  int
	peakSv  int
	peakMax time.Duration
}

// runBouncer starts the run's PgBouncer with poolSize server connections
// (and server_reset_query_always when reset), polls its admin console while
// body runs, and turns the death of the PgBouncer into a clear error.
func runBouncer(ctx context.Context, env *engine.Env, poolSize int, reset bool, body func(*bouncerRun, context.Context) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rb, err := startBouncer(ctx, env, poolSize, reset)
	if err != nil {
		return err
	}
	rb.cancel = cancel
	stop := rb.poll(ctx)
	err = body(rb, ctx)
	stop()
	return rb.fatal(ctx, err)
}

// fatal turns a run error into what the learner should read: if the
// PgBouncer died, say so (the poller records that as the cause).
func (rb *bouncerRun) fatal(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	if err != nil && ctx.Err() == nil && !isServerError(err) && !rb.alive(ctx) {
		return rb.deadError(err)
	}
	return err
}

// isServerError reports whether PostgreSQL (or PgBouncer) answered err with
// an SQLSTATE, as opposed to a broken connection.
func isServerError(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe)
}

// bouncerDead is the error of a run whose PgBouncer stopped answering.
type bouncerDead struct{ msg string }

func (e bouncerDead) Error() string { return e.msg }

// deadError says the run's PgBouncer is gone.
func (rb *bouncerRun) deadError(err error) error {
	if errors.As(err, new(bouncerDead)) {
		return err
	}
	who := "PgBouncer " + rb.b.Version()
	if pid := rb.b.PID(); pid > 0 {
		who += fmt.Sprintf(" (pid %d)", pid)
	}
	return bouncerDead{fmt.Sprintf("%s stopped answering: %v. The run cannot go on without it; run the scenario again to start a new PgBouncer", who, err)}
}

// alive asks PgBouncer's admin console for its version.
func (rb *bouncerRun) alive(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(cctx, rb.b.AdminURL())
	if err != nil {
		return false
	}
	defer c.Close(cctx)
	_, err = c.Exec(cctx, "SHOW VERSION", pgx.QueryExecModeSimpleProtocol)
	return err == nil
}

// fanInPoolSize is the pool_size parameter, kept below the lab role's
// CONNECTION LIMIT (one connection is left for the direct measurement).
func fanInPoolSize(p engine.Params, sb engine.Sandbox) int {
	if n := p.Get("pool_size"); sb.ConnLimit <= 0 || n <= sb.ConnLimit-1 {
		return n
	}
	return sb.ConnLimit - 1
}

// appCredentials reads the app role's database, user and password from the
// sandbox URL: PgBouncer logs in upstream with them.
func appCredentials(appURL string) (db, user, password string, err error) {
	cfg, err := pgconn.ParseConfig(appURL)
	if err != nil {
		return "", "", "", fmt.Errorf("app role URL: %w", err)
	}
	return cfg.Database, cfg.User, cfg.Password, nil
}

// startBouncer starts a PgBouncer in front of the lab's database as the
// sandbox says, stopped when the run's environment closes.
func startBouncer(ctx context.Context, env *engine.Env, poolSize int, reset bool) (*bouncerRun, error) {
	b, err := env.StartBouncer(ctx, engine.BouncerOptions{PoolSize: poolSize, ResetQueryAlways: reset})
	if err != nil {
		return nil, fmt.Errorf("start PgBouncer: %w", err)
	}
	db, user, pw, _ := appCredentials(env.Sandbox.AppURL)
	rb := &bouncerRun{env: env, b: b, db: db, user: user, password: pw, started: time.Now(),
		held: map[int]*string{}, ports: map[int]string{}, links: map[string]int{}}
	tr := env.Tracker()
	tr.SetMetric(MetricPgBouncerVersion, b.Version(), versionNumber(b.Version()))
	if pid := b.PID(); pid > 0 {
		tr.SetMetric(MetricPgBouncerPID, strconv.Itoa(pid), float64(pid))
	}
	mode := "server_reset_query_always = 0"
	if reset {
		mode = "server_reset_query_always = 1"
	}
	tr.Update(func(s *engine.State) {
		s.Pairing = &engine.Pairing{Version: b.Version(), Mode: "transaction"}
	})
	if b.Kind() == "url" {
		tr.Note(fmt.Sprintf("PgBouncer %s was given by URL: its own pool_mode, default_pool_size and server_reset_query_always apply, not the ones this variant asks for (default_pool_size = %d, %s).", b.Version(), poolSize, mode))
	}
	err = env.Step(ctx, fmt.Sprintf("PgBouncer %s (%s) started in front of database %s: pool_mode = transaction, default_pool_size = %d, %s. Each app instance below is its own pgxpool, so its connections are PgBouncer clients.",
		b.Version(), b.Kind(), db, poolSize, mode))
	return rb, err
}

// versionNumber turns "1.18.0" into 1.18 (major + minor/100).
func versionNumber(v string) float64 {
	parts := strings.Split(v, ".")
	if len(parts) < 2 {
		return 0
	}
	major, _ := strconv.Atoi(parts[0])
	minor, _ := strconv.Atoi(parts[1])
	return float64(major) + float64(minor)/100
}

// openClient opens the pool of one app instance through PgBouncer, with
// every connection opened at once, and the query exec mode given (nil keeps
// pgx's default, the statement cache). The pairing labels its client
// connections by their local TCP port, not by application_name, which
// PgBouncer also passes on to whatever server connection a client gets.
func (rb *bouncerRun) openClient(ctx context.Context, name string, conns int, mode *pgx.QueryExecMode) (*engine.Pool, error) {
	return rb.env.OpenPool(ctx, engine.PoolOptions{
		Name:       name,
		ConnString: rb.b.URL(rb.db, rb.user, rb.password),
		MaxConns:   int32(conns),
		MinConns:   int32(conns),
		Configure: func(cfg *pgxpool.Config) {
			if mode != nil {
				cfg.ConnConfig.DefaultQueryExecMode = *mode
			}
			cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
				rb.notePort(c, name)
				return nil
			}
		},
	})
}

// notePort remembers which instance opened the client connection on c's
// local port: SHOW CLIENTS lists clients by address and port.
func (rb *bouncerRun) notePort(c *pgx.Conn, name string) {
	nc := c.PgConn().Conn()
	if nc == nil {
		return
	}
	if a, ok := nc.LocalAddr().(*net.TCPAddr); ok {
		rb.mu.Lock()
		rb.ports[a.Port] = name
		rb.mu.Unlock()
	}
}

// see records what a backend was read to hold.
func (rb *bouncerRun) see(pid uint32, tenant *string) {
	if pid == 0 {
		return
	}
	var v *string
	if tenant != nil {
		s := *tenant
		v = &s
	}
	rb.mu.Lock()
	rb.held[int(pid)] = v
	rb.mu.Unlock()
}

// poll reads the admin console every bouncerPollEvery into the pairing and
// the chart until the returned stop is called (stop reads it one last time).
// If the console stops answering, the run is cancelled with a clear cause.
func (rb *bouncerRun) poll(ctx context.Context) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	var admin *pgx.Conn
	var mu sync.Mutex // guards admin between the poller and stop
	read := func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if admin == nil {
			c, err := pgx.Connect(ctx, rb.b.AdminURL())
			if err != nil {
				return err
			}
			admin = c
		}
		err := rb.readPairing(ctx, admin)
		if err != nil {
			admin.Close(context.WithoutCancel(ctx))
			admin = nil
		}
		return err
	}
	go func() {
		defer close(done)
		t := time.NewTicker(bouncerPollEvery)
		defer t.Stop()
		failures := 0
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			rctx, rcancel := context.WithTimeout(pctx, 2*time.Second)
			err := read(rctx)
			rcancel()
			switch {
			case err == nil:
				failures = 0
			case pctx.Err() != nil:
				return
			default:
				failures++
				if failures >= 2 {
					rb.cancel(rb.deadError(err))
					return
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
		if ctx.Err() == nil {
			fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
			_ = read(fctx)
			fcancel()
		}
		mu.Lock()
		if admin != nil {
			admin.Close(context.Background())
			admin = nil
		}
		mu.Unlock()
	}
}

// readPairing runs SHOW CLIENTS, SHOW SERVERS and SHOW POOLS and puts them
// into the state, the peaks and the chart.
func (rb *bouncerRun) readPairing(ctx context.Context, admin *pgx.Conn) error {
	clients, err := bouncer.ShowClients(ctx, admin)
	if err != nil {
		return err
	}
	servers, err := bouncer.ShowServers(ctx, admin)
	if err != nil {
		return err
	}
	pools, err := bouncer.ShowPools(ctx, admin)
	if err != nil {
		return err
	}
	p := engine.Pairing{Version: rb.b.Version(), Mode: "transaction"}
	rb.mu.Lock()
	for _, c := range clients {
		if c.Database != rb.db {
			continue // the admin console's own connection
		}
		label := rb.ports[c.Port]
		if label == "" {
			label = "port " + strconv.Itoa(c.Port)
		}
		p.Clients = append(p.Clients, engine.PeerConn{Ptr: c.Ptr, Link: c.Link, Label: label, State: c.State})
	}
	for _, s := range servers {
		if s.Database != rb.db {
			continue
		}
		var held *string
		if v, ok := rb.held[s.RemotePID]; ok && v != nil {
			h := *v
			held = &h
		}
		p.Servers = append(p.Servers, engine.PeerConn{Ptr: s.Ptr, Link: s.Link, Label: fmt.Sprintf("backend %d", s.RemotePID),
			State: s.State, PID: uint32(s.RemotePID), Tenant: held})
	}
	var mine *engine.BouncerPool
	for _, bp := range pools {
		if bp.Database != rb.db {
			continue
		}
		p.Pools = append(p.Pools, engine.BouncerPool{Database: bp.Database, User: bp.User, ClActive: bp.ClActive, ClWaiting: bp.ClWaiting,
			SvActive: bp.SvActive, SvIdle: bp.SvIdle + bp.SvUsed, MaxWaitMS: bp.MaxWait.Milliseconds()})
		mine = &p.Pools[len(p.Pools)-1]
	}
	if len(p.Servers) > rb.peakSv {
		rb.peakSv = len(p.Servers)
	}
	if mine != nil {
		rb.peakCl = max(rb.peakCl, mine.ClWaiting)
		rb.peakMax = max(rb.peakMax, time.Duration(mine.MaxWaitMS)*time.Millisecond)
	}
	// A pairing seen for the first time goes on the timeline: which client
	// was linked to which backend, and when.
	pidOf := map[string]uint32{}
	for _, sv := range p.Servers {
		pidOf[sv.Ptr] = sv.PID
	}
	var newLinks []engine.PeerConn
	seen := map[string]bool{}
	for _, c := range p.Clients {
		pid := pidOf[c.Link]
		if c.Link == "" || pid == 0 {
			continue
		}
		seen[c.Ptr] = true
		if rb.links[c.Ptr] != int(pid) {
			rb.links[c.Ptr] = int(pid)
			newLinks = append(newLinks, engine.PeerConn{Label: c.Label, PID: pid})
		}
	}
	for ptr := range rb.links {
		if !seen[ptr] {
			delete(rb.links, ptr)
		}
	}
	rb.mu.Unlock()
	for _, l := range newLinks {
		rb.env.Tracker().AddLink(l.Label, l.PID)
	}
	sort.Slice(p.Clients, func(i, j int) bool { return p.Clients[i].Label < p.Clients[j].Label })
	sort.Slice(p.Servers, func(i, j int) bool { return p.Servers[i].PID < p.Servers[j].PID })
	tr := rb.env.Tracker()
	tr.Update(func(s *engine.State) { s.Pairing = &p })
	if mine != nil {
		x := time.Since(rb.started).Seconds()
		const chart = "PgBouncer pool (SHOW POOLS)"
		tr.AddPoint(chart, "s", "connections", "cl_active", x, float64(mine.ClActive))
		tr.AddPoint(chart, "s", "connections", "cl_waiting", x, float64(mine.ClWaiting))
		tr.AddPoint(chart, "s", "connections", "sv_active", x, float64(mine.SvActive))
		tr.AddPoint(chart, "s", "connections", "sv_idle", x, float64(mine.SvIdle))
		tr.AddPoint("PgBouncer maxwait", "s", "ms", "maxwait", x, float64(mine.MaxWaitMS))
	}
	return nil
}

// request runs one request through its phases and records what its reads
// say each backend holds. A request that fails is an outcome: it is
// recorded and nil is returned, unless the run itself can't go on (the
// context ended, or PgBouncer died).
func (rb *bouncerRun) request(ctx context.Context, pool *engine.Pool, t engine.Tenant, pattern string) (engine.RequestRow, error) {
	r := pool.NewRequest(t, pattern)
	err := r.Acquire(ctx)
	slot := -1
	if err == nil {
		slot = pool.Slot(r.Conn().Conn())
		if err = r.Scope(ctx); err == nil {
			err = r.Query(ctx)
		}
	}
	if row := r.Row(); row.Error == "" {
		rb.see(row.PID, row.SeenTenant)
	}
	rerr := r.Release(ctx)
	if c, ok := rb.env.Tracker().Conn(pool.Name(), slot); ok && rerr == nil && c.State == engine.ConnIdle {
		rb.see(c.PID, c.Tenant)
	}
	if err == nil {
		err = rerr
	}
	return r.Row(), rb.outcome(ctx, err)
}

// outcome decides whether a request's error stops the run.
func (rb *bouncerRun) outcome(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil {
			return cause
		}
		return ctx.Err()
	}
	if isServerError(err) {
		return nil
	}
	if !rb.alive(ctx) {
		return rb.deadError(err)
	}
	return nil
}

// crossClient is the leak script: three app instances, one server
// connection. app-1 scopes its request the variant's way; app-2 forgets to
// scope; app-3 scopes with a transaction-local set; app-2 forgets again.
func (rb *bouncerRun) crossClient(ctx context.Context, writer string, reset bool) error {
	env := rb.env
	tenants := env.Sandbox.Tenants
	exec := pgx.QueryExecModeExec
	pools := make([]*engine.Pool, 3)
	for i := range pools {
		p, err := rb.openClient(ctx, fmt.Sprintf("app-%d", i+1), 1, &exec)
		if err != nil {
			return err
		}
		pools[i] = p
	}
	if err := env.Step(ctx, "Three app instances (app-1, app-2, app-3) each opened one connection to PgBouncer. They share its one server connection: every box on the left read the same backend PID through PgBouncer."); err != nil {
		return err
	}
	first, err := rb.request(ctx, pools[0], tenants[0], writer)
	if err != nil {
		return err
	}
	leak1, err := rb.request(ctx, pools[1], tenants[1], engine.PatternForgot)
	if err != nil {
		return err
	}
	local, err := rb.request(ctx, pools[2], tenants[2], engine.PatternTxLocal)
	if err != nil {
		return err
	}
	leak2, err := rb.request(ctx, pools[1], tenants[1], engine.PatternForgot)
	if err != nil {
		return err
	}
	rb.noteCrossClient(writer, reset, first, leak1, local, leak2)
	if reset {
		if err := rb.measure(ctx, true); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, "The backend column is the server each request's query ran on through PgBouncer; the timeline joins each client's requests to it.")
}

// noteCrossClient writes what the four requests established.
func (rb *bouncerRun) noteCrossClient(writer string, reset bool, first, leak1, local, leak2 engine.RequestRow) {
	tr := rb.env.Tracker()
	rb.env.NoteRequests(nil)
	samePID := first.PID != 0 && first.PID == leak1.PID && leak1.PID == leak2.PID
	switch {
	case reset:
		tr.Note("With server_reset_query_always = 1 PgBouncer ran DISCARD ALL after each transaction: app-2 inherited nothing, but app-1's own session-level set was gone too before its query ran, in the next transaction. The reset stops the leak; it does not make session-level SET work.")
	case writer == engine.PatternSessionSet && samePID && leak1.Leak:
		tr.Note(fmt.Sprintf("Two different PgBouncer clients (app-1 and app-2) ran on the same backend %d: app-1's session-level set stayed on it, and app-2 inherited it. Transaction pooling hands out server connections per transaction, not per client.", first.PID))
		if leak2.Leak {
			tr.Note("app-3's SET LOCAL did not clean the backend: at COMMIT the setting went back to its session value, and app-2's next forgetful request leaked again.")
		}
	case samePID:
		tr.Note(fmt.Sprintf("All requests ran on backend %d, and no request got another tenant's rows: a transaction-local setting ends with its transaction, before PgBouncer hands the backend to the next client.", first.PID))
	}
}

// measure times the safe request (a local set_config and the query in one
// batch) directly against PostgreSQL and through PgBouncer; withReset adds
// the run's own PgBouncer (server_reset_query_always = 1) and a second one
// without the reset. Rounds are interleaved, so drift hits every target.
func (rb *bouncerRun) measure(ctx context.Context, withReset bool) error {
	env := rb.env
	if err := env.Step(ctx, fmt.Sprintf("Now the cost: %d requests each (BEGIN-less batch: local set_config + query), interleaved, directly to PostgreSQL and through PgBouncer, one connection each, no contention.", latencyRounds)); err != nil {
		return err
	}
	bouncerURL := rb.b.URL(rb.db, rb.user, rb.password)
	specs := []struct{ name, url string }{{TimingDirect, env.Sandbox.AppURL}, {TimingBouncer, bouncerURL}}
	if withReset {
		plain, err := env.StartBouncer(ctx, engine.BouncerOptions{PoolSize: 1})
		if err != nil {
			return fmt.Errorf("pgbouncer-tx: start PgBouncer: %w", err)
		}
		specs[1].url = plain.URL(rb.db, rb.user, rb.password)
		specs = append(specs, struct{ name, url string }{TimingBouncerReset, bouncerURL})
	}
	var targets []measure.Target
	for _, s := range specs {
		cfg, err := pgx.ParseConfig(s.url)
		if err != nil {
			return err
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeExec
		cfg.RuntimeParams["application_name"] = "rlslab " + env.Sandbox.Lab + " measure " + s.name
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return rb.outcome(ctx, fmt.Errorf("measure %s: %w", s.name, err))
		}
		defer c.Close(context.WithoutCancel(ctx))
		rb.notePort(c, "measure "+s.name)
		tenant := env.Sandbox.Tenants[0]
		targets = append(targets, measure.Target{Name: s.name, Run: func(ctx context.Context, _ int) error {
			_, err := ScopedQuery(ctx, c, CostBatch, tenant)
			return err
		}})
	}
	samples, err := measure.Interleave(ctx, targets, measure.Plan{Iterations: latencyRounds, Warmup: 20})
	if err != nil {
		return rb.outcome(ctx, fmt.Errorf("measure %w", err))
	}
	tr := env.Tracker()
	medians := map[string]float64{}
	for _, t := range targets {
		tm := measure.Summarize(samples[t.Name]).Timing()
		medians[t.Name] = tm.MedianUS
		tr.SetTiming(t.Name, tm)
		tr.SetMetric("median "+t.Name, fmt.Sprintf("%.0f µs", tm.MedianUS), tm.MedianUS)
	}
	direct, viaBouncer := medians[TimingDirect], medians[TimingBouncer]
	if direct > 0 {
		tr.SetRatio(TimingBouncer+" / "+TimingDirect, viaBouncer/direct)
	}
	text := fmt.Sprintf("Median request latency over %d requests: %.0f µs direct, %.0f µs through PgBouncer (%.2f×)", latencyRounds, direct, viaBouncer, viaBouncer/direct)
	if withReset {
		r := medians[TimingBouncerReset]
		if viaBouncer > 0 {
			tr.SetRatio(TimingBouncerReset+" / "+TimingBouncer, r/viaBouncer)
		}
		text += fmt.Sprintf(", %.0f µs through PgBouncer with server_reset_query_always = 1 (%.2f× the plain PgBouncer: DISCARD ALL after every transaction)", r, r/viaBouncer)
	}
	tr.Note(text + ".")
	return env.Step(ctx, text+".")
}

// prepared runs one transaction-local request per app instance with pgx's
// default query mode (cached prepared statements), then with
// QueryExecModeExec, then with the simple protocol, all through the one
// server connection.
func (rb *bouncerRun) prepared(ctx context.Context) error {
	env := rb.env
	tr := env.Tracker()
	tenants := env.Sandbox.Tenants
	exec, simple := pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol
	modes := []struct {
		prefix, label string
		mode          *pgx.QueryExecMode
	}{
		{"cache", "pgx's default QueryExecModeCacheStatement", nil},
		{"exec", "QueryExecModeExec", &exec},
		{"simple", "QueryExecModeSimpleProtocol", &simple},
	}
	v := versionNumber(rb.b.Version())
	if v >= 1.21 {
		if cfg, err := rb.showConfig(ctx); err == nil {
			tr.Note(fmt.Sprintf("PgBouncer %s supports protocol-level prepared statements in transaction mode; here max_prepared_statements = %s (0 means off).", rb.b.Version(), cfg["max_prepared_statements"]))
		}
	}
	for _, m := range modes {
		pools := make([]*engine.Pool, 3)
		for i := range pools {
			p, err := rb.openClient(ctx, fmt.Sprintf("%s-%d", m.prefix, i+1), 1, m.mode)
			if err != nil {
				return err
			}
			pools[i] = p
		}
		if err := env.Step(ctx, fmt.Sprintf("Three app instances with %s (pools %s-1..3), one server connection behind PgBouncer %s. Each sends one transaction-local request.", m.label, m.prefix, rb.b.Version())); err != nil {
			return err
		}
		failed, codes, first := 0, map[string]int{}, ""
		for i, p := range pools {
			row, err := rb.request(ctx, p, tenants[i], engine.PatternTxLocal)
			if err != nil {
				return err
			}
			if row.Error != "" {
				failed++
				codes[row.SQLState]++
				if first == "" {
					first = row.Error
				}
			}
		}
		text := fmt.Sprintf("%s through PgBouncer %s in transaction mode: %d of %d requests failed", m.label, rb.b.Version(), failed, len(pools))
		if failed > 0 {
			text += fmt.Sprintf(" (SQLSTATEs %v), first error verbatim: %s", codes, first)
		}
		tr.SetMetric("failed requests, "+m.prefix, fmt.Sprintf("%d of %d", failed, len(pools)), float64(failed))
		tr.Note(text + ".")
		if err := env.Step(ctx, text+"."); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, "pgx caches a named prepared statement per client connection, but through transaction pooling the statement lives on whichever server connection ran it, shared by every client.")
}

// showConfig reads PgBouncer's SHOW CONFIG on a connection of its own.
func (rb *bouncerRun) showConfig(ctx context.Context) (map[string]string, error) {
	c, err := pgx.Connect(ctx, rb.b.AdminURL())
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	return bouncer.ShowConfig(ctx, c)
}

// fanIn opens instances × conns client connections and has all of them
// send requests at once through PgBouncer's poolSize server connections.
func (rb *bouncerRun) fanIn(ctx context.Context, poolSize int) error {
	env := rb.env
	tr := env.Tracker()
	n, m := env.Params.Get("instances"), env.Params.Get("conns")
	exec := pgx.QueryExecModeExec
	pools := make([]*engine.Pool, n)
	for i := range pools {
		p, err := rb.openClient(ctx, fmt.Sprintf("app-%d", i+1), m, &exec)
		if err != nil {
			return err
		}
		pools[i] = p
	}
	if err := env.Step(ctx, fmt.Sprintf("%d app instances × %d connections = %d PgBouncer clients, all open; PgBouncer may open at most %d server connections (default_pool_size).", n, m, n*m, poolSize)); err != nil {
		return err
	}
	const rounds = 3
	var (
		mu           sync.Mutex
		lat          []time.Duration
		pids         = map[uint32]bool{}
		leaks, fails int
		wg           sync.WaitGroup
		runErr       error
	)
	for i, p := range pools {
		for c := range m {
			t := env.Sandbox.Tenants[(i*m+c)%len(env.Sandbox.Tenants)]
			wg.Go(func() {
				for range rounds {
					row, d, err := rb.fanInRequest(ctx, p, t)
					mu.Lock()
					switch {
					case err != nil:
						runErr = cmp.Or(runErr, err)
					case row.Error != "":
						fails++
					default:
						lat, pids[row.PID] = append(lat, d), true
					}
					if row.Leak {
						leaks++
					}
					mu.Unlock()
					if err != nil {
						return
					}
				}
			})
		}
	}
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	list := slices.Sorted(maps.Keys(pids))
	tm := measure.Summarize(lat).Timing()
	tr.SetTiming("fan-in request through PgBouncer", tm)
	rb.mu.Lock()
	peakWait, peakMax, peakSv := rb.peakCl, rb.peakMax, rb.peakSv
	rb.mu.Unlock()
	tr.SetMetric("client connections", strconv.Itoa(n*m), float64(n*m))
	tr.SetMetric("server connections (peak, SHOW SERVERS)", strconv.Itoa(peakSv), float64(peakSv))
	tr.SetMetric("backends that served requests", strconv.Itoa(len(list)), float64(len(list)))
	tr.SetMetric("peak cl_waiting", strconv.Itoa(peakWait), float64(peakWait))
	tr.SetMetric("peak maxwait", peakMax.String(), float64(peakMax.Milliseconds()))
	tr.Note(fmt.Sprintf("%d client connections (%d instances × %d) sent %d requests through PgBouncer; they ran on %d backends %v (default_pool_size = %d). %d leaked, %d failed. Median request %.0f µs, p99 %.0f µs, each holding its server connection %s; at most %d clients waited at once (cl_waiting, sampled every %s).",
		n*m, n, m, n*m*rounds, len(list), list, poolSize, leaks, fails, tm.MedianUS, tm.P99US, fanInHold, peakWait, bouncerPollEvery))
	if err := env.Step(ctx, fmt.Sprintf("%d clients were served by %d server connections. Every request scoped itself inside its own transaction, so sharing backends leaked nothing.", n*m, len(list))); err != nil {
		return err
	}
	if err := rb.measure(ctx, false); err != nil {
		return err
	}
	env.Tracker().Measured(fmt.Sprintf("%d clients shared %d server connections through PgBouncer.", n*m, len(list)), false)
	return env.Conclude(ctx, "Each request scoped itself inside its own transaction.")
}

// fanInRequest runs one batch-local request that holds its server
// connection for fanInHold; it returns the request's row and how long the
// batch took.
func (rb *bouncerRun) fanInRequest(ctx context.Context, p *engine.Pool, t engine.Tenant) (engine.RequestRow, time.Duration, error) {
	r := p.NewRequest(t, engine.PatternBatchLocal)
	if err := r.Acquire(ctx); err != nil {
		return r.Row(), 0, rb.outcome(ctx, err)
	}
	b := &pgx.Batch{}
	b.Queue(engine.SetLocalSQL, t.Setting())
	b.Queue(fmt.Sprintf("SELECT pg_sleep(%g)", fanInHold.Seconds()))
	b.Queue(engine.ObserveQuery)
	start := time.Now()
	res := r.Conn().SendBatch(ctx, b)
	_, err := res.Exec()
	if err == nil {
		_, err = res.Exec()
	}
	if err == nil {
		err = r.Observe(ctx, engine.BatchRow{Results: res})
	}
	if cerr := res.Close(); err == nil {
		err = cerr
	}
	d := time.Since(start)
	if err != nil {
		r.Fail(err)
	} else {
		row := r.Row()
		rb.see(row.PID, row.SeenTenant)
	}
	if rerr := r.Release(ctx); err == nil {
		err = rerr
	}
	return r.Row(), d, rb.outcome(ctx, err)
}
