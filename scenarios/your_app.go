package scenarios

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/rlslab/rlslab/internal/pgproxy"
	"github.com/rlslab/rlslab/internal/pgproxy/appview"
	"github.com/rlslab/rlslab/scenarios/engine"
)

// YourAppID is the your-app scenario's id: the scenario name a learner's
// own app's sessions through the lab's proxy are recorded under too
// (package sessions), so that they compare with its runs.
const YourAppID = "your-app"

// yourAppPool is the app's pool size, the seed's DataSource's.
const yourAppPool = 2

// YourApp returns the your-app scenario: the seed app's requests, played
// by a Go client (pgx, a pool of two) through rlslab's PostgreSQL proxy,
// and drawn from what the proxy observes of them, as a learner's own app
// is. Its variants are the seed's middleware (a session-level set_config
// as its own call, then the query) and its fix (both in one transaction
// with set_config(..., true)).
//
// The proxy is the same code as the lab's (package pgproxy), but a
// listener of the run's own on a loopback port: the lab's proxy admits a
// learner's app only while no run is going, and draws it as an app session
// of its own, not as this run.
func YourApp() *engine.Scenario {
	v := func(mode, summary string) engine.Variant {
		return engine.Variant{Name: mode, Summary: summary, Run: func(ctx context.Context, env *engine.Env) error { return runYourApp(ctx, env, mode) }}
	}
	return &engine.Scenario{
		ID:     YourAppID,
		Pacing: engine.PacingReplay,
		Title:  "Your app: the seed's requests through rlslab's proxy",
		Variants: []engine.Variant{
			v(engine.PatternSessionSet, "The seed's middleware: set_config(..., false) as its own call, then find(), each through the shared pool."),
			v(engine.PatternTxLocal, "The fix: set_config(..., true) and find() in one transaction."),
		},
		MinTenants: 2,
		Conns:      engine.Fixed(yourAppPool),
	}
}

// runYourApp opens a proxy of the run's own in front of the lab's
// database, the app's pool of two through it, and sends the seed's four
// requests one after the other: Globex, Acme, one that forgets to scope,
// Globex again.
func runYourApp(ctx context.Context, env *engine.Env, mode string) error {
	sb := env.Sandbox
	acme, globex := sb.Tenants[0], sb.Tenants[1]
	draw := appview.New(env, appview.Options{Who: "The app", Max: yourAppPool})
	env.CountPool(draw.Counts)
	pool, err := openThroughProxy(ctx, env, draw)
	if err != nil {
		return err
	}
	// Both connections opened and given back, the second one last: the
	// pool hands out the connection given back last, so requests sent one
	// after the other all run on it, as in the seed's app.
	a, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	b, err := pool.Acquire(ctx)
	if err != nil {
		a.Release()
		return err
	}
	a.Release()
	b.Release()
	if err := draw.WaitOpen(ctx, yourAppPool); err != nil {
		return err
	}
	if err := env.Step(ctx, fmt.Sprintf("The app's pool has opened its %d connections through rlslab's proxy. Each box is what the proxy reads of its backend when the connection is idle: PID, tenant setting, role.", yourAppPool)); err != nil {
		return err
	}
	drive := []struct {
		tenant engine.Tenant
		forgot bool
	}{{tenant: globex}, {tenant: acme}, {forgot: true}, {tenant: globex}}
	for i, d := range drive {
		tag := d.tenant.Setting()
		who := sb.TenantName(tag) + "'s request"
		if d.forgot {
			tag, who = "0", "A request that forgets to scope (tenant 0)"
		}
		got, err := seedRequest(ctx, pool, mode, tag, d.forgot)
		if err != nil {
			return fmt.Errorf("request %d (%s): %w", i+1, who, err)
		}
		line := fmt.Sprintf("Request %d: %s ran on backend %d (the PID it read itself) and got %s.", i+1, who, got.pid, invoiceCount(sb, got.tenants))
		env.Tracker().Note(line)
		if err := env.Step(ctx, line); err != nil {
			return err
		}
	}
	return env.Conclude(ctx, "Each row is a statement the proxy saw, with the tenant its tag declared and the setting its backend held.")
}

