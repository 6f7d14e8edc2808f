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
	"github.com/rlslab/rlslab/scenarios/engine/measure"
)

// Variants of shared-pool (stable names: tools and lessons rely on them).
const (
	SharedPoolConnPerUser = "conn-per-user"
	SharedPoolShared      = "shared-pool"
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
)

// invoicesPerCrowdTenant is how many invoices each tenant owns, seeded or
// added by the run.
const invoicesPerCrowdTenant = 3

// SharedPool returns the shared-pool scenario: a crowd of users, each on a
// connection of its own, runs into the app role's CONNECTION LIMIT; the same
// crowd through one small pool is served completely.
func SharedPool() *engine.Scenario {
	// admin counts the lab's superuser connection that adds (and removes)
	// the run's extra tenants.
	admin := func(p engine.Params, sb engine.Sandbox) int {
		if p.Get("tenants") > len(sb.Tenants) {
			return 1
		}
		return 0
	}
	return &engine.Scenario{
		ID: "shared-pool",
		// Its timings are taken inside each wave, never across a frame's pause:
		// the outcome and the numbers do not depend on the pace.
		Pacing: engine.PacingReplay,
		Title:  "A connection per user, or one pool for hundreds of users",
		Variants: []engine.Variant{
			// Both variants are crowds that a room shares (Variant.Shared):
			// a crowd for every learner at once would measure the machine,
			// not the pool.
			{Name: SharedPoolConnPerUser, Run: runConnPerUserCrowd, Shared: true,
				Summary: "Every user's request opens its own connection (pgx.Connect), scopes it with a session-level set_config, queries and closes it.",
				// Up to the role's CONNECTION LIMIT held, plus per dialer an
				// attempt in flight and the refused one before it, whose
				// server process may still be exiting (a workshop bench on a
				// loaded machine saw both at once).
				Conns: func(p engine.Params, sb engine.Sandbox) int { return sb.ConnLimit + 2*crowdDialers + admin(p, sb) }},
			{Name: SharedPoolShared, Run: runSharedCrowd, Shared: true,
				Summary: "The same crowd goes through one pgxpool of a few connections; each request scopes its transaction with set_config(..., true).",
				Conns:   func(p engine.Params, sb engine.Sandbox) int { return sharedPoolSize(p, sb) + admin(p, sb) }},
		},
		Params: []engine.Param{
			{Name: "users", Summary: "simulated users, one request each", Min: 10, Max: 1000, Default: 300},
			{Name: "tenants", Summary: "tenants the users belong to (the lab seeds 3; the others are added for the run and removed after it)", Min: 3, Max: 100, Default: 30},
			{Name: "online", Summary: "users sending their request at the same moment (one goroutine each, per wave)", Min: 2, Max: 100, Default: 40},
			{Name: "pool", Summary: "connections in the shared pool (never more than the app role's CONNECTION LIMIT)", Min: 1, Max: 100, Default: 10},
		},
		MinTenants: 1,
	}
}

// sharedPoolSize is the shared pool's size: the pool parameter, never more
// than the app role's CONNECTION LIMIT.
func sharedPoolSize(p engine.Params, sb engine.Sandbox) int {
	if sb.ConnLimit > 0 {
		return min(p.Get("pool"), sb.ConnLimit)
	}
	return p.Get("pool")
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

func (s *crowdStats) serve(lat time.Duration, r *engine.Request) {
	row := r.Row()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.served++
	s.latencies = append(s.latencies, lat)
	s.wave = append(s.wave, lat)
	if row.ForeignRows > 0 {
		s.leaks++
	}
	if row.Rows != invoicesPerCrowdTenant || row.ForeignRows != 0 {
		s.wrongRows++
	}
}

func (s *crowdStats) fail(r *engine.Request, err error) {
	r.Fail(err)
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

// crowdWave is one variant's way of serving a crowd, wave by wave.
type crowdWave interface {
	intro(users, tenants, online int) string
	// run serves one wave: every tenant in crowd is one user's request.
	run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error
	// pids returns the crowd's backends, whose memory is charted.
	pids() []uint32
	verdict(stats *crowdStats) string
	// summary notes what the variant established over the whole run.
	summary(stats *crowdStats, tenants int)
}

func runConnPerUserCrowd(ctx context.Context, env *engine.Env) error {
	cfg, err := pgx.ParseConfig(env.Sandbox.AppURL)
	if err != nil {
		return err
	}
	cfg.ConnectTimeout = crowdConnectTimeout
	cfg.RuntimeParams["application_name"] = "rlslab " + env.Sandbox.Lab + " per-user"
	return runCrowd(ctx, env, SharedPoolConnPerUser, &connPerUser{env: env, cfg: cfg, dial: make(chan struct{}, crowdDialers)})
}

func runSharedCrowd(ctx context.Context, env *engine.Env) error {
	size := sharedPoolSize(env.Params, env.Sandbox)
	if asked := env.Params.Get("pool"); asked > size {
		env.Tracker().Note(fmt.Sprintf("The pool asked for %d connections; it gets %d, the app role's CONNECTION LIMIT.", asked, size))
	}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: int32(size), MinConns: int32(size)})
	if err != nil {
		return err
	}
	return runCrowd(ctx, env, SharedPoolShared, &sharedCrowd{env: env, pool: pool, size: size})
}

