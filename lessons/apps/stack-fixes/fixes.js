// fixes.js holds the lessons' fixes for node-postgres and TypeORM, and runs
// one of them against a lab. Each fix sits between a "// snippet: NAME"
// line and a "// end snippet" line; the lessons quote that text verbatim,
// and rlslab's tests check that they still do and run every check below.
//
// Usage:
//   node fixes.js --url postgres://USER:PASSWORD@HOST:PORT/DB --check NAME [--role ROLE] [--tenant 1]
//   node fixes.js --serve    (one check a line on standard input, as JSON)
//
// Checks (each prints one JSON line):
//   pg-tenant-tx, typeorm-tenant-tx      the request scoped in one transaction;
//                                        then a query that forgot to scope
//   pg-guards, typeorm-guards            a code path that sets the tenant for
//                                        the session, inside the guard; then a
//                                        connection left scoped outside it
//   pg-tenant-role, typeorm-tenant-role  SET LOCAL ROLE in one transaction;
//                                        then a query on the same connection
//   pg-tenant-context, typeorm-tenant-context
//                                        two requests at once, each with its
//                                        tenant in AsyncLocalStorage; the
//                                        same with one module-level variable;
//                                        a callback run after the request;
//                                        a request without a tenant
//   pg-check-forced-rls, typeorm-check-forced-rls
//                                        the missing-rls lesson's check
//   pg-catalog-check, typeorm-catalog-check --what W --sql Q
//                                        a lesson's catalog check
//   pg-search-param, typeorm-search-param --term T
//                                        a search with T as a parameter, then
//                                        the listing in the same transaction
//   pg-not-member --role R               the membership check at start-up
//   typeorm-clear, typeorm-purge         emptying a tenant's contacts
//   pg-explain-as-tenant, typeorm-explain-as-tenant --sql Q
//                                        the plan of Q as the app role
//   typeorm-schema-per-tenant            tenant_acme's tickets, a request
//                                        that sets no schema, tenant_globex's
//   typeorm-pinned-state                 Acme's and Globex's reports, what
//                                        they left, a NOTIFY heard
//   pg-schema-per-tenant, pg-pinned-state
//                                        the same with node-postgres
//   pg-plan-cache --sql Q [--name N], typeorm-plan-cache --sql Q
//                                        Q for Acme, then Globex, on one
//                                        connection
//   typeorm-view-sql, typeorm-fk-sql     the SQL TypeORM's schema builder
//                                        generates for the view and the
//                                        order entities
//
// The pools hold one connection, so "then" always runs on the backend the
// fix used.
'use strict';

require('reflect-metadata');
const { AsyncLocalStorage } = require('node:async_hooks');
const readline = require('node:readline');
const pg = require('pg');
const { DataSource, EntitySchema } = require('typeorm');

const { Client, Pool, escapeIdentifier } = pg;

// snippet: pg-tenant-tx
// inTenantTx runs fn(client) in one transaction on one pooled client,
// scoped to tenant with a transaction-local setting.
async function inTenantTx(pool, tenant, fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SELECT set_config('app.current_tenant', $1, true)`, [tenant]);
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
// end snippet

// snippet: typeorm-tenant-tx
// inTenantTransaction runs fn(manager) in dataSource.transaction(), scoped
// to tenant; every query must go through the manager it is given.
function inTenantTransaction(dataSource, tenant, fn) {
  return dataSource.transaction(async (manager) => {
    await manager.query(`SELECT set_config('app.current_tenant', $1, true)`, [tenant]);
    return fn(manager);
  });
}
// end snippet

// snippet: pg-guards
// withGuardedClient hands fn a client that holds no tenant (a client that
// still holds one is destroyed and another taken), and clears the
// setting before the client goes back to the pool.
async function withGuardedClient(pool, fn) {
  for (let tries = 0; tries < 3; tries++) {
    const client = await pool.connect();
    const { rows } = await client.query(`SELECT current_setting('app.current_tenant', true) AS v`);
    if (rows[0].v) {
      client.release(true); // check before use: close it, take another
      continue;
    }
    try {
      return await fn(client);
    } finally {
      try {
        await client.query('RESET app.current_tenant'); // reset on release
        client.release();
      } catch (err) {
        client.release(err); // a client that cannot be reset is closed
      }
    }
  }
  throw new Error('no pooled connection free of a tenant setting');
}
// end snippet

// snippet: typeorm-guards
// withGuardedRunner hands fn a QueryRunner whose connection holds no
// tenant, and clears the setting before it goes back to the pool.
async function withGuardedRunner(dataSource, fn) {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    const [{ v }] = await runner.query(`SELECT current_setting('app.current_tenant', true) AS v`);
    if (v) throw new Error(`pooled connection still scoped to tenant ${v}`);
    return await fn(runner);
  } finally {
    await runner.query('RESET app.current_tenant');
    await runner.release();
  }
}
// end snippet

// snippet: pg-tenant-role
// inTenantRole runs fn(client) in one transaction as role, one of the
// application's own role names (never user input), switched with SET
// LOCAL ROLE so the connection is back to the pool's role at COMMIT.
async function inTenantRole(pool, role, fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL ROLE ${escapeIdentifier(role)}`);
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
// end snippet

