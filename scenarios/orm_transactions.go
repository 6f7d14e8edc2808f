package scenarios

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// Variants of orm-transactions (stable names: tools and lessons rely on
// them).
const (
	ORMDataSourceQuery    = "datasource-query"
	ORMRunnerAutocommit   = "runner-autocommit"
	ORMRunnerTransaction  = "runner-transaction"
	ORMRequestTransaction = "request-transaction"
	ORMShortTransaction   = "short-transaction"
)

// Patterns of orm-transactions' requests: how each ORM call shape reaches
// the database.
const (
	// PatternDataSourceQuery is set_config(..., true) and the query sent as
	// two calls on the pool (TypeORM's dataSource.query, Prisma's client
	// outside $transaction): each call is its own implicit transaction.
	PatternDataSourceQuery = "datasource-query"
	// PatternRunnerAutocommit is both calls on one pinned connection with
	// no transaction (a QueryRunner without startTransaction).
	PatternRunnerAutocommit = "runner-autocommit"
	// PatternRunnerTransaction is both calls inside BEGIN ... COMMIT on one
	// connection (dataSource.transaction, a QueryRunner with
	// startTransaction).
	PatternRunnerTransaction = "runner-transaction"
	// PatternRequestTransaction is a transaction opened by middleware when
	// the request starts and committed when its response is sent.
	PatternRequestTransaction = "request-transaction"
	// PatternShortTransaction is a transaction around the database calls
	// only.
	PatternShortTransaction = "short-transaction"
)

// setLocalWithPID is the scoping call of the ORM variants: the
// transaction-local set_config, with the backend that ran it.
const setLocalWithPID = `SELECT set_config('app.current_tenant', $1, true), pg_backend_pid()`

// appBackendsSQL lists the app role's backends of the lab's database and
// their state, as pg_stat_activity shows them to the lab's superuser.
const appBackendsSQL = `SELECT pid, state FROM pg_stat_activity
WHERE datname = current_database() AND usename = $1 AND backend_type = 'client backend'
ORDER BY pid`

// The metrics orm-transactions sets.
const (
	metricUnsetTenant     = "unset_tenant"
	metricIdleInTx        = "idle_in_transaction"
	metricRequestsWaiting = "requests_waiting"
)

// ORMTransactions returns the orm-transactions scenario: where an ORM's
// transaction API really runs set_config(..., true). Sent as a call of its
// own (TypeORM's dataSource.query, or a QueryRunner without a
// transaction), the transaction-local setting ends with that call's
// implicit transaction: the next query runs with the tenant unset, or with
// whatever session-level value the backend held before, another tenant's.
// Inside one transaction on one connection it holds for the query. A
// transaction that spans the whole request keeps its backend idle in
// transaction while the request waits on something else, and the pool's
// other requests wait for it.
func ORMTransactions() *engine.Scenario {
	scoping := func(name, pattern, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(2), Run: func(ctx context.Context, env *engine.Env) error {
			return runORMScoping(ctx, env, pattern)
		}}
	}
	spanning := func(name string, requestWide bool, summary string) engine.Variant {
		return engine.Variant{Name: name, Summary: summary, Conns: engine.Fixed(4), Run: func(ctx context.Context, env *engine.Env) error {
			return runORMSpan(ctx, env, requestWide)
		}}
	}
	return &engine.Scenario{
		ID:     "orm-transactions",
		Pacing: engine.PacingReplay,
		Title:  "ORM transaction APIs: where set_config(..., true) runs",
		Variants: []engine.Variant{
			scoping(ORMDataSourceQuery, PatternDataSourceQuery, "set_config(..., true) and the query as two calls on the pool, as TypeORM's dataSource.query sends them: each is its own implicit transaction."),
			scoping(ORMRunnerAutocommit, PatternRunnerAutocommit, "Both calls on one QueryRunner's connection, without startTransaction: one connection, but still two implicit transactions."),
			scoping(ORMRunnerTransaction, PatternRunnerTransaction, "Both calls inside one transaction on one connection, as dataSource.transaction() or a QueryRunner with startTransaction() send them."),
			spanning(ORMRequestTransaction, true, "Middleware opens the transaction when the request starts and commits when the response is sent; the handler waits on another service in between."),
			spanning(ORMShortTransaction, false, "The transaction wraps the database calls only; the handler waits on the other service after COMMIT, with its connection back in the pool."),
		},
		MinTenants: 3,
	}
}

