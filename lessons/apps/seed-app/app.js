// app.js is the seed's tenant middleware, run for real: one shared TypeORM
// DataSource (a pool of two connections), AsyncLocalStorage holding only
// the tenant id, and a repository find() per request. The modes:
//
//   set-param    what the seed wrote: SET app.current_tenant = $1, then
//                find() — PostgreSQL refuses the bind parameter (42601)
//   session-set  the usual workaround: set_config(..., false) as its own
//                call, then find() — two checkouts of the pool, and the
//                setting outlives the request on that connection
//   tx-local     the fix: both calls in dataSource.transaction() with
//                set_config(..., true), so they share one connection and
//                the setting ends with the transaction
//
// and those of the orm-transactions lesson:
//
//   datasource-query     set_config(..., true) through dataSource.query,
//                        then find(): two implicit transactions, so the
//                        setting is gone before find() runs
//   runner-autocommit    both on one QueryRunner after connect(), without
//                        startTransaction(): one connection, still two
//                        implicit transactions
//   runner-transaction   both on a QueryRunner between startTransaction()
//                        and commitTransaction()
//   request-transaction  a transaction opened when the request starts and
//                        committed when the response is sent; in between
//                        the handler awaits another service
//   short-transaction    the transaction around set_config and find() only;
//                        the other service is awaited after the commit
//
// Every query carries a sqlcommenter tag /* tenant='N' */ so that rlslab
// can tell which tenant each statement was for.
//
// Usage:
//   node app.js --url postgres://USER:PASSWORD@HOST:PORT/DB --mode session-set [--port 3000]
//   node app.js --url ... --mode session-set --drive 1,2,0,2
//   node app.js --url ... --mode datasource-query --drive 1,2:session-set,1 --order serial
//   node app.js --url ... --mode request-transaction --drive 1,2,3 --service 2000
//
// --drive sends the requests to the app itself and prints one JSON line per
// response, then exits. Tenant 0 is a request that forgets to scope (the
// "forgot" pattern); T:MODE runs that one request in another mode (an older
// route of the same service). --order together (the default) sends them
// all at once, --order serial one after the other. --service is how long
// the other service takes, in milliseconds (default 500), or "stdin": each
// request then waits until a line arrives on standard input. Each request
// that starts waiting on the other service prints {"event":"waiting",...}
// on standard error.
'use strict';

require('reflect-metadata');
const http = require('node:http');
const { AsyncLocalStorage } = require('node:async_hooks');
const { DataSource, EntitySchema } = require('typeorm');

const Invoice = new EntitySchema({
  name: 'Invoice',
  tableName: 'invoices',
  columns: {
    id: { type: Number, primary: true, generated: true },
    tenant_id: { type: Number },
    customer: { type: String },
    amount: { type: 'numeric' },
  },
});

const MODES = ['set-param', 'session-set', 'tx-local', 'datasource-query', 'runner-autocommit',
  'runner-transaction', 'request-transaction', 'short-transaction'];

function parseArgs(argv) {
  const args = { mode: 'session-set', port: 0, order: 'together', service: '500' };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    args[k] = argv[i + 1];
  }
  if (!args.url) throw new Error('--url is required');
  if (!MODES.includes(args.mode)) {
    throw new Error(`--mode ${args.mode}: want one of ${MODES.join(', ')}`);
  }
  if (!['together', 'serial'].includes(args.order)) {
    throw new Error(`--order ${args.order}: want together or serial`);
  }
  if (args.service !== 'stdin' && !/^[0-9]+$/.test(args.service)) {
    throw new Error(`--service ${args.service}: want milliseconds or stdin`);
  }
  return args;
}

// tenantStore holds the request's tenant id, and nothing else.
const tenantStore = new AsyncLocalStorage();

// tag is the one-line sqlcommenter middleware: every query says its tenant.
const tag = () => `tenant='${tenantStore.getStore() ?? ''}'`;

// otherService stands for a call to another service (a payment provider,
// an HTTP API) that a handler awaits before it answers: a timer, or a line
// on standard input.
function otherService(spec) {
  if (spec !== 'stdin') return new Promise((ok) => setTimeout(ok, Number(spec)));
  if (!otherService.line) {
    otherService.line = new Promise((ok) => process.stdin.once('data', ok));
  }
  return otherService.line;
}

