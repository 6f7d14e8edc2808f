// The pinned-state fixes of lesson 22 with node-postgres, run against a lab
// by lessons/fixes_test.go: node pinned-state.js URL. On a pool of one
// connection, Acme's report and then Globex's; a listener on a client of
// its own hears a notification sent through the pool. It prints what each
// got as JSON.
const { Client, Pool } = require('pg');

// fix:begin
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
// fix:end

(async () => {
  const url = process.argv[2];
  const pool = new Pool({ connectionString: url, max: 1 });
  const out = {};
  out.acme = await report(pool, '1');
  out.globex = await report(pool, '2');
  const left = await pool.query(`SELECT to_regclass('pg_temp.report') IS NOT NULL AS temp,
    (SELECT count(*)::int FROM pg_locks l JOIN pg_database d ON d.oid = l.database
      WHERE l.locktype = 'advisory' AND d.datname = current_database()) AS locks`);
  out.left = left.rows[0];
  let heard;
  const got = new Promise((resolve) => { heard = resolve; });
  const listener = await listen(url, heard);
  await pool.query("NOTIFY invoices_ready, '1'");
  out.notified = await got;
  await listener.end();
  await pool.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