// runCrowd serves the users in waves of online users each, the variant's
// way, charting each wave.
func runCrowd(ctx context.Context, env *engine.Env, line string, w crowdWave) (err error) {
	users := env.Params.Get("users")
	online := min(env.Params.Get("online"), users)
	tenants, cleanup, err := crowdTenants(ctx, env, env.Params.Get("tenants"))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := env.Step(ctx, w.intro(users, len(tenants), online)); err != nil {
		return err
	}
	stats := &crowdStats{}
	waves := (users + online - 1) / online
	for k := range waves {
		crowd := make([]engine.Tenant, min(online, users-k*online))
		for i := range crowd {
			crowd[i] = tenants[(k*online+i)%len(tenants)]
		}
		stats.mu.Lock()
		stats.wave = stats.wave[:0]
		stats.mu.Unlock()
		if err := w.run(ctx, k+1, crowd, stats); err != nil {
			return err
		}
		if err := env.Step(ctx, crowdWaveDone(env, w, line, k+1, waves, stats)); err != nil {
			return err
		}
	}
	stats.mu.Lock()
	defer stats.mu.Unlock()
	w.summary(stats, len(tenants))
	tr := env.Tracker()
	if stats.wrongRows == 0 && stats.served > 0 {
		tr.Note(fmt.Sprintf("Each of the %d served users got exactly its own tenant's %d invoices; no foreign rows.", stats.served, invoicesPerCrowdTenant))
	} else if stats.served > 0 {
		tr.Note(fmt.Sprintf("%d served requests did not get exactly their own tenant's %d rows (%d with foreign rows).", stats.wrongRows, invoicesPerCrowdTenant, stats.leaks))
	}
	if stats.otherErr != "" {
		tr.Note(fmt.Sprintf("%d requests failed otherwise, first: %s", stats.failed, stats.otherErr))
	}
	env.Tracker().Measured(w.verdict(stats), false)
	return env.Conclude(ctx, "")
}

// crowdTenants returns count tenants: the lab's seeded ones and, when count
// asks for more, tenants added through the lab's admin connection with
// invoicesPerCrowdTenant invoices each (after removing any a cut-off run
// left). cleanup removes what was added, even when the run was cancelled.
func crowdTenants(ctx context.Context, env *engine.Env, count int) ([]engine.Tenant, func() error, error) {
	seeded := env.Sandbox.Tenants
	noop := func() error { return nil }
	if count <= len(seeded) {
		return seeded, noop, nil
	}
	base := 0
	for _, t := range seeded {
		base = max(base, t.ID)
	}
	from, to := base+1, base+count-len(seeded)
	remove := func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "DELETE FROM invoices WHERE tenant_id BETWEEN $1 AND $2", from, to); err != nil {
			return fmt.Errorf("remove the run's invoices: %w", err)
		}
		if _, err := tx.Exec(ctx, "DELETE FROM tenants WHERE id BETWEEN $1 AND $2", from, to); err != nil {
			return fmt.Errorf("remove the run's tenants: %w", err)
		}
		return nil
	}
	cleanup := func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
		defer cancel()
		return env.AdminTx(ctx, func(tx pgx.Tx) error { return remove(ctx, tx) })
	}
	err := env.AdminTx(ctx, func(tx pgx.Tx) error {
		if err := remove(ctx, tx); err != nil {
			return err
		}
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
		return nil, noop, err
	}
	out := slices.Clone(seeded)
	for id := from; id <= to; id++ {
		out = append(out, engine.Tenant{ID: id, Name: "Tenant " + strconv.Itoa(id)})
	}
	return out, cleanup, nil
}

