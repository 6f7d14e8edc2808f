// Runs node-postgres (a pool of 2) against the connection URL in argv[2] and
// prints what it got as one JSON object: the results of a fixed list of
// queries, and the seed's pattern (a session set_config, then another
// tenant's request on the same pooled connection that forgets it), with the
// backend PIDs the app read itself.
const { Pool } = require('pg');

async function main() {
  const pool = new Pool({ connectionString: process.argv[2], max: 2 });
  const results = [];
  const q = async (sql, params) => {
    try {
      const r = await pool.query(sql, params);
      results.push({ command: r.command, rows: r.rows, fields: r.fields.map((f) => f.name) });
    } catch (e) {
      results.push({ error: e.code });
    }
  };
  await q('SELECT count(*)::int AS n FROM items');
  await q('SELECT $1::int + 1 AS n, $2::text AS t', [41, 'x']);
  await q('SELECT 1/0');
  await q("SET app.current_tenant = $1", ['1']); // 42601: SET takes no parameters
  await q('SELECT id, tenant_id, name FROM items WHERE id > $1 ORDER BY id', [0]);
  await q({ text: 'SELECT id FROM items ORDER BY id', name: 'named', values: [] });
  await q({ text: 'SELECT id FROM items ORDER BY id', name: 'named', values: [] });

  const tx = await pool.connect();
  try {
    await tx.query('BEGIN');
    await tx.query("SELECT set_config('app.current_tenant', $1, true)", ['2']);
    const r = await tx.query("SELECT id, tenant_id FROM items /* tenant='2' */ ORDER BY id");
    results.push({ tx: r.rows });
    await tx.query('COMMIT');
  } finally {
    tx.release();
  }

  // The seed's pattern: request A sets the session setting, request B
  // (tenant 2) forgets to, and gets the same pooled connection.
  const a = await pool.connect();
  await a.query("SELECT set_config('app.current_tenant', $1, false)", ['1']);
  const ra = await a.query("SELECT pg_backend_pid() AS pid, id, tenant_id FROM items /* tenant='1' */ ORDER BY id");
  a.release();
  const b = await pool.connect();
  const rb = await b.query("SELECT pg_backend_pid() AS pid, id, tenant_id FROM items /* tenant='2' */ ORDER BY id");
  b.release();
  await pool.end();
  const strip = (rows) => rows.map(({ pid, ...rest }) => rest);
  console.log(JSON.stringify({
    results,
    seed: { a: strip(ra.rows), b: strip(rb.rows) },
    pids: { a: ra.rows[0] && ra.rows[0].pid, b: rb.rows[0] && rb.rows[0].pid },
  }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