async function invoices(ds, mode, service) {
  const tenant = tenantStore.getStore();
  const repo = ds.getRepository(Invoice);
  const pidOf = async (q) => (await q.query(`/* ${tag()} */ SELECT pg_backend_pid() AS pid`))[0].pid;
  const find = (r) => r.find({ comment: tag(), order: { id: 'ASC' } });
  const setLocal = `/* ${tag()} */ SELECT set_config('app.current_tenant', $1, true)`;
  const waiting = () => console.error(JSON.stringify({ event: 'waiting', tenant, mode }));
  if (tenant === '0') {
    // A request that forgets to scope: whatever its connection holds.
    return { pid: await pidOf(ds), rows: await find(repo) };
  }
  switch (mode) {
    case 'set-param':
      await ds.query(`/* ${tag()} */ SET app.current_tenant = $1`, [tenant]);
      return { pid: await pidOf(ds), rows: await find(repo) };
    case 'session-set':
      await ds.query(`/* ${tag()} */ SELECT set_config('app.current_tenant', $1, false)`, [tenant]);
      return { pid: await pidOf(ds), rows: await find(repo) };
    case 'tx-local':
      return ds.transaction(async (m) => {
        await m.query(setLocal, [tenant]);
        return { pid: await pidOf(m), rows: await find(m.getRepository(Invoice)) };
      });
    case 'datasource-query':
      // Each call takes a pooled connection and runs in an implicit
      // transaction of its own.
      await ds.query(setLocal, [tenant]);
      return { pid: await pidOf(ds), rows: await find(repo) };
    case 'runner-autocommit':
    case 'runner-transaction': {
      const qr = ds.createQueryRunner();
      await qr.connect();
      try {
        if (mode === 'runner-transaction') await qr.startTransaction();
        await qr.query(setLocal, [tenant]);
        const out = { pid: await pidOf(qr), rows: await find(qr.manager.getRepository(Invoice)) };
        if (mode === 'runner-transaction') await qr.commitTransaction();
        return out;
      } catch (err) {
        if (qr.isTransactionActive) await qr.rollbackTransaction();
        throw err;
      } finally {
        await qr.release();
      }
    }
    case 'request-transaction': {
      // What a request-scoped transaction middleware does: BEGIN when the
      // request starts, COMMIT when the response is sent.
      const qr = ds.createQueryRunner();
      await qr.connect();
      try {
        await qr.startTransaction();
        await qr.query(setLocal, [tenant]);
        const out = { pid: await pidOf(qr), rows: await find(qr.manager.getRepository(Invoice)) };
        waiting();
        await otherService(service);
        await qr.commitTransaction();
        return out;
      } catch (err) {
        if (qr.isTransactionActive) await qr.rollbackTransaction();
        throw err;
      } finally {
        await qr.release();
      }
    }
    case 'short-transaction': {
      const out = await ds.transaction(async (m) => {
        await m.query(setLocal, [tenant]);
        return { pid: await pidOf(m), rows: await find(m.getRepository(Invoice)) };
      });
      waiting();
      await otherService(service);
      return out;
    }
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // application_name is the mode: rlslab records the app's session under
  // the your-app scenario's variant of that name, when it has one.
  const ds = new DataSource({
    type: 'postgres', url: args.url, entities: [Invoice], extra: { max: 2 }, ssl: false, applicationName: args.mode,
  });
  await ds.initialize();
  const server = http.createServer((req, res) => {
    const tenant = String(req.headers['x-tenant'] ?? '');
    const mode = MODES.includes(req.headers['x-mode']) ? req.headers['x-mode'] : args.mode;
    tenantStore.run(tenant, async () => {
      try {
        const out = await invoices(ds, mode, args.service);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ tenant, mode, pid: out.pid, tenants: out.rows.map((r) => r.tenant_id), rows: out.rows.length }));
      } catch (err) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ tenant, mode, error: err.message, code: err.code }));
      }
    });
  });
  await new Promise((ok) => server.listen(Number(args.port), '127.0.0.1', ok));
  const { port } = server.address();
  if (!args.drive) {
    console.log(`seed app (${args.mode}) listening on http://127.0.0.1:${port}`);
    return;
  }
  const get = (entry) => new Promise((ok, fail) => {
    const [tenant, mode] = entry.split(':');
    const headers = { 'x-tenant': tenant };
    if (mode) headers['x-mode'] = mode;
    http.get({ host: '127.0.0.1', port, path: '/invoices', headers }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => ok(body));
    }).on('error', fail);
  });
  const entries = args.drive.split(',');
  if (args.order === 'serial') {
    for (const e of entries) console.log(await get(e));
  } else {
    // The requests go out together, as a busy service's would; each line
    // is printed as its answer comes back.
    await Promise.all(entries.map(async (e) => console.log(await get(e))));
  }
  if (args.service === 'stdin') process.stdin.pause();
  server.close();
  await ds.destroy();
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