// connPerUser is the conn-per-user variant.
type connPerUser struct {
	env  *engine.Env
	cfg  *pgx.ConnConfig
	dial chan struct{}
	open atomic.Int32
	peak atomic.Int32
	held []uint32 // the backends held at the last wave's peak
}

func (c *connPerUser) intro(users, tenants, online int) string {
	return fmt.Sprintf("%d users of %d tenants arrive %d at a time. Each request opens its own connection as %s, whose CONNECTION LIMIT is %d, sets the tenant for that session, queries and closes.",
		users, tenants, online, c.env.Sandbox.AppRole, c.env.Sandbox.ConnLimit)
}

// userConn is one user's own connection and its request.
type userConn struct {
	r       *engine.Request
	conn    *pgx.Conn
	connect time.Duration
}

// run lets every user of the wave connect; those who got a connection keep
// it until the whole wave has tried (they are online together), then each
// scopes, queries and closes.
func (c *connPerUser) run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error {
	start := time.Now()
	got := make(chan userConn, len(crowd))
	var dialed sync.WaitGroup
	for _, t := range crowd {
		dialed.Go(func() {
			r := c.env.NewRequest(t, engine.PatternSessionSet, crowdOwnConnPool, "connecting")
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
				stats.fail(r, err)
				return
			}
			n := c.open.Add(1)
			for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
			}
			c.show(ctx, r, conn)
			got <- userConn{r: r, conn: conn, connect: took}
		})
	}
	dialed.Wait()
	close(got)
	connected := time.Since(start)
	var users []userConn
	c.held = c.held[:0]
	for u := range got {
		users = append(users, u)
		c.held = append(c.held, u.conn.PgConn().PID())
	}
	stats.mu.Lock()
	refused := stats.refused
	stats.mu.Unlock()
	const chart = "Connections at the wave's peak"
	tr := c.env.Tracker()
	tr.AddPoint(chart, "wave", "connections", "open", float64(wave), float64(len(users)))
	tr.AddPoint(chart, "wave", "connections", "refused so far", float64(wave), float64(refused))
	tr.AddPoint(chart, "wave", "connections", "CONNECTION LIMIT", float64(wave), float64(c.env.Sandbox.ConnLimit))
	crowdMemory(c.env, SharedPoolConnPerUser, wave, c.held)
	stepErr := c.env.Step(ctx, fmt.Sprintf("Wave %d: %d users are online together and %d of them hold a connection of their own; the others were refused. %d refused so far.",
		wave, len(crowd), len(users), refused))
	resume := time.Now()
	var done sync.WaitGroup
	for _, u := range users {
		done.Go(func() {
			defer c.close(u.r, u.conn)
			if stepErr != nil {
				return
			}
			rctx, cancel := context.WithTimeout(ctx, crowdRequestTimeout)
			defer cancel()
			t0 := time.Now()
			_, err := u.conn.Exec(rctx, engine.SetSessionSQL, u.r.Tenant.Setting())
			if err == nil {
				err = u.r.Observe(rctx, u.conn)
			}
			if err != nil {
				stats.fail(u.r, err)
				return
			}
			u.r.SetPhase("queried")
			stats.serve(u.connect+time.Since(t0), u.r)
			stats.mu.Lock()
			stats.connects = append(stats.connects, u.connect)
			stats.mu.Unlock()
		})
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
	r.Update(func(row *engine.RequestRow) { row.Phase = "connected"; row.PID = id.PID })
	c.env.ShowConn(engine.Connection{Pool: crowdOwnConnPool, Slot: r.Seq, PID: id.PID, State: engine.ConnAcquired, Tenant: id.Tenant, Role: id.Role, Request: r.Seq})
}

// close ends a user's connection and takes it out of the live view.
func (c *connPerUser) close(r *engine.Request, conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), crowdCloseTimeout)
	defer cancel()
	_ = conn.Close(ctx)
	c.open.Add(-1)
	r.Update(func(row *engine.RequestRow) {
		if row.Phase != "failed" {
			row.Phase = "closed"
		}
	})
	c.env.HideConn(crowdOwnConnPool, r.Seq)
}

func (c *connPerUser) pids() []uint32 { return c.held }

func (c *connPerUser) verdict(s *crowdStats) string {
	refusal := s.firstRefuse
	if refusal == "" {
		refusal = "no error"
	}
	return fmt.Sprintf("%d users served, %d refused with %s. At most %d connections were open at once: the role's CONNECTION LIMIT is %d.",
		s.served, s.refused, refusal, c.peak.Load(), c.env.Sandbox.ConnLimit)
}

