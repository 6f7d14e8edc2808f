package scenarios

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of pinned-state (stable names: tools and lessons rely on them).
const (
	PinnedTempTable     = "temp-table"
	PinnedOnCommitDrop  = "on-commit-drop"
	PinnedSessionLock   = "session-lock"
	PinnedXactLock      = "xact-lock"
	PinnedListenBouncer = "listen-pgbouncer"
	PinnedListenDirect  = "listen-direct"
)

// Names pinned-state uses: the scratch table its requests fill, and the
// advisory lock that guards a tenant's invoice numbering, (lockClass,
// tenant id).
const (
	scratchTable = "report"
	lockClass    = 4242
	// lockWait is the lock_timeout of the request that waits for the
	// numbering lock: long enough for any free lock, short enough to show
	// one that nobody running holds.
	lockWait = "1s"
	// listenChannel is the channel the worker listens on.
	listenChannel = "invoices_ready"
	// listenWait bounds the direct listener's wait for a notification that
	// was committed before the wait began.
	listenWait = 10 * time.Second
)

// PinnedState returns the pinned-state scenario: state that belongs to one
// backend, not to one request, and so passes with the connection from
// request to request. A temp table created without ON COMMIT DROP is still
// there for the next request on that backend, another tenant's, which adds
// its rows to the first tenant's and reads both; created ON COMMIT DROP it
// ends with the transaction. A session-level advisory lock taken by a
// request that returns before its unlock stays held by a backend idle in
// the pool, and the next request that needs it waits until lock_timeout;
// pg_advisory_xact_lock ends with the transaction, whatever path the
// request took. Behind PgBouncer in transaction mode, LISTEN registers the
// server connection that ran it, not the client: the worker that listens
// never hears a notification, which goes to whichever client holds that
// server at the time; a listener on a direct connection hears it.
func PinnedState() *engine.Scenario {
	temp := func(name string, onCommitDrop bool, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: adminAndPool, Run: func(ctx context.Context, env *engine.Env) error {
			return runPinnedTemp(ctx, env, onCommitDrop)
		}}
	}
	lock := func(name string, xact bool, summary string) engine.Variant {
		// Two app instances of one connection each; no superuser connection.
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(2), Run: func(ctx context.Context, env *engine.Env) error {
			return runPinnedLock(ctx, env, xact)
		}}
	}
	listen := func(name string, direct bool, summary string) engine.Variant {
		// PgBouncer's one server connection, and the worker's direct one.
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(2), Run: func(ctx context.Context, env *engine.Env) error {
			return runBouncer(ctx, env, 1, false, func(rb *bouncerRun, ctx context.Context) error { return runPinnedListen(ctx, rb, direct) })
		}}
	}
	return &engine.Scenario{
		ID:     "pinned-state",
		Pacing: engine.PacingReplay,
		Title:  "Temp tables, advisory locks and LISTEN on a pooled backend",
		Variants: []engine.Variant{
			temp(PinnedTempTable, false, "Each request runs CREATE TEMP TABLE IF NOT EXISTS report, fills it from invoices under its own tenant, and reads it: Globex's request, on Acme's backend, reads Acme's rows too."),
			temp(PinnedOnCommitDrop, true, "The same requests with CREATE TEMP TABLE report ... ON COMMIT DROP: the table ends with each transaction."),
			lock(PinnedSessionLock, false, "Acme's invoice numbering takes pg_advisory_lock and returns early, before its unlock: the lock stays with a backend idle in the pool, and Acme's next numbering request waits until lock_timeout."),
			lock(PinnedXactLock, true, "The same with pg_advisory_xact_lock in the request's transaction: the lock ends with it, and the next request gets it at once."),
			listen(PinnedListenBouncer, false, "A worker runs LISTEN invoices_ready through PgBouncer in transaction mode (default_pool_size = 1); Acme's request on app-2 runs NOTIFY: the worker hears nothing, and app-2's connection gets the notification."),
			listen(PinnedListenDirect, true, "The same, with the worker's LISTEN on a direct connection to PostgreSQL and the notification still sent through PgBouncer: the worker hears it."),
		},
		MinTenants: 2,
	}
}