// snippet: typeorm-tenant-role
// inTenantRoleTransaction is the same with TypeORM; escapeIdentifier
// comes from the pg package under it.
function inTenantRoleTransaction(dataSource, role, fn) {
  return dataSource.transaction(async (manager) => {
    await manager.query(`SET LOCAL ROLE ${escapeIdentifier(role)}`);
    return fn(manager);
  });
}
// end snippet

// snippet: pg-tenant-context
// tenantStore holds the request's tenant: the middleware runs the rest of
// each request inside tenantStore.run(tenant, next).
const tenantStore = new AsyncLocalStorage();

// inRequestTenantTx runs fn(client) in inTenantTx for the tenant of the
// request it is called from, and refuses to run without one.
function inRequestTenantTx(pool, fn) {
  const tenant = tenantStore.getStore();
  if (!tenant) throw new Error('no tenant in this request');
  return inTenantTx(pool, tenant, fn);
}
// end snippet

// snippet: typeorm-tenant-context
// inRequestTransaction runs fn(manager) in inTenantTransaction for the
// tenant of the request it is called from (the same tenantStore), and
// refuses to run without one.
function inRequestTransaction(dataSource, fn) {
  const tenant = tenantStore.getStore();
  if (!tenant) throw new Error('no tenant in this request');
  return inTenantTransaction(dataSource, tenant, fn);
}
// end snippet

// snippet: pg-check-forced-rls
// unprotectedTablesSQL lists every table and partition in schema public
// with a tenant_id column and no forced row-level security.
const unprotectedTablesSQL = `SELECT c.oid::regclass::text AS name
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
  WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
    AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
  ORDER BY 1`;

// checkForcedRLS throws an error that names every table
// unprotectedTablesSQL finds; a test runs it after the migrations.
async function checkForcedRLS(pool) {
  const { rows } = await pool.query(unprotectedTablesSQL);
  if (rows.length > 0) {
    throw new Error(`tables with a tenant_id column and no forced RLS: ${rows.map((r) => r.name).join(', ')}`);
  }
}
// end snippet

// snippet: typeorm-check-forced-rls
// checkForcedRLSWith is the same check through a TypeORM DataSource.
async function checkForcedRLSWith(dataSource) {
  const rows = await dataSource.query(unprotectedTablesSQL);
  if (rows.length > 0) {
    throw new Error(`tables with a tenant_id column and no forced RLS: ${rows.map((r) => r.name).join(', ')}`);
  }
}
// end snippet

// snippet: pg-discard
// withDiscardedClient hands fn a pooled client and runs DISCARD ALL on it
// before it goes back; node-postgres names a prepared statement only when
// a query is given a name, so there is nothing of its own to lose.
async function withDiscardedClient(pool, fn) {
  const client = await pool.connect();
  try {
    return await fn(client);
  } finally {
    try {
      await client.query('DISCARD ALL');
      client.release();
    } catch (err) {
      client.release(err); // a client that cannot be reset is closed
    }
  }
}
// end snippet

// snippet: typeorm-discard
// withDiscardedRunner is the same for code that owns a TypeORM QueryRunner.
async function withDiscardedRunner(dataSource, fn) {
  const runner = dataSource.createQueryRunner();
  await runner.connect();
  try {
    return await fn(runner);
  } finally {
    await runner.query('DISCARD ALL');
    await runner.release();
  }
}
// end snippet