// runORMScoping plays the scoping variants on a pool of two. Initech's
// slow request holds one connection throughout, so every other call gets
// the same backend: Acme scopes and queries the way pattern says, Globex's
// request on an older route scopes with a session-level set_config, and
// Acme's second request runs on the backend Globex left.
func runORMScoping(ctx context.Context, env *engine.Env, pattern string) error {
	acme, globex, initech := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1], env.Sandbox.Tenants[2]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections, as an ORM's pool would. Each box shows what its own backend reports: PID, tenant setting, role."); err != nil {
		return err
	}
	holder := pool.NewRequest(initech, engine.PatternTxLocal)
	if err := holder.Acquire(ctx); err != nil {
		return err
	}
	defer holder.ReleaseQuiet(context.WithoutCancel(ctx))

	var mine []*engine.Request
	first := pool.NewRequest(acme, pattern)
	mine = append(mine, first)
	if err := ormScopeAndQuery(ctx, env, pool, first); err != nil {
		return err
	}
	legacy := pool.NewRequest(globex, engine.PatternSessionSet)
	if err := legacy.Do(ctx); err != nil {
		return err
	}
	second := pool.NewRequest(acme, pattern)
	mine = append(mine, second)
	if err := ormScopeAndQuery(ctx, env, pool, second); err != nil {
		return err
	}
	if err := holder.Finish(ctx); err != nil {
		return err
	}

	unset := 0
	for _, r := range mine {
		if row := r.Row(); row.Error == "" && (row.SeenTenant == nil || *row.SeenTenant == "") {
			unset++
		}
	}
	tr := env.Tracker()
	tr.SetMetric(metricUnsetTenant, fmt.Sprintf("%d of %d of Acme's queries", unset, len(mine)), float64(unset))
	env.NoteRequests(nil)
	switch pattern {
	case PatternRunnerTransaction:
		return env.Conclude(ctx, "Inside one transaction the local setting held for Acme's query, even on the backend Globex's older route had left scoped.")
	default:
		return env.Conclude(ctx, "Each set_config(..., true) ended with the implicit transaction of its own call: Acme's queries ran with the tenant unset, or under the session-level value the backend already held.")
	}
}

