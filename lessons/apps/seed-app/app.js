// app.js is the seed's tenant middleware, run for real: one shared TypeORM
// DataSource (a pool of two connections), AsyncLocalStorage holding only
// the tenant id, and a repository find() per request. Three modes:
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
// Every query carries a sqlcommenter tag /* tenant='N' */ so that rlslab
// can tell which tenant each statement was for.
//
// Usage:
//   node app.js --url postgres://USER:PASSWORD@HOST:PORT/DB --mode session-set [--port 3000]
//   node app.js --url ... --mode session-set --drive 1,2,0,2
//
// --drive sends the requests to the app itself, all at once (tenant 0 is a
// request that forgets to scope: the "forgot" pattern), prints one JSON
// line per response and exits.
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

function parseArgs(argv) {
  const args = { mode: 'session-set', port: 0 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    args[k] = argv[i + 1];
  }
  if (!args.url) throw new Error('--url is required');
  if (!['set-param', 'session-set', 'tx-local'].includes(args.mode)) {
    throw new Error(`--mode ${args.mode}: want set-param, session-set or tx-local`);
  }
  return args;
}

// tenantStore holds the request's tenant id, and nothing else.
const tenantStore = new AsyncLocalStorage();

// tag is the one-line sqlcommenter middleware: every query says its tenant.
const tag = () => `tenant='${tenantStore.getStore() ?? ''}'`;

async function invoices(ds, mode) {
  const tenant = tenantStore.getStore();
  const repo = ds.getRepository(Invoice);
  const pidOf = async (q) => (await q.query(`/* ${tag()} */ SELECT pg_backend_pid() AS pid`))[0].pid;
  if (tenant === '0') {
    // A request that forgets to scope: whatever its connection holds.
    return { pid: await pidOf(ds), rows: await repo.find({ comment: tag(), order: { id: 'ASC' } }) };
  }
  switch (mode) {
    case 'set-param':
      await ds.query(`/* ${tag()} */ SET app.current_tenant = $1`, [tenant]);
      return { pid: await pidOf(ds), rows: await repo.find({ comment: tag(), order: { id: 'ASC' } }) };
    case 'session-set':
      await ds.query(`/* ${tag()} */ SELECT set_config('app.current_tenant', $1, false)`, [tenant]);
      return { pid: await pidOf(ds), rows: await repo.find({ comment: tag(), order: { id: 'ASC' } }) };
    case 'tx-local':
      return ds.transaction(async (m) => {
        await m.query(`/* ${tag()} */ SELECT set_config('app.current_tenant', $1, true)`, [tenant]);
        return { pid: await pidOf(m), rows: await m.getRepository(Invoice).find({ comment: tag(), order: { id: 'ASC' } }) };
      });
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const ds = new DataSource({ type: 'postgres', url: args.url, entities: [Invoice], extra: { max: 2 }, ssl: false });
  await ds.initialize();
  const server = http.createServer((req, res) => {
    const tenant = String(req.headers['x-tenant'] ?? '');
    tenantStore.run(tenant, async () => {
      try {
        const out = await invoices(ds, args.mode);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ tenant, pid: out.pid, tenants: out.rows.map((r) => r.tenant_id), rows: out.rows.length }));
      } catch (err) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ tenant, error: err.message, code: err.code }));
      }
    });
  });
  await new Promise((ok) => server.listen(Number(args.port), '127.0.0.1', ok));
  const { port } = server.address();
  if (!args.drive) {
    console.log(`seed app (${args.mode}) listening on http://127.0.0.1:${port}`);
    return;
  }
  const get = (tenant) => new Promise((ok, fail) => {
    http.get({ host: '127.0.0.1', port, path: '/invoices', headers: { 'x-tenant': tenant } }, (res) => {
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => ok(body));
    }).on('error', fail);
  });
  // The requests go out together, as a busy service's would; each line is
  // printed as its answer comes back.
  await Promise.all(args.drive.split(',').map(async (t) => console.log(await get(t))));
  server.close();
  await ds.destroy();
}

main().catch((err) => {
  console.error(err.message);
  process.exit(1);
});
