package scenarios

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of shared-pool.
const (
	VariantConnPerUser = "conn-per-user"
	VariantSharedPool  = "shared-pool"
)

// crowdOwnConnPool names the per-user connections in the live view (they belong
// to no pool).
const crowdOwnConnPool = "own connection"

// Bounds of one crowd request: connect, acquire and query each give up
// after these.
const (
	crowdConnectTimeout = 5 * time.Second
	crowdRequestTimeout = 10 * time.Second
	crowdCloseTimeout   = 5 * time.Second
	// crowdDialers is how many per-user connection attempts are in flight
	// at once. A refused attempt still starts a server process for a
	// moment; this keeps those few.
	crowdDialers = 2
	// crowdSampleEvery is how often the shared pool's waiting count is read
	// while a wave runs.
	crowdSampleEvery = time.Millisecond
)

// SharedPool returns the shared-pool scenario: a crowd of users, each on a
// connection of its own, runs into the app role's CONNECTION LIMIT; the same
// crowd through one small pool is served completely.
func SharedPool() *engine.Scenario {
	return &engine.Scenario{
		ID:    "shared-pool",
		Title: "One pool of ten serves hundreds of users",
		Variants: withRun(runSharedPool, []engine.Variant{
			{Name: VariantConnPerUser, Summary: "Every user's request opens its own connection (pgx.Connect), scopes it with a session-level set_config, queries and closes it."},
			{Name: VariantSharedPool, Summary: "The same crowd goes through one pgxpool of a few connections; each request scopes its transaction with set_config(..., true)."},
		}),
		Params: []engine.Param{
			{Name: "users", Summary: "simulated users, one request each", Min: 10, Max: 1000, Default: 300},
			{Name: "tenants", Summary: "tenants the users belong to (the lab seeds 3; the others are added for the run and removed after it)", Min: 3, Max: 100, Default: 30},
			{Name: "online", Summary: "users sending their request at the same moment (one goroutine each, per wave)", Min: 2, Max: 100, Default: 40},
			{Name: "pool", Summary: "connections in the shared pool (never more than the app role's CONNECTION LIMIT)", Min: 1, Max: 100, Default: 10},
		},
	}
}

// crowdStats collects what the crowd's requests measured.
type crowdStats struct {
	mu          sync.Mutex
	latencies   []time.Duration // served requests, whole run
	wave        []time.Duration // served requests, current wave
	connects    []time.Duration // successful connection set-ups (conn-per-user)
	served      int
	refused     int // SQLSTATE 53300
	failed      int // any other error
	leaks       int
	wrongRows   int
	firstRefuse string
	otherErr    string
	work        time.Duration // time spent in waves, pauses excluded
}

func (s *crowdStats) serve(lat time.Duration, rows, foreign int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served++
	s.latencies = append(s.latencies, lat)
	s.wave = append(s.wave, lat)
	if foreign > 0 {
		s.leaks++
	}
	if rows != invoicesPerCrowdTenant || foreign != 0 {
		s.wrongRows++
	}
}

func (s *crowdStats) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "53300" {
		s.refused++
		if s.firstRefuse == "" {
			s.firstRefuse = fmt.Sprintf("%s: %s (SQLSTATE %s)", pe.Severity, pe.Message, pe.Code)
		}
		return
	}
	s.failed++
	if s.otherErr == "" {
		s.otherErr = err.Error()
	}
}

// invoicesPerCrowdTenant is how many invoices each tenant owns, seeded or
// added by the run.
const invoicesPerCrowdTenant = 3

func runSharedPool(ctx context.Context, env *engine.Env, variant string) (err error) {
	users, online := env.Params.Get("users"), env.Params.Get("online")
	if users <= 0 {
		users = 300
	}
	if online <= 0 {
		online = 40
	}
	online = min(online, users)
	tenants, cleanup, err := crowdTenants(ctx, env, env.Params.Get("tenants"))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	stats := &crowdStats{}
	var w crowdWave
	switch variant {
	case VariantConnPerUser:
		w, err = newConnPerUser(env)
	case VariantSharedPool:
		w, err = newSharedCrowd(ctx, env)
	default:
		return fmt.Errorf("shared-pool has no variant %q", variant)
	}
	if err != nil {
		return err
	}
	if err := env.Step(ctx, w.intro(users, len(tenants), online)); err != nil {
		return err
	}
	waves := (users + online - 1) / online
	for k := range waves {
		first := k * online
		n := min(online, users-first)
		crowd := make([]engine.Tenant, n)
		for i := range crowd {
			crowd[i] = tenants[(first+i)%len(tenants)]
		}
		stats.mu.Lock()
		stats.wave = stats.wave[:0]
		stats.mu.Unlock()
		if err := w.run(ctx, k+1, crowd, stats); err != nil {
			return err
		}
		if err := env.Step(ctx, crowdWaveDone(env, w, k+1, waves, stats)); err != nil {
			return err
		}
	}
	crowdSummary(env, w, users, len(tenants), stats)
	return env.Step(ctx, w.Verdict(stats))
}