// runPinnedTemp plays two requests on a pool of one connection, Acme's and
// then Globex's, each correctly scoped, each running the same report code.
func runPinnedTemp(ctx context.Context, env *engine.Env, onCommitDrop bool) (err error) {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	db := quote(sb.Database)
	defer undoDDL(ctx, env, &err, "REVOKE TEMPORARY ON DATABASE "+db+" FROM "+quote(sb.AppRole))
	if err := labDDL(ctx, env, false, "GRANT TEMPORARY ON DATABASE "+db+" TO "+quote(sb.AppRole)); err != nil {
		return err
	}
	create := "CREATE TEMP TABLE IF NOT EXISTS " + scratchTable + " (tenant_id int, customer text)"
	if onCommitDrop {
		create = "CREATE TEMP TABLE " + scratchTable + " (tenant_id int, customer text) ON COMMIT DROP"
	}
	code := []string{create, "INSERT INTO " + scratchTable + " SELECT tenant_id, customer FROM invoices"}
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("A pool of one connection; the app role may create temp tables. Each request scopes with set_config(..., true) in its transaction, then runs: %s; %s; and reads tenant ids from %s.", code[0], code[1], scratchTable)); err != nil {
		return err
	}
	for _, t := range []engine.Tenant{acme, globex} {
		if err := tempReport(ctx, env, pool, t, code); err != nil {
			return err
		}
	}
	var detail string
	if !onCommitDrop {
		detail = "The temp table outlived Acme's transaction on its backend; it ends with that backend, when the run closes its pool."
	} else {
		detail = "Each request's table was dropped at its COMMIT."
	}
	return env.Conclude(ctx, detail)
}

// tempReport runs one scoped request for t that runs code and reads the
// scratch table, and says whether the table was there before.
func tempReport(ctx context.Context, env *engine.Env, pool *engine.Pool, t engine.Tenant, code []string) error {
	r := pool.NewRequest(t, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, t.Setting())
	if err != nil {
		return err
	}
	var existed bool
	if err := tx.QueryRow(ctx, "SELECT to_regclass('pg_temp."+scratchTable+"') IS NOT NULL").Scan(&existed); err != nil {
		r.Fail(err)
		return err
	}
	for _, s := range code {
		if _, err := tx.Exec(ctx, s); err != nil {
			r.Fail(err)
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM "+scratchTable); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	row := r.Row()
	before := "the backend had no temp table " + scratchTable + ", so the request created it"
	if existed {
		before = "the backend already had a temp table " + scratchTable + " from an earlier request, so CREATE ... IF NOT EXISTS skipped and the INSERT added to it"
	}
	why := fmt.Sprintf("%s; reading it returned %d rows, all %s's.", before, row.Rows, t.Name)
	if row.Leak {
		why = fmt.Sprintf("LEAK: %s; reading it returned %d rows, %d of them another tenant's, although the request was scoped to %s.", before, row.Rows, row.ForeignRows, t.Name)
	}
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s) on backend %d: %s", r.Seq, t.Name, row.PID, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s", r.Label(), row.PID, why)); err != nil {
		return err
	}
	return r.Release(ctx)
}

// idleLocksSQL counts the advisory locks of the lab's database held by
// backends that are idle: connections in a pool that no request holds.
const idleLocksSQL = `SELECT count(*)::int, coalesce(min(l.pid), 0)::int
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND a.state = 'idle' AND a.datname = current_database()`