// snippet: pg-catalog-check
// catalogCheck runs sql, a catalog query that returns one name per row in
// a column called name, and throws an error that lists them after what;
// a test runs it after the migrations, as the app's own role.
async function catalogCheck(pool, what, sql) {
  const { rows } = await pool.query(sql);
  if (rows.length > 0) throw new Error(`${what}: ${rows.map((r) => r.name).join(', ')}`);
}
// end snippet

// snippet: typeorm-catalog-check
// catalogCheckWith is catalogCheck through a TypeORM DataSource.
async function catalogCheckWith(dataSource, what, sql) {
  const rows = await dataSource.query(sql);
  if (rows.length > 0) throw new Error(`${what}: ${rows.map((r) => r.name).join(', ')}`);
}
// end snippet

// snippet: pg-search-param
// searchInvoices returns the ids of the invoices, in the request's
// transaction on client, whose customer contains term. The term is sent
// as a parameter ($1), apart from the SQL text: the server compares it as
// a string and never runs any of it.
async function searchInvoices(client, term) {
  const { rows } = await client.query(
    'SELECT id FROM invoices WHERE strpos(customer, $1) > 0 ORDER BY id', [term]);
  return rows.map((r) => r.id);
}
// end snippet

// snippet: typeorm-search-param
// searchInvoicesWith is the same with the transaction's TypeORM manager:
// manager.query takes the parameters as its second argument.
async function searchInvoicesWith(manager, term) {
  const rows = await manager.query(
    'SELECT id FROM invoices WHERE strpos(customer, $1) > 0 ORDER BY id', [term]);
  return rows.map((r) => r.id);
}
// end snippet

// snippet: pg-not-member
// checkNotMember throws when the pool's login role is a member of role,
// directly or through other roles: any SQL it runs could SET ROLE to it,
// and if it inherits, every policy TO role applies to its queries at once.
// The tenant API runs it at start-up with the role of the admin policies.
async function checkNotMember(pool, role) {
  const { rows: [r] } = await pool.query(
    `SELECT current_user::text AS usr, pg_has_role($1::name, 'MEMBER') AS member`, [role]);
  if (r.member) throw new Error(`${r.usr} is a member of ${role}, whose policies it can reach`);
}
// end snippet

// snippet: typeorm-not-member
// checkNotMemberWith is checkNotMember through a TypeORM DataSource: the
// tenant API runs it once the DataSource is initialized, before it serves
// a request.
async function checkNotMemberWith(dataSource, role) {
  const [r] = await dataSource.query(
    `SELECT current_user::text AS usr, pg_has_role($1::name, 'MEMBER') AS member`, [role]);
  if (r.member) throw new Error(`${r.usr} is a member of ${role}, whose policies it can reach`);
}
// end snippet

// snippet: typeorm-purge
// purgeContacts removes the tenant's contacts with DELETE, which the
// tenant policy filters. repository.clear() would send TRUNCATE, which no
// policy filters: it empties the table for every tenant.
function purgeContacts(dataSource, tenant) {
  return inTenantTransaction(dataSource, tenant, (manager) =>
    manager.createQueryBuilder().delete().from(Contact).execute());
}
// end snippet

// snippet: pg-explain-as-tenant
// explainAsTenant returns the plan of sql as the pool's role gets it,
// scoped to tenant, with the policies in it; the query does not run.
function explainAsTenant(pool, tenant, sql) {
  return inTenantTx(pool, tenant, async (client) => {
    const { rows } = await client.query(`EXPLAIN ${sql}`);
    return rows.map((r) => r['QUERY PLAN']).join('\n');
  });
}
// end snippet

// snippet: typeorm-explain-as-tenant
// explainAsTenantWith is explainAsTenant in inTenantTransaction.
function explainAsTenantWith(dataSource, tenant, sql) {
  return inTenantTransaction(dataSource, tenant, async (manager) => {
    const rows = await manager.query(`EXPLAIN ${sql}`);
    return rows.map((r) => r['QUERY PLAN']).join('\n');
  });
}
// end snippet