// openThroughProxy starts a proxy of the run's own that logs into the
// lab's database as the app role and draws what it sees with draw, and
// returns a pool of yourAppPool connections through it. The run's close
// closes the pool, then stops the proxy.
func openThroughProxy(ctx context.Context, env *engine.Env, draw *appview.Drawer) (*pgxpool.Pool, error) {
	sb := env.Sandbox
	password := rand.Text()
	const user = "app"
	srv, err := pgproxy.New(pgproxy.Config{
		Logger: env.Logger(),
		Lookup: func(_ context.Context, database, u string) (pgproxy.Target, error) {
			if database != sb.Database {
				return pgproxy.Target{}, pgproxy.ErrUnknownDatabase
			}
			if u != user {
				return pgproxy.Target{}, pgproxy.ErrRefused
			}
			return pgproxy.Target{URL: sb.AppURL, ClientPassword: password, Events: draw}, nil
		},
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("the run's proxy: %w", err)
	}
	sctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, ln) }()
	env.OnClose(func() {
		stop()
		if err := <-served; err != nil {
			env.Logger().Warn("the run's proxy", "err", err)
		}
		draw.End()
	})
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: ln.Addr().String(), Path: "/" + sb.Database, RawQuery: "sslmode=disable"}
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		return nil, err
	}
	cfg.MaxConns, cfg.MinConns = yourAppPool, 0
	// No health check reorders the idle connections during a run, however
	// long a step is shown.
	cfg.HealthCheckPeriod = 24 * time.Hour
	cfg.ConnConfig.RuntimeParams["application_name"] = "rlslab " + sb.Lab + " " + YourAppID
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	env.OnClose(pool.Close) // runs before the proxy stops (reverse order)
	return pool, nil
}

// seedAnswer is what one of the seed's requests got: the backend PID it
// read with pg_backend_pid() and the tenant of each invoice.
type seedAnswer struct {
	pid     uint32
	tenants []int32
}

// queryer is what a seed request reads through: the pool (each call a
// checkout of its own) or a transaction.
type queryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// seedRequest sends one of the seed app's requests for tenant tag, every
// statement tagged /* tenant='tag' */ as the seed's middleware does: the
// forgetful one reads its PID and the invoices on whatever connection the
// pool gives; session-set scopes with a session-level set_config as its
// own call first; tx-local runs all three in one transaction, scoped with
// set_config(..., true).
func seedRequest(ctx context.Context, pool *pgxpool.Pool, mode, tag string, forgot bool) (seedAnswer, error) {
	comment := fmt.Sprintf("/* tenant='%s' */ ", tag)
	var out seedAnswer
	read := func(q queryer) error {
		if err := q.QueryRow(ctx, comment+"SELECT pg_backend_pid() AS pid").Scan(&out.pid); err != nil {
			return err
		}
		rows, err := q.Query(ctx, comment+"SELECT id, tenant_id, customer, amount FROM invoices ORDER BY id")
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil {
				return err
			}
			t, ok := vals[1].(int32)
			if !ok {
				return errors.New("invoices.tenant_id is not an integer")
			}
			out.tenants = append(out.tenants, t)
		}
		return rows.Err()
	}
	switch {
	case forgot:
		return out, read(pool)
	case mode == engine.PatternSessionSet:
		if _, err := pool.Exec(ctx, comment+"SELECT set_config('app.current_tenant', $1, false)", tag); err != nil {
			return out, err
		}
		return out, read(pool)
	case mode == engine.PatternTxLocal:
		return out, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, comment+"SELECT set_config('app.current_tenant', $1, true)", tag); err != nil {
				return err
			}
			return read(tx)
		})
	}
	return out, fmt.Errorf("your-app has no mode %q", mode)
}

// invoiceCount says how many invoices a request got and whose.
func invoiceCount(sb engine.Sandbox, tenants []int32) string {
	if len(tenants) == 0 {
		return "no invoices"
	}
	per := map[int32]int{}
	var order []int32
	for _, t := range tenants {
		if per[t] == 0 {
			order = append(order, t)
		}
		per[t]++
	}
	parts := make([]string, len(order))
	for i, t := range order {
		parts[i] = fmt.Sprintf("%d of %s's", per[t], sb.TenantName(fmt.Sprint(t)))
	}
	return strings.Join(parts, " and ") + " invoices"
}