// runPinnedLock plays Acme's invoice numbering twice, on two app instances
// of one connection each: the first request takes the numbering lock and
// returns early; the second, on the other instance, needs the same lock.
func runPinnedLock(ctx context.Context, env *engine.Env, xact bool) error {
	acme := env.Sandbox.Tenants[0]
	app1, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app-1", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	app2, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app-2", MaxConns: 1, MinConns: 1})
	if err != nil {
		return err
	}
	take := fmt.Sprintf("SELECT pg_advisory_lock(%d, %d)", lockClass, acme.ID)
	if xact {
		take = fmt.Sprintf("SELECT pg_advisory_xact_lock(%d, %d)", lockClass, acme.ID)
	}
	if err := env.Step(ctx, fmt.Sprintf("Two app instances, app-1 and app-2, with a pool of one connection each. Acme's invoice numbering runs, in its transaction: %s; its work; then (session lock only) pg_advisory_unlock.", take)); err != nil {
		return err
	}

	// Request #1, on app-1: takes the lock, does its work, and returns
	// early on an error of its own before the unlock.
	first := app1.NewRequest(acme, engine.PatternTxLocal)
	defer first.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, first, acme.Setting())
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, take); err != nil {
		first.Fail(err)
		return err
	}
	if err := observeFrom(ctx, first, tx, "SELECT tenant_id FROM invoices"); err != nil {
		first.Fail(err)
		return err
	}
	why := fmt.Sprintf("took the numbering lock (%d, %d) with %s and read its invoices; its code then returned early, on an error of its own, before pg_advisory_unlock; the transaction was rolled back, and the session lock stays.", lockClass, acme.ID, take)
	if xact {
		why = fmt.Sprintf("took the numbering lock (%d, %d) with %s and read its invoices; its code then returned early, on an error of its own; the transaction was rolled back, and the lock went with it.", lockClass, acme.ID, take)
	}
	first.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s) on backend %d %s", first.Seq, acme.Name, first.Row().PID, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d %s", first.Label(), first.Row().PID, why)); err != nil {
		return err
	}
	if err := first.Release(ctx); err != nil { // rolls the transaction back
		return err
	}

	// Request #2, on app-2: looks at who holds advisory locks, then waits
	// for the numbering lock for at most lockWait.
	second := app2.NewRequest(acme, engine.PatternTxLocal)
	defer second.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err = scopedTx(ctx, second, acme.Setting())
	if err != nil {
		return err
	}
	var idle, holder int
	if err := tx.QueryRow(ctx, idleLocksSQL).Scan(&idle, &holder); err != nil {
		second.Fail(err)
		return err
	}
	env.Tracker().SetMetric("locks_held_idle", fmt.Sprint(idle), float64(idle))
	if idle > 0 {
		env.Tracker().Note(fmt.Sprintf("pg_locks and pg_stat_activity: %d advisory lock(s) held by a backend that is idle in its pool (backend %d, app-1's connection, which no request holds).", idle, holder))
	} else {
		env.Tracker().Note("pg_locks and pg_stat_activity: no advisory lock is held by an idle backend.")
	}
	if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = '"+lockWait+"'"); err != nil {
		second.Fail(err)
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %d advisory lock(s) held by an idle backend. It runs SET LOCAL lock_timeout = '%s'; %s.", second.Label(), second.PID(), idle, lockWait, take)); err != nil {
		return err
	}
	if _, lerr := tx.Exec(ctx, take); lerr != nil {
		var pe *pgconn.PgError
		if !errors.As(lerr, &pe) {
			second.Fail(lerr)
			return lerr
		}
		second.Fail(lerr)
		why := fmt.Sprintf("waited %s for the numbering lock and gave up: %s (SQLSTATE %s). The lock is held by backend %d, idle in app-1's pool: no running request holds it, and nothing will release it until that connection closes.", lockWait, pe.Message, pe.Code, holder)
		pid := second.PID()
		second.Update(func(rr *engine.RequestRow) { rr.Why = why; rr.PID = pid })
		env.Tracker().Note(fmt.Sprintf("Request #%d (%s): %s", second.Seq, acme.Name, why))
		if err := env.Step(ctx, fmt.Sprintf("%s: %s", second.Label(), why)); err != nil {
			return err
		}
		if err := second.Release(ctx); err != nil {
			return err
		}
		return env.Conclude(ctx, fmt.Sprintf("Backend %d still holds the lock; it goes when the run closes app-1's pool.", holder))
	}
	if err := observeFrom(ctx, second, tx, "SELECT tenant_id FROM invoices"); err != nil {
		second.Fail(err)
		return err
	}
	if err := second.Commit(ctx); err != nil {
		return err
	}
	why = fmt.Sprintf("got the numbering lock at once, read its %d invoices and committed, which released the lock.", second.Row().Rows)
	second.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s) on backend %d %s", second.Seq, acme.Name, second.Row().PID, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d %s", second.Label(), second.Row().PID, why)); err != nil {
		return err
	}
	if err := second.Release(ctx); err != nil {
		return err
	}
	return env.Conclude(ctx, "")
}

