"""Lost wake-up of a fan-out parent (SQL 0.6.0, fixed in 0.6.1), found by the bench's fan-out.

    BENCH_PGPORT=55470 python repro_fanout_wakeup.py   # a scratch database on the bench cluster

A parent suspends on two children; two orchestrators claim one child each and complete them
in two concurrent transactions. Each completion's trigger (`_on_finished`) sees the other
child's step still waiting, so neither wakes the parent: it stays `waiting = 'children'`
with run_at infinity although both child steps are done. Prints the parent's state and
exits 1 while the bug is there, 0 once the parent is woken.
"""

from __future__ import annotations

import json
import sys
import threading
import uuid

import psycopg
from common import url

DB = "bench_repro_wakeup"


def main() -> int:
    with psycopg.connect(url("postgres"), autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB}")
        conn.execute(f"create database {DB}")
    a = psycopg.connect(url(DB), autocommit=True)
    a.execute("create extension pgconductor")
    a.execute("select pgconductor.register_task('p', 'q')")
    a.execute("select pgconductor.register_task('c', 'q')")
    parent = a.execute("select pgconductor.invoke('p', '{}'::jsonb, 'q')").fetchone()
    o1, o2 = uuid.uuid4(), uuid.uuid4()
    claim = "select id, attempt from pgconductor.get_executions(array[%s], %s, 1, 'q')"
    p = a.execute(claim, ("p", o1)).fetchone()
    kids = [
        {"key": f"k/{i}", "seq": i, "task": "c", "payload": {}, "queue": "q", "priority": 0}
        for i in range(2)
    ]
    plan = json.dumps({"children": {"create": kids, "deadline": None}})
    a.execute(
        "select * from pgconductor.return_executions(%s, array[%s]::uuid[], array[%s]::int[],"
        " array['suspend'], null, array[%s::jsonb])",
        (o1, p[0], p[1], plan),
    )
    k1, k2 = a.execute(claim, ("c", o1)).fetchone(), a.execute(claim, ("c", o2)).fetchone()
    done = (
        "select * from pgconductor.return_executions(%s, array[%s]::uuid[], array[%s]::int[],"
        " array['completed'], null, array['1'::jsonb])"
    )
    t1, t2 = psycopg.connect(url(DB)), psycopg.connect(url(DB))
    t1.execute(done, (o1, k1[0], k1[1]))
    # From 0.6.1 the second completion waits for the first (the parent's row lock): run it
    # in a thread, then commit the first.
    second = threading.Thread(target=lambda: (t2.execute(done, (o2, k2[0], k2[1])), t2.commit()))
    second.start()
    second.join(timeout=1.0)
    t1.commit()
    second.join()
    steps = a.execute("select state, count(*) from pgconductor.steps group by 1").fetchall()
    row = a.execute(
        "select waiting, run_at::text from pgconductor.executions where id = %s", parent
    ).fetchone()
    print(f"child steps {steps}; parent waiting={row[0] if row else None} run_at={row and row[1]}")
    for c in (t1, t2, a):
        c.close()
    with psycopg.connect(url("postgres"), autocommit=True) as conn:
        conn.execute(f"drop database {DB}")
    return 1 if row and row[0] == "children" else 0


if __name__ == "__main__":
    sys.exit(main())