// snippet: pg-schema-per-tenant
// withTenantSchema runs fn on one client inside a transaction whose
// search_path is the tenant's schema, then public. set_config(..., true)
// is SET LOCAL: the path ends with COMMIT or ROLLBACK, so the client goes
// back to the pool with the default path.
async function withTenantSchema(pool, schema, fn) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const path = `${client.escapeIdentifier(schema)}, public`;
    await client.query("SELECT set_config('search_path', $1, true)", [path]);
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}
// end snippet

// snippet: pg-pinned-state
// report fills a temp table for one tenant and reads it, holding the
// tenant's numbering lock. The table (ON COMMIT DROP) and the lock
// (pg_advisory_xact_lock) both end with the transaction, on every path:
// nothing of them is left on the pooled connection.
async function report(pool, tenant) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query("SELECT set_config('app.current_tenant', $1, true)", [tenant]);
    await client.query('SELECT pg_advisory_xact_lock(4242, $1::int)', [tenant]);
    await client.query('CREATE TEMP TABLE report (tenant_id int, customer text) ON COMMIT DROP');
    await client.query('INSERT INTO report SELECT tenant_id, customer FROM invoices');
    const { rows } = await client.query('SELECT tenant_id FROM report');
    await client.query('COMMIT');
    return rows.map((r) => r.tenant_id);
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

// listen keeps a Client of its own for LISTEN, connected straight to
// PostgreSQL (not through PgBouncer in transaction mode), and calls
// onInvoice with each notification's payload.
async function listen(directUrl, onInvoice) {
  const listener = new Client({ connectionString: directUrl });
  await listener.connect();
  listener.on('notification', (msg) => onInvoice(msg.payload));
  await listener.query('LISTEN invoices_ready');
  return listener;
}
// end snippet

// snippet: typeorm-schema-per-tenant
// inTenantSchema runs fn(manager) in dataSource.transaction() with the
// tenant's schema, then public, as its search_path. set_config(..., true)
// is SET LOCAL: the path ends with the transaction, so the connection goes
// back to the pool with the default path. escapeIdentifier comes from pg.
function inTenantSchema(dataSource, schema, fn) {
  return dataSource.transaction(async (manager) => {
    const path = `${escapeIdentifier(schema)}, public`;
    await manager.query(`SELECT set_config('search_path', $1, true)`, [path]);
    return fn(manager);
  });
}
// end snippet

// snippet: typeorm-pinned-state
// reportWith fills a temp table for one tenant and reads it, holding the
// tenant's numbering lock, all in dataSource.transaction(): the table (ON
// COMMIT DROP) and the lock (pg_advisory_xact_lock) end with it, and
// nothing of them stays on the pooled connection.
function reportWith(dataSource, tenant) {
  return dataSource.transaction(async (manager) => {
    await manager.query(`SELECT set_config('app.current_tenant', $1, true)`, [tenant]);
    await manager.query('SELECT pg_advisory_xact_lock(4242, $1::int)', [tenant]);
    await manager.query('CREATE TEMP TABLE report (tenant_id int, customer text) ON COMMIT DROP');
    await manager.query('INSERT INTO report SELECT tenant_id, customer FROM invoices');
    const rows = await manager.query('SELECT tenant_id FROM report');
    return rows.map((r) => r.tenant_id);
  });
}
// end snippet

// Contact is the contacts table of the side-channels lesson, as a
// TypeORM entity.
const Contact = new EntitySchema({
  name: 'Contact',
  tableName: 'contacts',
  columns: {
    id: { type: Number, primary: true, generated: true },
    tenantId: { type: Number, name: 'tenant_id' },
    email: { type: String },
  },
});

// InvoiceReport is a TypeORM view entity over invoices, as a reporting
// feature would add it; typeorm-view-sql prints the SQL TypeORM's schema
// builder generates for it.
const InvoiceReport = new EntitySchema({
  name: 'InvoiceReport',
  tableName: 'stackfix_typeorm_report',
  type: 'view',
  expression: 'SELECT id, tenant_id FROM invoices',
  columns: {
    id: { type: Number, primary: true },
    tenantId: { type: Number, name: 'tenant_id' },
  },
});