// runPinnedListen plays a worker that listens on invoices_ready, through
// the run's PgBouncer or (direct) on a connection of its own, and Acme's
// request on app-2, through PgBouncer, that sends a notification in its
// transaction. What each client connection received is read from pgx's
// buffer of notifications, after a round trip, so nothing waits for an
// event that may never come; the direct listener waits for at most
// listenWait for a notification committed before it starts waiting.
func runPinnedListen(ctx context.Context, rb *bouncerRun, direct bool) error {
	env := rb.env
	acme := env.Sandbox.Tenants[0]
	mode := pgx.QueryExecModeExec // PgBouncer 1.18 keeps no prepared statements
	var worker *engine.Pool
	var err error
	where := "through PgBouncer"
	if direct {
		where = "on a direct connection to PostgreSQL"
		worker, err = env.OpenPool(ctx, engine.PoolOptions{Name: "worker", MaxConns: 1, MinConns: 1,
			Configure: func(c *pgxpool.Config) { c.ConnConfig.DefaultQueryExecMode = mode }})
	} else {
		worker, err = rb.openClient(ctx, "worker", 1, &mode)
	}
	if err != nil {
		return err
	}
	app, err := rb.openClient(ctx, "app-2", 1, &mode)
	if err != nil {
		return err
	}
	// The worker is not a request: it holds one connection of its pool
	// for as long as it listens.
	wc, err := worker.AcquireFor(ctx, 0)
	if err != nil {
		return err
	}
	held := true
	defer func() {
		if held {
			worker.ReleaseAndWait(context.WithoutCancel(ctx), wc)
		}
	}()
	if _, err := wc.Exec(ctx, "LISTEN "+listenChannel); err != nil {
		return err
	}
	var listener int32
	if err := wc.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&listener); err != nil {
		return err
	}
	why := fmt.Sprintf("The worker ran LISTEN %s %s; the server backend that ran it is %d.", listenChannel, where, listener)
	env.Tracker().Note(why)
	if err := env.Step(ctx, why+" It keeps its client connection to wait for notifications."); err != nil {
		return err
	}

	// Acme's request on app-2 reads its invoices and announces them.
	r := app.NewRequest(acme, engine.PatternTxLocal)
	defer r.ReleaseQuiet(context.WithoutCancel(ctx))
	tx, err := scopedTx(ctx, r, acme.Setting())
	if err != nil {
		return err
	}
	if err := observeFrom(ctx, r, tx, "SELECT tenant_id FROM invoices"); err != nil {
		r.Fail(err)
		return err
	}
	// NOTIFY, not pg_notify(): the lab revokes EXECUTE on pg_notify from
	// the app role, and NOTIFY takes no privilege.
	notify := "NOTIFY " + listenChannel + ", " + quoteLiteral(acme.Setting())
	if _, err := tx.Exec(ctx, notify); err != nil {
		r.Fail(err)
		return err
	}
	if err := r.Commit(ctx); err != nil {
		return err
	}
	stray := buffered(ctx, r.Conn().Conn())
	why = fmt.Sprintf("read its %d invoices and ran %s in its transaction, through PgBouncer; its own connection received %d notification(s) it never listened for.", r.Row().Rows, notify, len(stray))
	r.Update(func(rr *engine.RequestRow) { rr.Why = why })
	env.Tracker().Note(fmt.Sprintf("Request #%d (%s) on backend %d %s", r.Seq, acme.Name, r.Row().PID, why))
	if err := env.Step(ctx, fmt.Sprintf("%s on backend %d %s", r.Label(), r.Row().PID, why)); err != nil {
		return err
	}
	if err := r.Release(ctx); err != nil {
		return err
	}

	// The worker looks for what it received.
	var heard []*pgconn.Notification
	if direct {
		wctx, cancel := context.WithTimeout(ctx, listenWait)
		n, werr := wc.Conn().WaitForNotification(wctx)
		cancel()
		if werr == nil {
			heard = append(heard, n)
		}
	} else {
		// A round trip through PgBouncer: a notification for this client
		// would have arrived by now; then read what pgx has buffered.
		if _, err := wc.Exec(ctx, "SELECT 1"); err != nil {
			return err
		}
		heard = buffered(ctx, wc.Conn())
	}
	tr := env.Tracker()
	tr.SetMetric("notifications_received", fmt.Sprint(len(heard)), float64(len(heard)))
	tr.SetMetric("notifications_misdelivered", fmt.Sprint(len(stray)), float64(len(stray)))
	verdict := fmt.Sprintf("The worker received %d notification(s); app-2's connection received %d it never listened for.", len(heard), len(stray))
	if len(heard) == 0 {
		verdict += fmt.Sprintf(" Its LISTEN belongs to server backend %d, which PgBouncer gave back to the pool after the LISTEN's transaction; the notification went to the client that held that backend when it came.", listener)
	}
	tr.Note(verdict)
	tr.Measured(verdict, true)
	if err := env.Step(ctx, verdict); err != nil {
		return err
	}
	held = false
	worker.ReleaseAndWait(ctx, wc)
	if len(heard) > 0 {
		// The worker does its job: it reads the invoices of the tenant the
		// payload names, scoped to that tenant.
		t := acme
		for _, x := range env.Sandbox.Tenants {
			if x.Setting() == heard[0].Payload {
				t = x
			}
		}
		job := worker.NewRequest(t, engine.PatternTxLocal)
		defer job.ReleaseQuiet(context.WithoutCancel(ctx))
		jtx, err := scopedTx(ctx, job, t.Setting())
		if err != nil {
			return err
		}
		if err := observeFrom(ctx, job, jtx, "SELECT tenant_id FROM invoices"); err != nil {
			job.Fail(err)
			return err
		}
		if err := job.Commit(ctx); err != nil {
			return err
		}
		if err := env.Step(ctx, fmt.Sprintf("%s, woken by the notification with payload '%s', reads %s's invoices: %d rows.", job.Label(), heard[0].Payload, t.Name, job.Row().Rows)); err != nil {
			return err
		}
		if err := job.Release(ctx); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, verdict)
}

// buffered returns the notifications pgx has already received on c,
// without reading from the connection: WaitForNotification hands out a
// buffered one at once, and with a context that is already done it
// returns without touching the connection when there is none.
func buffered(ctx context.Context, c *pgx.Conn) []*pgconn.Notification {
	done, cancel := context.WithCancel(ctx)
	cancel()
	var out []*pgconn.Notification
	for {
		n, err := c.WaitForNotification(done)
		if err != nil {
			return out
		}
		out = append(out, n)
	}
}
