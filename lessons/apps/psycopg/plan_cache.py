"""Runs a query nine times on one psycopg 3 connection, for Acme, Globex and
Initech in turn, each time in its own transaction scoped with a
transaction-local tenant setting, once with psycopg's default Cursor
(server-side binding) and once with ClientCursor (client-side binding).
rlslab's tests (lessons/stackfix) run it against a lab for the stale-plan
lesson: python3 plan_cache.py URL SQL. It prints, as JSON, the tenant_id
column of every execution's rows for each cursor class.
"""
import json
import sys

import psycopg


def run(url, sql, cursor_factory):
    """Returns the tenant ids each of nine executions of sql read."""
    out = []
    with psycopg.connect(url, cursor_factory=cursor_factory) as conn:
        for i in range(9):
            tenant = str(1 + i % 3)
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SELECT set_config('app.current_tenant', %s, true)", [tenant])
                cur.execute(sql)
                out.append([row[0] for row in cur.fetchall()])
    return out


if __name__ == "__main__":
    url, sql = sys.argv[1], sys.argv[2]
    print(json.dumps({
        "cursor": run(url, sql, psycopg.Cursor),
        "client_cursor": run(url, sql, psycopg.ClientCursor),
    }))
