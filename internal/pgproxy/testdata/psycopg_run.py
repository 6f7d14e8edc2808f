"""Runs psycopg 3 against the connection URL in argv[1] and prints what it got
as JSON: plain and parameterised queries, an error, statements prepared
after psycopg's threshold, a pipeline with an error in the middle, a
transaction with SET LOCAL, and COPY in and out."""
import json
import sys

import psycopg


def main():
    out = []
    with psycopg.connect(sys.argv[1], autocommit=True) as conn:
        conn.prepare_threshold = 2

        def q(sql, params=None):
            try:
                cur = conn.execute(sql, params)
                out.append({"rows": [list(map(str, r)) for r in cur.fetchall()] if cur.description else None,
                            "status": cur.statusmessage})
            except psycopg.Error as e:
                out.append({"error": e.sqlstate})

        q("SELECT count(*) FROM items")
        q("SELECT %s::int + 1, %s::text", (41, "x"))
        q("SELECT 1/0")
        for _ in range(4):
            q("SELECT id, tenant_id FROM items WHERE id > %s ORDER BY id", (0,))
        q("SELECT set_config('app.current_tenant', %s, false)", ("3",))
        q("SELECT id, tenant_id FROM items ORDER BY id")
        with conn.pipeline() as p:
            c1 = conn.execute("SELECT 1")
            try:
                conn.execute("SELECT 1/0")
                p.sync()
            except psycopg.Error as e:
                out.append({"pipeline_error": e.sqlstate})
            c3 = conn.execute("SELECT 3")
        out.append({"pipeline": [c1.fetchall()[0][0], c3.fetchall()[0][0]]})
        with conn.transaction():
            conn.execute("SET LOCAL app.current_tenant = '2'")
            out.append({"tx": [list(map(str, r)) for r in conn.execute("SELECT id, tenant_id FROM items ORDER BY id")]})
        q("SELECT current_setting('app.current_tenant')")
        with conn.cursor() as cur:
            with cur.copy("COPY notes (tenant_id, body) FROM STDIN") as cp:
                cp.write_row((1, "py one"))
                cp.write_row((None, "py null"))
            rows = []
            with cur.copy("COPY (SELECT * FROM notes ORDER BY body) TO STDOUT") as cp:
                for row in cp.rows():
                    rows.append(list(row))
            out.append({"copy": rows})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