// ormScopeAndQuery runs r's set_config(..., true) and its query the way
// its pattern says and records what came back and where each call ran.
func ormScopeAndQuery(ctx context.Context, env *engine.Env, pool *engine.Pool, r *engine.Request) error {
	var setPID int32
	var set string
	switch r.Pattern {
	case PatternDataSourceQuery:
		// Two calls on the pool, as the ORM makes them: each acquires a
		// connection, runs one statement in an implicit transaction, and
		// releases it.
		r.SetPhase("scoping")
		c, err := pool.AcquireFor(ctx, r.Seq)
		if err != nil {
			r.Fail(err)
			return err
		}
		err = c.QueryRow(ctx, setLocalWithPID, r.Tenant.Setting()).Scan(&set, &setPID)
		pool.ReleaseAndWait(ctx, c)
		if err != nil {
			r.Fail(err)
			return err
		}
		r.Update(func(row *engine.RequestRow) { row.PID, row.Phase = uint32(setPID), "scoped" })
		if err := env.Step(ctx, fmt.Sprintf("%s calls dataSource.query(\"SELECT set_config('app.current_tenant', $1, true)\", ['%s']): the pool hands the call backend %d, which runs it in an implicit transaction of its own and commits. The call returned '%s'; the backend now %s.",
			r.Label(), r.Tenant.Setting(), setPID, set, engine.DescribeSetting(env.Sandbox, pool.Setting(uint32(setPID)), "holds"))); err != nil {
			return err
		}
		r.SetPhase("querying")
		if c, err = pool.AcquireFor(ctx, r.Seq); err != nil {
			r.Fail(err)
			return err
		}
		err = r.Observe(ctx, c)
		pool.ReleaseAndWait(ctx, c)
		if err != nil {
			r.Fail(err)
			return err
		}
	case PatternRunnerAutocommit, PatternRunnerTransaction:
		if err := r.Acquire(ctx); err != nil {
			return err
		}
		defer r.ReleaseQuiet(context.WithoutCancel(ctx))
		var q engine.Querier = r.Conn()
		var tx pgx.Tx
		if r.Pattern == PatternRunnerTransaction {
			var err error
			if tx, err = r.Begin(ctx); err != nil {
				return err
			}
			q = tx
		}
		if err := q.QueryRow(ctx, setLocalWithPID, r.Tenant.Setting()).Scan(&set, &setPID); err != nil {
			r.Fail(err)
			return err
		}
		r.SetPhase("scoped")
		what := fmt.Sprintf("%s runs set_config('app.current_tenant', '%s', true) on its QueryRunner's connection, backend %d, with no transaction open: the statement is its own implicit transaction, and the value ends with it.", r.Label(), r.Tenant.Setting(), setPID)
		if tx != nil {
			what = fmt.Sprintf("%s runs BEGIN and set_config('app.current_tenant', '%s', true) on backend %d: the value holds until this transaction ends.", r.Label(), r.Tenant.Setting(), setPID)
		}
		if err := env.Step(ctx, what); err != nil {
			return err
		}
		if err := r.Observe(ctx, q); err != nil {
			r.Fail(err)
			return err
		}
		if tx != nil {
			if err := r.Commit(ctx); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("%s: pattern %q is not one of orm-transactions'", r.Label(), r.Pattern)
	}
	row := r.Row()
	r.Update(func(rr *engine.RequestRow) {
		rr.Phase = "queried"
		rr.Why = fmt.Sprintf("set_config(..., true) ran on backend %d, the query on backend %d. %s", setPID, row.PID, row.Why)
	})
	if err := env.Step(ctx, r.Verdict()); err != nil {
		return err
	}
	if r.Conn() != nil {
		return r.Release(ctx)
	}
	return nil
}

// runORMSpan plays two requests, Acme's and Globex's, that each read their
// invoices and then wait on another service before they answer, with the
// transaction spanning the whole request (requestWide) or the database
// calls only; while they wait, pg_stat_activity is read, and Initech's
// request asks the pool of two for a connection.
func runORMSpan(ctx context.Context, env *engine.Env, requestWide bool) error {
	acme, globex, initech := env.Sandbox.Tenants[0], env.Sandbox.Tenants[1], env.Sandbox.Tenants[2]
	pool, err := env.OpenPool(ctx, engine.PoolOptions{Name: "app", MaxConns: 2, MinConns: 2})
	if err != nil {
		return err
	}
	pattern := PatternShortTransaction
	if requestWide {
		pattern = PatternRequestTransaction
	}
	if err := env.Step(ctx, "The pool has opened its 2 connections. Acme's and Globex's requests arrive; each reads its invoices, then calls another service (a payment provider, say) before it answers."); err != nil {
		return err
	}
	reqs := []*engine.Request{pool.NewRequest(acme, pattern), pool.NewRequest(globex, pattern)}
	for _, r := range reqs {
		defer r.ReleaseQuiet(context.WithoutCancel(ctx))
		tx, err := scopedTx(ctx, r, r.Tenant.Setting())
		if err != nil {
			return err
		}
		if err := r.Observe(ctx, tx); err != nil {
			r.Fail(err)
			return err
		}
		if requestWide {
			r.SetPhase("waiting on the other service")
			if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s Its transaction stays open: the middleware commits when the response is sent, and the handler now awaits the other service.", r.Label(), r.Row().PID, r.Row().Why)); err != nil {
				return err
			}
			continue
		}
		if err := r.Commit(ctx); err != nil {
			return err
		}
		if err := env.Step(ctx, fmt.Sprintf("%s on backend %d: %s It commits at once.", r.Label(), r.Row().PID, r.Row().Why)); err != nil {
			return err
		}
		if err := r.Release(ctx); err != nil {
			return err
		}
		r.SetPhase("waiting on the other service")
	}

	// Initech's request arrives while both wait on the other service.
	late := pool.NewRequest(initech, engine.PatternTxLocal)
	defer late.ReleaseQuiet(context.WithoutCancel(ctx))
	got := make(chan error, 1)
	changes, unsubscribe := env.Tracker().Subscribe()
	defer unsubscribe()
	go func() { got <- late.AcquireQuiet(ctx) }()
	// Initech waits only when its Acquire is under way and every one of
	// the pool's connections is held: an Acquire is counted as waiting
	// from the moment it starts, and one that an idle connection answers
	// at once could be seen in that moment on a busy machine.
	blocked := func() bool {
		st := pool.Stat()
		return pool.Waiting() > 0 && st.AcquiredConns() >= st.MaxConns()
	}
	acquired := false
	for !acquired && !blocked() {
		select {
		case err := <-got:
			if err != nil {
				return err
			}
			acquired = true
		case <-changes:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	waiting := int(pool.Waiting())
	idle, states, err := appBackendStates(ctx, env)
	if err != nil {
		return err
	}
	tr := env.Tracker()
	tr.SetMetric(metricIdleInTx, fmt.Sprintf("%d of %d app backends", idle, len(states)), float64(idle))
	tr.SetMetric(metricRequestsWaiting, fmt.Sprint(waiting), float64(waiting))
	seen := strings.Join(states, "; ")
	tr.Measured(fmt.Sprintf("%d of %d app backends sat idle in transaction while their requests waited on the other service; %d request(s) waited for a connection.", idle, len(states), waiting), true)
	tr.Note("While Acme's and Globex's requests waited on the other service, pg_stat_activity showed: " + seen + ".")
	for _, r := range reqs {
		pid := r.Row().PID
		for _, s := range states {
			if strings.HasPrefix(s, fmt.Sprintf("backend %d:", pid)) {
				r.Update(func(row *engine.RequestRow) {
					row.Why += " While it waited on the other service, pg_stat_activity showed " + s + "."
				})
			}
		}
	}
	narration := fmt.Sprintf("Both requests wait on the other service. pg_stat_activity, read by the lab's superuser: %s. Initech's request asks the pool for a connection: ", seen)
	if waiting > 0 {
		narration += fmt.Sprintf("%d request waits, because both connections are held by open transactions that run no statement.", waiting)
	} else {
		narration += "it gets one at once."
	}
	if err := env.Step(ctx, narration); err != nil {
		return err
	}

	// The other service answers; each request sends its response.
	for _, r := range reqs {
		if requestWide {
			if err := r.Commit(ctx); err != nil {
				return err
			}
			if err := r.Release(ctx); err != nil {
				return err
			}
		}
		r.SetPhase("answered")
	}
	if !acquired {
		if err := <-got; err != nil {
			return err
		}
	}
	if err := late.Finish(ctx); err != nil {
		return err
	}
	if requestWide {
		return env.Conclude(ctx, fmt.Sprintf("While the requests waited on the other service, %d backend(s) sat idle in transaction and %d request waited for a connection.", idle, waiting))
	}
	return env.Conclude(ctx, "While the requests waited on the other service, no backend was idle in transaction, and Initech's request got a connection at once.")
}

// appBackendStates reads pg_stat_activity on the lab's superuser
// connection: how many of the app role's backends are idle in transaction,
// and each backend's state in words.
func appBackendStates(ctx context.Context, env *engine.Env) (idleInTx int, states []string, err error) {
	err = env.AdminTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, appBackendsSQL, env.Sandbox.AppRole)
		if err != nil {
			return err
		}
		type backend struct {
			PID   int32
			State *string
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[backend])
		if err != nil {
			return err
		}
		for _, b := range list {
			s := "(none)"
			if b.State != nil {
				s = *b.State
			}
			if s == "idle in transaction" {
				idleInTx++
			}
			states = append(states, fmt.Sprintf("backend %d: %s", b.PID, s))
		}
		return nil
	})
	return idleInTx, states, err
}
