// The schema-per-tenant fix of lesson 21 with node-postgres, run against a
// lab by lessons/fixes_test.go: node schema-per-tenant.js URL. On a pool of
// one connection, Acme's request, a request that sets no schema, and
// Globex's request; it prints what each got as JSON.
const { Pool } = require('pg');

// fix:begin
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
// fix:end

const tenantIds = async (q) => (await q.query('SELECT tenant_id FROM tickets ORDER BY id')).rows.map((r) => r.tenant_id);

(async () => {
  const pool = new Pool({ connectionString: process.argv[2], max: 1 });
  const out = {};
  out.acme = await withTenantSchema(pool, 'tenant_acme', tenantIds);
  try {
    out.forgot = await tenantIds(pool);
  } catch (err) {
    out.forgot = { code: err.code, message: err.message };
  }
  out.globex = await withTenantSchema(pool, 'tenant_globex', tenantIds);
  await pool.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