// snippet: typeorm-composite-fk
// Order and OrderLine map orders and order_lines. Order is unique on
// (tenantId, id), and OrderLine's relation joins on both columns, so the
// foreign key TypeORM generates includes tenant_id.
const Order = new EntitySchema({
  name: 'Order',
  tableName: 'stackfix_orders',
  columns: {
    id: { type: Number, primary: true },
    tenantId: { type: Number, name: 'tenant_id' },
  },
  uniques: [{ columns: ['tenantId', 'id'] }],
});
const OrderLine = new EntitySchema({
  name: 'OrderLine',
  tableName: 'stackfix_order_lines',
  columns: {
    id: { type: Number, primary: true, generated: true },
    tenantId: { type: Number, name: 'tenant_id' },
    orderId: { type: Number, name: 'order_id' },
  },
  relations: {
    order: {
      type: 'many-to-one',
      target: 'Order',
      joinColumn: [
        { name: 'tenant_id', referencedColumnName: 'tenantId' },
        { name: 'order_id', referencedColumnName: 'id' },
      ],
    },
  },
});
// end snippet

// leaveState is a request that leaves session state of every kind on its
// connection; leftState reads what the next request finds.
const leaveState = [
  `SELECT set_config('app.current_tenant', '1', false)`,
  `SET search_path = pg_catalog`,
  `PREPARE leftover AS SELECT 1`,
  `LISTEN leftover`,
  `SELECT pg_advisory_lock(42)`,
];
const leftState = `SELECT current_setting('app.current_tenant', true) AS tenant, current_setting('search_path') AS search_path,
  (SELECT count(*)::int FROM pg_prepared_statements WHERE name = 'leftover') AS prepared,
  (SELECT count(*)::int FROM pg_listening_channels()) AS listening,
  (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS advisory_locks`;

// observe is what a request that forgot to scope reads.
const observe = `SELECT current_setting('app.current_tenant', true) AS seen, current_user::text AS usr,
  coalesce(array_agg(tenant_id ORDER BY id), '{}') AS tenants FROM invoices`;
const tenantsOf = (rows) => rows.map((r) => r.tenant_id);
const own = `SELECT tenant_id FROM invoices ORDER BY id`;

function parseArgs(argv) {
  const args = { tenant: '1' };
  for (let i = 0; i < argv.length; i += 2) args[argv[i].replace(/^--/, '')] = argv[i + 1];
  if (!args.url || !args.check) throw new Error('--url and --check are required');
  return args;
}

async function withPool(url, fn) {
  const pool = new Pool({ connectionString: url, max: 1 });
  try {
    return await fn(pool);
  } finally {
    await pool.end();
  }
}

async function withDataSource(url, fn) {
  const ds = new DataSource({ type: 'postgres', url, extra: { max: 1 }, entities: [Contact] });
  await ds.initialize();
  try {
    return await fn(ds);
  } finally {
    await ds.destroy();
  }
}

// tenantContext runs the wrong-scope and lost-context lessons' requests
// with inRequest (the fix), scoped (a transaction for a given tenant) and
// read (what each request reads in it).
async function tenantContext(inRequest, scoped, read) {
  // Two requests in flight at once: each waits at the gate after its
  // middleware ran, then reads.
  let open;
  const gate = new Promise((ok) => { open = ok; });
  const request = (tenant) => tenantStore.run(tenant, async () => { await gate; return inRequest(read); });
  const [mine, theirs] = await Promise.all([request('1'), request('2'), open()]);
  // The wrong way, for contrast: one module-level variable for every request.
  let current;
  let openWrong;
  const gateWrong = new Promise((ok) => { openWrong = ok; });
  const wrongRequest = async (tenant) => { current = tenant; await gateWrong; return scoped(current, read); };
  const [wrong] = await Promise.all([wrongRequest('1'), wrongRequest('2'), openWrong()]);
  // Work the request started that runs after it answered.
  const later = await new Promise((ok, fail) => tenantStore.run('1', () => {
    setTimeout(() => inRequest(read).then(ok, fail), 0);
  }));
  let refused = false;
  try {
    await inRequest(read);
  } catch (err) {
    refused = /no tenant/.test(err.message);
  }
  return { own: mine, other: theirs, wrong, later, refused };
}

const after = (rows) => ({ seen: rows[0].seen, user: rows[0].usr, tenants: rows[0].tenants });