func (c *connPerUser) summary(s *crowdStats, tenants int) {
	tr := c.env.Tracker()
	peak := c.peak.Load()
	tr.SetMetric("peak connections", strconv.Itoa(int(peak)), float64(peak))
	if len(s.connects) > 0 {
		d := measure.Percentile(s.connects, 50)
		tr.SetMetric("connection set-up p50", fmt.Sprintf("%.2f ms", measure.MS(d)), measure.MS(d))
		tr.Note(fmt.Sprintf("Every served request paid its own connection set-up: median %.2f ms, p99 %.2f ms (the query after it: the rest of the latency).",
			measure.MS(d), measure.MS(measure.Percentile(s.connects, 99))))
	}
	users := s.served + s.refused + s.failed
	if s.refused > 0 {
		tr.Note(fmt.Sprintf("%d of %d users were refused by the server: %s. No more than %d connections were ever open at once.", s.refused, users, s.firstRefuse, peak))
	} else {
		tr.Note(fmt.Sprintf("No user was refused: at most %d connections were open at once, within the CONNECTION LIMIT of %d.", peak, c.env.Sandbox.ConnLimit))
	}
}

// sharedCrowd is the shared-pool variant.
type sharedCrowd struct {
	env  *engine.Env
	pool *engine.Pool
	size int
}

func (c *sharedCrowd) intro(users, tenants, online int) string {
	return fmt.Sprintf("%d users of %d tenants arrive %d at a time. They share one pool of %d connections (the role's CONNECTION LIMIT is %d); each request scopes its own transaction with set_config(..., true).",
		users, tenants, online, c.size, c.env.Sandbox.ConnLimit)
}

func (c *sharedCrowd) run(ctx context.Context, wave int, crowd []engine.Tenant, stats *crowdStats) error {
	start := time.Now()
	c.pool.TakePeaks()
	var done sync.WaitGroup
	for _, t := range crowd {
		done.Go(func() { c.request(ctx, t, stats) })
	}
	done.Wait()
	peakWait, peakBusy := c.pool.TakePeaks()
	stats.mu.Lock()
	stats.work += time.Since(start)
	stats.mu.Unlock()
	tr := c.env.Tracker()
	const chart = "Connections at the wave's peak"
	tr.AddPoint(chart, "wave", "connections", "in use", float64(wave), float64(peakBusy))
	tr.AddPoint(chart, "wave", "connections", "open", float64(wave), float64(c.pool.Stat().TotalConns()))
	tr.AddPoint(chart, "wave", "connections", "CONNECTION LIMIT", float64(wave), float64(c.env.Sandbox.ConnLimit))
	tr.AddPoint("Requests waiting for a pooled connection (peak)", "wave", "requests", "waiting", float64(wave), float64(peakWait))
	if prev, ok := tr.Metric("peak waiting"); !ok || float64(peakWait) > prev.Number {
		tr.SetMetric("peak waiting", strconv.Itoa(int(peakWait)), float64(peakWait))
	}
	crowdMemory(c.env, SharedPoolShared, wave, c.pids())
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
		stats.fail(r, err)
		return
	}
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	err := pgx.BeginFunc(rctx, r.Conn(), func(tx pgx.Tx) error {
		if _, err := tx.Exec(rctx, engine.SetLocalSQL, t.Setting()); err != nil {
			return err
		}
		return r.Observe(rctx, tx)
	})
	if err != nil {
		stats.fail(r, err)
		return
	}
	r.SetPhase("queried")
	stats.serve(time.Since(t0), r)
}

func (c *sharedCrowd) pids() []uint32 {
	var pids []uint32
	for _, cn := range c.env.Tracker().ConnsOf(c.pool.Name()) {
		pids = append(pids, cn.PID)
	}
	return pids
}

func (c *sharedCrowd) verdict(s *crowdStats) string {
	st := c.pool.Stat()
	return fmt.Sprintf("%d users served by %d connections (%d opened in the whole run), %d refused, %d failed otherwise, %d leaks.",
		s.served, st.TotalConns(), st.NewConnsCount(), s.refused, s.failed, s.leaks)
}