// crowdWave is one variant's way of serving a wave of users.
type crowdWave interface {
	intro(users, tenants, online int) string
	// run serves one wave: every tenant in crowd is one user's request.
	run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error
	// line names the variant on charts.
	line() string
	Verdict(stats *crowdStats) string
	// memory reads the backends' memory now, for the chart.
	memory() (kb int64, n int, ok bool)
}

// crowdTenants returns count tenants: the lab's seeded ones and, when count
// asks for more, tenants added through the lab's admin connection with
// invoicesPerCrowdTenant invoices each. cleanup removes what was added.
func crowdTenants(ctx context.Context, env *engine.Env, count int) ([]engine.Tenant, func() error, error) {
	seeded := env.Sandbox.Tenants
	noop := func() error { return nil }
	if len(seeded) == 0 {
		return nil, noop, errors.New("shared-pool needs the lab's seeded tenants")
	}
	if count <= len(seeded) {
		return seeded, noop, nil
	}
	base := 0
	for _, t := range seeded {
		base = max(base, t.ID)
	}
	from, to := base+1, base+count-len(seeded)
	remove := func(ctx context.Context) error {
		conn, release, err := env.Sandbox.Admin(ctx)
		if err != nil {
			return err
		}
		defer release()
		if _, err := conn.Exec(ctx, "DELETE FROM invoices WHERE tenant_id BETWEEN $1 AND $2", from, to); err != nil {
			return fmt.Errorf("remove the run's invoices: %w", err)
		}
		if _, err := conn.Exec(ctx, "DELETE FROM tenants WHERE id BETWEEN $1 AND $2", from, to); err != nil {
			return fmt.Errorf("remove the run's tenants: %w", err)
		}
		return nil
	}
	cleanup := func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		return remove(ctx)
	}
	if err := remove(ctx); err != nil { // leftovers of a run that was cut off
		return nil, noop, err
	}
	err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO tenants (id, name) SELECT g, 'Tenant ' || g FROM generate_series($1::int, $2::int) g", from, to); err != nil {
			return fmt.Errorf("add tenants: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO invoices (tenant_id, customer, amount)
			SELECT g, 'Tenant ' || g || ' customer ' || i, 100 * g + i
			FROM generate_series($1::int, $2::int) g, generate_series(1, $3::int) i ORDER BY g, i`, from, to, invoicesPerCrowdTenant); err != nil {
			return fmt.Errorf("add invoices: %w", err)
		}
		return nil
	})
	if err != nil {
		_ = cleanup()
		return nil, noop, err
	}
	out := append([]engine.Tenant(nil), seeded...)
	for id := from; id <= to; id++ {
		out = append(out, engine.Tenant{ID: id, Name: "Tenant " + strconv.Itoa(id)})
	}
	return out, cleanup, nil
}

// crowdLoneRequest adds a request row that belongs to no pool (a user's own
// connection) and returns it; Observe and Fail work on it as on a pooled
// request.
func crowdLoneRequest(env *engine.Env, t engine.Tenant, pattern, pool string) *engine.Request {
	return env.NewRequest(t, pattern, pool, "connecting")
}

// connPerUser is the conn-per-user variant.
type connPerUser struct {
	env  *engine.Env
	cfg  *pgx.ConnConfig
	dial chan struct{}
	open atomic.Int32
	peak atomic.Int32
	pids []uint32 // the backends held at the last wave's peak
}

func newConnPerUser(env *engine.Env) (*connPerUser, error) {
	cfg, err := pgx.ParseConfig(env.Sandbox.AppURL)
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = crowdConnectTimeout
	cfg.RuntimeParams["application_name"] = "rlslab " + env.Sandbox.Lab + " per-user"
	return &connPerUser{env: env, cfg: cfg, dial: make(chan struct{}, crowdDialers)}, nil
}

func (c *connPerUser) line() string { return VariantConnPerUser }

func (c *connPerUser) intro(users, tenants, online int) string {
	return fmt.Sprintf("%d users of %d tenants arrive %d at a time. Each request opens its own connection as %s, whose CONNECTION LIMIT is %d, sets the tenant for that session, queries and closes.",
		users, tenants, online, c.env.Sandbox.AppRole, c.env.Sandbox.ConnLimit)
}

// run lets every user of the wave connect; those who got a connection keep
// it until the whole wave has tried (they are online together), then each
// scopes, queries and closes.
func (c *connPerUser) run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error {
	type held struct {
		r       *engine.Request
		conn    *pgx.Conn
		connect time.Duration
	}
	start := time.Now()
	heldc := make(chan held, len(crowd))
	var dialed sync.WaitGroup
	for _, t := range crowd {
		dialed.Add(1)
		go func() {
			defer dialed.Done()
			r := crowdLoneRequest(c.env, t, engine.PatternSessionSet, crowdOwnConnPool)
			select {
			case c.dial <- struct{}{}:
			case <-ctx.Done():
				r.Fail(ctx.Err())
				return
			}
			t0 := time.Now()
			conn, err := pgx.ConnectConfig(ctx, c.cfg)
			took := time.Since(t0)
			<-c.dial
			if err != nil {
				r.Fail(err)
				stats.fail(err)
				return
			}
			n := c.open.Add(1)
			for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
			}
			c.show(ctx, r, conn)
			heldc <- held{r: r, conn: conn, connect: took}
		}()
	}
	dialed.Wait()
	close(heldc)
	connected := time.Since(start)
	var hs []held
	pids := make([]uint32, 0, len(crowd))
	for h := range heldc {
		hs = append(hs, h)
		pids = append(pids, h.conn.PgConn().PID())
	}
	c.pids = pids
	stats.mu.Lock()
	refused := stats.refused
	stats.mu.Unlock()
	c.chartPeak(wave, len(hs), refused)
	stepErr := c.env.Step(ctx, fmt.Sprintf("Wave %d: %d users are online together and %d of them hold a connection of their own; the others were refused. %d refused so far.",
		wave, len(crowd), len(hs), refused))
	resume := time.Now()
	var done sync.WaitGroup
	for _, h := range hs {
		done.Add(1)
		go func() {
			defer done.Done()
			defer c.close(h.r, h.conn)
			if stepErr != nil {
				return
			}
			rctx, cancel := context.WithTimeout(ctx, crowdRequestTimeout)
			defer cancel()
			t0 := time.Now()
			if _, err := h.conn.Exec(rctx, engine.SetSessionSQL, h.r.Tenant.Setting()); err != nil {
				h.r.Fail(err)
				stats.fail(err)
				return
			}
			rows, foreign, err := crowdObserveCounted(rctx, h.r, h.conn)
			if err != nil {
				h.r.Fail(err)
				stats.fail(err)
				return
			}
			stats.serve(h.connect+time.Since(t0), rows, foreign)
			stats.mu.Lock()
			stats.connects = append(stats.connects, h.connect)
			stats.mu.Unlock()
		}()
	}
	done.Wait()
	stats.mu.Lock()
	stats.work += connected + time.Since(resume)
	stats.mu.Unlock()
	return stepErr
}

// show puts a freshly connected user's backend in the live view, as that
// backend reports itself.
func (c *connPerUser) show(ctx context.Context, r *engine.Request, conn *pgx.Conn) {
	ictx, cancel := context.WithTimeout(ctx, engine.IdentifyTimeout)
	defer cancel()
	id, err := engine.Identify(ictx, conn)
	if err != nil {
		id = engine.Identity{PID: conn.PgConn().PID()}
	}
	c.env.Tracker().UpdateRequest(r.Seq, func(row *engine.RequestRow) { row.Phase = "connected"; row.PID = id.PID })
	c.env.Refresh(func(s *engine.State) {
		s.Connections = append(s.Connections, engine.Connection{Pool: crowdOwnConnPool, Slot: r.Seq, PID: id.PID, State: engine.ConnAcquired,
			Tenant: id.Tenant, Role: id.Role, Request: r.Seq})
	})
}

// close ends a user's connection and takes it out of the live view.
func (c *connPerUser) close(r *engine.Request, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), crowdCloseTimeout)
	defer cancel()
	_ = conn.Close(ctx)
	c.open.Add(-1)
	c.env.Tracker().UpdateRequest(r.Seq, func(row *engine.RequestRow) {
		if row.Phase != "failed" {
			row.Phase = "closed"
		}
	})
	c.env.Refresh(func(s *engine.State) {
		if i := engine.FindConn(s, crowdOwnConnPool, r.Seq); i >= 0 {
			s.Connections = append(s.Connections[:i], s.Connections[i+1:]...)
		}
	})
}

func (c *connPerUser) chartPeak(wave, open, refused int) {
	tr := c.env.Tracker()
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "open", float64(wave), float64(open))
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "refused so far", float64(wave), float64(refused))
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "CONNECTION LIMIT", float64(wave), float64(c.env.Sandbox.ConnLimit))
	if kb, n, ok := c.memory(); ok {
		tr.AddPoint("Backend memory (PSS, all backends of the crowd)", "wave", "MiB", VariantConnPerUser, float64(wave), float64(kb)/1024)
		tr.SetMetric("backend memory (PSS)", fmt.Sprintf("%.1f MiB over %d backends (%.1f MiB each)", float64(kb)/1024, n, float64(kb)/1024/float64(n)), float64(kb)*1024)
	}
}

func (c *connPerUser) memory() (int64, int, bool) {
	return crowdBackendPSS(c.pids, c.env.Sandbox.AppRole, c.env.Sandbox.Database)
}

func (c *connPerUser) Verdict(s *crowdStats) string {
	return fmt.Sprintf("Done: %d users served, %d refused with %s. At most %d connections were open at once: the role's CONNECTION LIMIT is %d.",
		s.served, s.refused, crowdOrNone(s.firstRefuse), c.peak.Load(), c.env.Sandbox.ConnLimit)
}

// sharedCrowd is the shared-pool variant.
type sharedCrowd struct {
	env  *engine.Env
	pool *engine.Pool
	size int
}

func newSharedCrowd(ctx context.Context, env *engine.Env) (*sharedCrowd, error) {
	size := env.Params.Get("pool")
	if size <= 0 {
		size = 10
	}
	if limit := env.Sandbox.ConnLimit; limit > 0 && size > limit {
		env.Tracker().Note(fmt.Sprintf("The pool asked for %d connections; it gets %d, the app role's CONNECTION LIMIT.", size, limit))
		size = limit
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: int32(size), MinConns: int32(size)})
	if err != nil {
		return nil, err
	}
	return &sharedCrowd{env: env, pool: pool, size: size}, nil
}

func (c *sharedCrowd) line() string { return VariantSharedPool }

func (c *sharedCrowd) intro(users, tenants, online int) string {
	return fmt.Sprintf("%d users of %d tenants arrive %d at a time. They share one pool of %d connections (the role's CONNECTION LIMIT is %d); each request scopes its own transaction with set_config(..., true).",
		users, tenants, online, c.size, c.env.Sandbox.ConnLimit)
}

func (c *sharedCrowd) run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error {
	start := time.Now()
	var done sync.WaitGroup
	for _, t := range crowd {
		done.Add(1)
		go func() {
			defer done.Done()
			c.request(ctx, t, stats)
		}()
	}
	finished := make(chan struct{})
	go func() { done.Wait(); close(finished) }()
	var peakWait, peakBusy int32
	tick := time.NewTicker(crowdSampleEvery)
	defer tick.Stop()
	deadline := time.After(crowdRequestTimeout + crowdConnectTimeout)
sample:
	for {
		peakWait = max(peakWait, c.pool.Waiting())
		peakBusy = max(peakBusy, c.pool.Stat().AcquiredConns())
		select {
		case <-finished:
			break sample
		case <-tick.C:
		case <-deadline: // each request has its own timeout; this only bounds the sampling
			<-finished
			break sample
		}
	}
	stats.mu.Lock()
	stats.work += time.Since(start)
	stats.mu.Unlock()
	tr := c.env.Tracker()
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "in use", float64(wave), float64(peakBusy))
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "open", float64(wave), float64(c.pool.Stat().TotalConns()))
	tr.AddPoint("Connections at the wave's peak", "wave", "connections", "CONNECTION LIMIT", float64(wave), float64(c.env.Sandbox.ConnLimit))
	tr.AddPoint("Requests waiting for a pooled connection (peak)", "wave", "requests", "waiting", float64(wave), float64(peakWait))
	if prev := crowdMetricNumber(c.env, "peak waiting"); float64(peakWait) > prev || wave == 1 {
		tr.SetMetric("peak waiting", strconv.Itoa(int(peakWait)), float64(peakWait))
	}
	if kb, n, ok := c.memory(); ok {
		tr.AddPoint("Backend memory (PSS, all backends of the crowd)", "wave", "MiB", VariantSharedPool, float64(wave), float64(kb)/1024)
		tr.SetMetric("backend memory (PSS)", fmt.Sprintf("%.1f MiB over %d backends (%.1f MiB each)", float64(kb)/1024, n, float64(kb)/1024/float64(n)), float64(kb)*1024)
	}
	return ctx.Err()
}

// request is one user's request through the pool: acquire, BEGIN,
// set_config(..., true), query, COMMIT, release.
func (c *sharedCrowd) request(ctx context.Context, t engine.Tenant, stats *crowdStats) {
	r := c.pool.NewRequest(t, engine.PatternTxLocal)
	rctx, cancel := context.WithTimeout(ctx, crowdRequestTimeout)
	defer cancel()
	t0 := time.Now()
	if err := r.AcquireQuiet(rctx); err != nil {
		stats.fail(err)
		return
	}
	conn := r.Conn()
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	var rows, foreign int
	var err error
	err = pgx.BeginFunc(rctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(rctx, engine.SetLocalSQL, t.Setting()); err != nil {
			return err
		}
		rows, foreign, err = crowdObserveCounted(rctx, r, tx)
		return err
	})
	if err != nil {
		r.Fail(err)
		stats.fail(err)
		return
	}
	stats.serve(time.Since(t0), rows, foreign)
}

func (c *sharedCrowd) memory() (int64, int, bool) {
	st := c.env.Tracker().Snapshot()
	var pids []uint32
	for _, cn := range st.Connections {
		if cn.Pool == c.pool.Name() {
			pids = append(pids, cn.PID)
		}
	}
	return crowdBackendPSS(pids, c.env.Sandbox.AppRole, c.env.Sandbox.Database)
}

func (c *sharedCrowd) Verdict(s *crowdStats) string {
	st := c.pool.Stat()
	return fmt.Sprintf("Done: %d users served by %d connections (%d opened in the whole run), %d refused, %d failed otherwise, %d leaks.",
		s.served, st.TotalConns(), st.NewConnsCount(), s.refused, s.failed, s.leaks)
}

// crowdObserveCounted runs ObserveQuery for r on q and returns the rows it got
// and how many of them belong to another tenant.
func crowdObserveCounted(ctx context.Context, r *engine.Request, q engine.Querier) (rows, foreign int, err error) {
	if err := r.Observe(ctx, q); err != nil {
		return 0, 0, err
	}
	r.SetPhase("queried")
	row := r.Row()
	return row.Rows, row.ForeignRows, nil
}

// crowdWaveDone charts a wave's throughput and latency and narrates it.
func crowdWaveDone(env *engine.Env, w crowdWave, wave, waves int, s *crowdStats) string {
	s.mu.Lock()
	lat := slices.Clone(s.wave)
	served, refused, failed, work := s.served, s.refused, s.failed, s.work
	all := slices.Clone(s.latencies)
	s.mu.Unlock()
	tr := env.Tracker()
	p50, p95, p99 := crowdPercentile(lat, 50), crowdPercentile(lat, 95), crowdPercentile(lat, 99)
	if len(lat) > 0 {
		tr.AddPoint("Latency of served requests", "wave", "ms", "p50", float64(wave), crowdMS(p50))
		tr.AddPoint("Latency of served requests", "wave", "ms", "p95", float64(wave), crowdMS(p95))
		tr.AddPoint("Latency of served requests", "wave", "ms", "p99", float64(wave), crowdMS(p99))
	}
	rps := 0.0
	if work > 0 {
		rps = float64(served) / work.Seconds()
	}
	tr.AddPoint("Requests served per second", "wave", "requests/s", w.line(), float64(wave), rps)
	tr.SetMetric("users served", strconv.Itoa(served), float64(served))
	tr.SetMetric("users refused (53300)", strconv.Itoa(refused), float64(refused))
	if failed > 0 {
		tr.SetMetric("other errors", strconv.Itoa(failed), float64(failed))
	}
	tr.SetMetric("requests/s", fmt.Sprintf("%.0f", rps), rps)
	for _, q := range []struct {
		name string
		p    float64
	}{{"latency p50", 50}, {"latency p95", 95}, {"latency p99", 99}} {
		d := crowdPercentile(all, q.p)
		tr.SetMetric(q.name, fmt.Sprintf("%.2f ms", crowdMS(d)), crowdMS(d))
	}
	if _, _, ok := w.memory(); !ok && wave == 1 {
		tr.SetMetric("backend memory (PSS)", "cannot be read (the server's processes are not visible in this machine's /proc)", 0)
	}
	return fmt.Sprintf("Wave %d of %d done: %d served (p50 %.2f ms, p99 %.2f ms), %d refused so far, %.0f requests/s so far.",
		wave, waves, len(lat), crowdMS(p50), crowdMS(p99), refused, rps)
}

// crowdSummary writes the run's notes from what it measured.
func crowdSummary(env *engine.Env, w crowdWave, users, tenants int, s *crowdStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tr := env.Tracker()
	switch c := w.(type) {
	case *connPerUser:
		peak := c.peak.Load()
		tr.SetMetric("peak connections", strconv.Itoa(int(peak)), float64(peak))
		if len(s.connects) > 0 {
			d := crowdPercentile(s.connects, 50)
			tr.SetMetric("connection set-up p50", fmt.Sprintf("%.2f ms", crowdMS(d)), crowdMS(d))
			tr.Note(fmt.Sprintf("Every served request paid its own connection set-up: median %.2f ms, p99 %.2f ms (the query after it: the rest of the latency).",
				crowdMS(d), crowdMS(crowdPercentile(s.connects, 99))))
		}
		if s.refused > 0 {
			tr.Note(fmt.Sprintf("%d of %d users were refused by the server: %s. No more than %d connections were ever open at once.",
				s.refused, users, s.firstRefuse, peak))
		} else {
			tr.Note(fmt.Sprintf("No user was refused: at most %d connections were open at once, within the CONNECTION LIMIT of %d.", peak, env.Sandbox.ConnLimit))
		}
	case *sharedCrowd:
		st := c.pool.Stat()
		tr.SetMetric("peak connections", strconv.Itoa(int(st.TotalConns())), float64(st.TotalConns()))
		tr.Note(fmt.Sprintf("%d users of %d tenants were served by a pool of %d connections; the pool opened %d connections in the whole run and acquired %d times.",
			s.served, tenants, c.size, st.NewConnsCount(), st.AcquireCount()))
		if st.EmptyAcquireCount() > 0 {
			tr.Note(fmt.Sprintf("%d acquires found no idle connection and waited (%s in total): queueing in the app instead of refusals by the server.",
				st.EmptyAcquireCount(), st.EmptyAcquireWaitTime().Round(time.Microsecond)))
		}
	}
	if s.wrongRows == 0 && s.served > 0 {
		tr.Note(fmt.Sprintf("Each of the %d served users got exactly its own tenant's %d invoices; no foreign rows.", s.served, invoicesPerCrowdTenant))
	} else if s.served > 0 {
		tr.Note(fmt.Sprintf("%d served requests did not get exactly their own tenant's %d rows (%d with foreign rows).", s.wrongRows, invoicesPerCrowdTenant, s.leaks))
	}
	if s.otherErr != "" {
		tr.Note(fmt.Sprintf("%d requests failed otherwise, first: %s", s.failed, s.otherErr))
	}
}

// crowdBackendPSS sums the proportional set size of the given server processes,
// read from /proc/<pid>/smaps_rollup. It only counts a process whose command
// line names the lab's role and database (a backend of this lab on this
// machine); ok is false when none could be read, e.g. a remote server.
func crowdBackendPSS(pids []uint32, role, db string) (kb int64, n int, ok bool) {
	for _, pid := range pids {
		if pid == 0 {
			continue
		}
		dir := "/proc/" + strconv.FormatUint(uint64(pid), 10)
		cmd, err := os.ReadFile(dir + "/cmdline")
		if err != nil || !bytes.Contains(cmd, []byte(role)) || !bytes.Contains(cmd, []byte(db)) {
			continue
		}
		f, err := os.Open(dir + "/smaps_rollup")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if rest, found := strings.CutPrefix(line, "Pss:"); found {
				v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				if err == nil {
					kb += v
					n++
				}
				break
			}
		}
		f.Close()
	}
	return kb, n, n > 0
}

// crowdPercentile returns the p-th percentile (nearest rank) of ds.
func crowdPercentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func crowdMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// crowdMetricNumber returns the number of the named metric, or 0.
func crowdMetricNumber(env *engine.Env, name string) float64 {
	for _, m := range env.Tracker().Snapshot().Metrics {
		if m.Name == name {
			return m.Number
		}
	}
	return 0
}

func crowdOrNone(s string) string {
	if s == "" {
		return "no error"
	}
	return s
}