// errorOf runs a start-up check and answers { error: null } when it
// passes, or { error: message } with the message it refused with.
async function errorOf(check) {
  try {
    await check();
    return { error: null };
  } catch (err) {
    return { error: err.message };
  }
}

const checks = {
  'pg-tenant-tx': (a) => withPool(a.url, async (pool) => ({
    own: tenantsOf(await inTenantTx(pool, a.tenant, async (c) => (await c.query(own)).rows)),
    after: after((await pool.query(observe)).rows),
  })),
  'pg-tenant-context': (a) => withPool(a.url, (pool) => tenantContext(
    (fn) => inRequestTenantTx(pool, fn), (tenant, fn) => inTenantTx(pool, tenant, fn),
    async (c) => tenantsOf((await c.query(own)).rows))),
  'typeorm-tenant-context': (a) => withDataSource(a.url, (ds) => tenantContext(
    (fn) => inRequestTransaction(ds, fn), (tenant, fn) => inTenantTransaction(ds, tenant, fn),
    async (m) => tenantsOf(await m.query(own)))),
  'typeorm-check-forced-rls': (a) => withDataSource(a.url, (ds) => errorOf(() => checkForcedRLSWith(ds))),
  'typeorm-catalog-check': (a) => withDataSource(a.url, (ds) => errorOf(() => catalogCheckWith(ds, a.what, a.sql))),
  'typeorm-explain-as-tenant': (a) => withDataSource(a.url, async (ds) => ({ plan: await explainAsTenantWith(ds, a.tenant, a.sql) })),
  // typeorm-schema-per-tenant reads the tickets of tenant_acme, then,
  // on the same connection, the tickets of a request that sets no schema,
  // then those of tenant_globex.
  'typeorm-schema-per-tenant': (a) => withDataSource(a.url, async (ds) => {
    const tickets = async (q) => (await q.query('SELECT tenant_id FROM tickets ORDER BY id')).map((r) => r.tenant_id);
    const out = { acme: await inTenantSchema(ds, 'tenant_acme', tickets) };
    try {
      out.forgot = await tickets(ds);
    } catch (err) {
      out.forgot = { code: err.code || (err.driverError && err.driverError.code), message: err.message };
    }
    out.globex = await inTenantSchema(ds, 'tenant_globex', tickets);
    return out;
  }),
  // pg-schema-per-tenant is typeorm-schema-per-tenant with node-postgres's
  // Pool and withTenantSchema.
  'pg-schema-per-tenant': (a) => withPool(a.url, async (pool) => {
    const tickets = async (q) => (await q.query('SELECT tenant_id FROM tickets ORDER BY id')).rows.map((r) => r.tenant_id);
    const out = { acme: await withTenantSchema(pool, 'tenant_acme', tickets) };
    try {
      out.forgot = await tickets(pool);
    } catch (err) {
      out.forgot = { code: err.code, message: err.message };
    }
    out.globex = await withTenantSchema(pool, 'tenant_globex', tickets);
    return out;
  }),
  // pg-pinned-state is typeorm-pinned-state with node-postgres's Pool,
  // report and listen: the NOTIFY goes through the pool, listen's Client
  // hears it.
  'pg-pinned-state': (a) => withPool(a.url, async (pool) => {
    const out = { acme: await report(pool, '1'), globex: await report(pool, '2') };
    [out.left] = (await pool.query(`SELECT to_regclass('pg_temp.report') IS NOT NULL AS temp,
      (SELECT count(*)::int FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND d.datname = current_database()) AS locks`)).rows;
    let onInvoice;
    const heard = new Promise((ok) => { onInvoice = ok; });
    const listener = await listen(a.url, onInvoice);
    try {
      await pool.query(`NOTIFY invoices_ready, '1'`);
      out.notified = await heard;
    } finally {
      await listener.end();
    }
    return out;
  }),
  // typeorm-pinned-state runs Acme's report and then Globex's on one
  // connection, reads what they left on it, and sends a NOTIFY through the
  // DataSource that a node-postgres Client of its own listens for.
  'typeorm-pinned-state': (a) => withDataSource(a.url, async (ds) => {
    const out = { acme: await reportWith(ds, '1'), globex: await reportWith(ds, '2') };
    [out.left] = await ds.query(`SELECT to_regclass('pg_temp.report') IS NOT NULL AS temp,
      (SELECT count(*)::int FROM pg_locks l JOIN pg_database d ON d.oid = l.database
        WHERE l.locktype = 'advisory' AND d.datname = current_database()) AS locks`);
    const listener = new pg.Client({ connectionString: a.url });
    await listener.connect();
    try {
      const heard = new Promise((ok) => listener.on('notification', (msg) => ok(msg.payload)));
      await listener.query('LISTEN invoices_ready');
      await ds.query(`NOTIFY invoices_ready, '1'`);
      out.notified = await heard;
    } finally {
      await listener.end();
    }
    return out;
  }),
  'pg-check-forced-rls': (a) => withPool(a.url, (pool) => errorOf(() => checkForcedRLS(pool))),
  'pg-catalog-check': (a) => withPool(a.url, (pool) => errorOf(() => catalogCheck(pool, a.what, a.sql))),
  // pg-search-param and typeorm-search-param search for --term and list
  // the invoices in the same scoped transaction, and read app.is_admin.
  'pg-search-param': (a) => withPool(a.url, (pool) => inTenantTx(pool, a.tenant, async (c) => ({
    found: await searchInvoices(c, a.term),
    own: tenantsOf((await c.query(own)).rows),
    admin: (await c.query(`SELECT current_setting('app.is_admin', true) AS v`)).rows[0].v,
  }))),
  'typeorm-search-param': (a) => withDataSource(a.url, (ds) => inTenantTransaction(ds, a.tenant, async (m) => ({
    found: await searchInvoicesWith(m, a.term),
    own: tenantsOf(await m.query(own)),
    admin: (await m.query(`SELECT current_setting('app.is_admin', true) AS v`))[0].v,
  }))),
  'pg-not-member': (a) => withPool(a.url, (pool) => errorOf(() => checkNotMember(pool, a.role))),
  'typeorm-not-member': (a) => withDataSource(a.url, (ds) => errorOf(() => checkNotMemberWith(ds, a.role))),
  // typeorm-clear and typeorm-purge empty the tenant's contacts: with
  // repository.clear() (the wrong way) or with purgeContacts.
  'typeorm-clear': (a) => withDataSource(a.url, async (ds) => {
    try {
      await inTenantTransaction(ds, a.tenant, (m) => m.getRepository(Contact).clear());
      return { error: null };
    } catch (err) {
      return { error: err.message, code: err.driverError && err.driverError.code };
    }
  }),
  'typeorm-purge': (a) => withDataSource(a.url, async (ds) => ({ deleted: (await purgeContacts(ds, a.tenant)).affected })),
  'typeorm-view-sql': async (a) => {
    const ds = new DataSource({ type: 'postgres', url: a.url, extra: { max: 1 }, entities: [InvoiceReport] });
    await ds.initialize();
    try {
      const log = await ds.driver.createSchemaBuilder().log();
      return { up: log.upQueries.map((q) => q.query) };
    } finally {
      await ds.destroy();
    }
  },
  'typeorm-fk-sql': async (a) => {
    const ds = new DataSource({ type: 'postgres', url: a.url, extra: { max: 1 }, entities: [Order, OrderLine] });
    await ds.initialize();
    try {
      const log = await ds.driver.createSchemaBuilder().log();
      return { up: log.upQueries.map((q) => q.query) };
    } finally {
      await ds.destroy();
    }
  },
  // typeorm-plan-cache is pg-plan-cache through TypeORM's
  // dataSource.transaction() and manager.query().
  'typeorm-plan-cache': (a) => withDataSource(a.url, async (ds) => {
    const read = (tenant) => inTenantTransaction(ds, tenant, async (m) => tenantsOf(await m.query(a.sql)));
    return { acme: await read('1'), globex: await read('2') };
  }),
  'pg-explain-as-tenant': (a) => withPool(a.url, async (pool) => ({ plan: await explainAsTenant(pool, a.tenant, a.sql) })),
  // pg-plan-cache runs sql for tenant 1, then for tenant 2, on one
  // connection, each in its own scoped transaction, as an unnamed
  // statement or (with --name) as a named one, which node-postgres
  // prepares on the connection once and reuses.
  'pg-plan-cache': (a) => withPool(a.url, async (pool) => {
    const q = a.name ? { name: a.name, text: a.sql } : { text: a.sql };
    const read = (tenant) => inTenantTx(pool, tenant, async (c) => tenantsOf((await c.query(q)).rows));
    return { acme: await read('1'), globex: await read('2') };
  }),
  'pg-discard': (a) => withPool(a.url, async (pool) => {
    await withDiscardedClient(pool, async (c) => { for (const q of leaveState) await c.query(q); });
    return { left: (await pool.query(leftState)).rows[0] };
  }),
  'typeorm-discard': (a) => withDataSource(a.url, async (ds) => {
    await withDiscardedRunner(ds, async (r) => { for (const q of leaveState) await r.query(q); });
    return { left: (await ds.query(leftState))[0] };
  }),
  'typeorm-tenant-tx': (a) => withDataSource(a.url, async (ds) => ({
    own: tenantsOf(await inTenantTransaction(ds, a.tenant, (m) => m.query(own))),
    after: after(await ds.query(observe)),
  })),
  'pg-guards': (a) => withPool(a.url, async (pool) => {
    // A code path that scopes for the whole session, inside the guard.
    const ownRows = await withGuardedClient(pool, async (c) => {
      await c.query(`SELECT set_config('app.current_tenant', $1, false)`, [a.tenant]);
      return (await c.query(own)).rows;
    });
    const reset = after((await pool.query(observe)).rows);
    // A connection left scoped by code outside the guard.
    const raw = await pool.connect();
    const { rows: [{ pid: leftPID }] } = await raw.query(`SELECT pg_backend_pid() AS pid, set_config('app.current_tenant', '2', false)`);
    raw.release();
    const guarded = await withGuardedClient(pool, async (c) => ({
      pid: (await c.query('SELECT pg_backend_pid() AS pid')).rows[0].pid,
      ...after((await c.query(observe)).rows),
    }));
    return { own: tenantsOf(ownRows), after: reset, refused: guarded.pid !== leftPID, guarded };
  }),
  'typeorm-guards': (a) => withDataSource(a.url, async (ds) => {
    const ownRows = await withGuardedRunner(ds, async (r) => {
      await r.query(`SELECT set_config('app.current_tenant', $1, false)`, [a.tenant]);
      return r.query(own);
    });
    const reset = after(await ds.query(observe));
    await ds.query(`SELECT set_config('app.current_tenant', '2', false)`);
    let refused = false;
    try {
      await withGuardedRunner(ds, (r) => r.query(observe));
    } catch (err) {
      refused = /still scoped to tenant 2/.test(err.message);
    }
    return { own: tenantsOf(ownRows), after: reset, refused };
  }),
  'pg-tenant-role': (a) => withPool(a.url, async (pool) => {
    const inside = await inTenantRole(pool, a.role, async (c) => after((await c.query(observe)).rows));
    return { own: inside.tenants, inside_user: inside.user, after: after((await pool.query(observe)).rows) };
  }),
  'typeorm-tenant-role': (a) => withDataSource(a.url, async (ds) => {
    const inside = await inTenantRoleTransaction(ds, a.role, async (m) => after(await m.query(observe)));
    return { own: inside.tenants, inside_user: inside.user, after: after(await ds.query(observe)) };
  }),
};

// serve answers checks one after the other, one a line: each line on
// standard input is a JSON object with the flags of a check as its fields
// ({"check": NAME, "url": URL, ...}), and each answer is one JSON line on
// standard output, with "failure" set when the check threw. Tests start one
// process for all their checks: loading TypeORM takes longer than most
// checks.
async function serve() {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    let reply;
    try {
      reply = await runCheck({ tenant: '1', ...JSON.parse(line) });
    } catch (err) {
      reply = { failure: err.message };
    }
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  }
}

async function runCheck(args) {
  const check = checks[args.check];
  if (!check) throw new Error(`--check ${args.check}: want one of ${Object.keys(checks).join(', ')}`);
  return { check: args.check, ...(await check(args)) };
}

async function main() {
  if (process.argv[2] === '--serve') return serve();
  console.log(JSON.stringify(await runCheck(parseArgs(process.argv.slice(2)))));
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