func (c *sharedCrowd) summary(s *crowdStats, tenants int) {
	tr := c.env.Tracker()
	st := c.pool.Stat()
	tr.SetMetric("peak connections", strconv.Itoa(int(st.TotalConns())), float64(st.TotalConns()))
	tr.Note(fmt.Sprintf("%d users of %d tenants were served by a pool of %d connections; the pool opened %d connections in the whole run and acquired %d times.",
		s.served, tenants, c.size, st.NewConnsCount(), st.AcquireCount()))
	if st.EmptyAcquireCount() > 0 {
		tr.Note(fmt.Sprintf("%d acquires found no idle connection and waited (%s in total): queueing in the app instead of refusals by the server.",
			st.EmptyAcquireCount(), st.EmptyAcquireWaitTime().Round(time.Microsecond)))
	}
}

// crowdWaveDone charts a wave's throughput and latency and narrates it.
func crowdWaveDone(env *engine.Env, w crowdWave, line string, wave, waves int, s *crowdStats) string {
	s.mu.Lock()
	lat, all := slices.Clone(s.wave), slices.Clone(s.latencies)
	served, refused, failed, work := s.served, s.refused, s.failed, s.work
	s.mu.Unlock()
	tr := env.Tracker()
	p50, p99 := measure.Percentile(lat, 50), measure.Percentile(lat, 99)
	if len(lat) > 0 {
		for _, q := range []struct {
			name string
			d    time.Duration
		}{{"p50", p50}, {"p95", measure.Percentile(lat, 95)}, {"p99", p99}} {
			tr.AddPoint("Latency of served requests", "wave", "ms", q.name, float64(wave), measure.MS(q.d))
		}
	}
	rps := 0.0
	if work > 0 {
		rps = float64(served) / work.Seconds()
	}
	tr.AddPoint("Requests served per second", "wave", "requests/s", line, float64(wave), rps)
	tr.SetMetric("users served", strconv.Itoa(served), float64(served))
	tr.SetMetric("users refused (53300)", strconv.Itoa(refused), float64(refused))
	if failed > 0 {
		tr.SetMetric("other errors", strconv.Itoa(failed), float64(failed))
	}
	tr.SetMetric("requests/s", fmt.Sprintf("%.0f", rps), rps)
	for _, p := range []float64{50, 95, 99} {
		d := measure.MS(measure.Percentile(all, p))
		tr.SetMetric(fmt.Sprintf("latency p%v", p), fmt.Sprintf("%.2f ms", d), d)
	}
	if wave == 1 {
		if _, _, ok := crowdBackendPSS(w.pids(), env.Sandbox.AppRole, env.Sandbox.Database); !ok {
			tr.SetMetric("backend memory (PSS)", "cannot be read (the server's processes are not visible in this machine's /proc)", 0)
		}
	}
	return fmt.Sprintf("Wave %d of %d done: %d served (p50 %.2f ms, p99 %.2f ms), %d refused so far, %.0f requests/s so far.",
		wave, waves, len(lat), measure.MS(p50), measure.MS(p99), refused, rps)
}

// crowdMemory charts the memory of the crowd's backends pids, when this
// machine can read it.
func crowdMemory(env *engine.Env, line string, wave int, pids []uint32) {
	kb, n, ok := crowdBackendPSS(pids, env.Sandbox.AppRole, env.Sandbox.Database)
	if !ok {
		return
	}
	mib := float64(kb) / 1024
	env.Tracker().AddPoint("Backend memory (PSS, all backends of the crowd)", "wave", "MiB", line, float64(wave), mib)
	env.Tracker().SetMetric("backend memory (PSS)", fmt.Sprintf("%.1f MiB over %d backends (%.1f MiB each)", mib, n, mib/float64(n)), float64(kb)*1024)
}

// crowdBackendPSS sums the proportional set size of the given server processes,
// read from /proc/<pid>/smaps_rollup. It only counts a process whose command
// line names the lab's role and database (a backend of this lab on this
// machine); ok is false when none could be read, e.g. a remote server.
func crowdBackendPSS(pids []uint32, role, db string) (kb int64, n int, ok bool) {
	for _, pid := range pids {
		dir := "/proc/" + strconv.FormatUint(uint64(pid), 10)
		cmd, err := os.ReadFile(dir + "/cmdline")
		if pid == 0 || err != nil || !bytes.Contains(cmd, []byte(role)) || !bytes.Contains(cmd, []byte(db)) {
			continue
		}
		f, err := os.Open(dir + "/smaps_rollup")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, found := strings.CutPrefix(sc.Text(), "Pss:"); found {
				if v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64); err == nil {
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
