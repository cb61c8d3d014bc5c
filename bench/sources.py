"""Section `sources` of bench.py: what schedules and event sources (issue 12) cost.

All on the pgconductor system's database (task `noop`, queue `bench`); nothing runs the
executions they make (each measurement starts from an empty queue).

- tick cost: `pgconductor.tick()` with 100 schedules due every second, alone and beside
  10,000 schedules that are not due (a yearly cron): the tick reads the due ones only, so the
  two should cost about the same (ratio ~1). Median of the ticks, one per whole second.
- emit fan-out: `emit_event` in autocommit from one connection, to an event name with 3
  subscriptions (each emit makes 3 executions) and to one with none: events/s and the ratio.
- table trigger: 10,000 rows into a user table, without and with `subscribe_table` (insert,
  two columns chosen), as one INSERT ... SELECT and as 10,000 single-row INSERTs in one
  transaction; the time with the trigger over the time without (target <= 3x).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import psycopg
import systems
from common import url

SCHEDULES_NOT_DUE = 10_000
SCHEDULES_DUE = 100
TICKS = 5
TRIGGER_ROWS = 10_000
TARGET_TRIGGER = 3.0


def _b() -> Any:
    import bench

    return bench


def _conn(db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url(db), autocommit=True)


def _clear(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SELECT pgconductor.unschedule(name) FROM pgconductor.schedules()")
    conn.execute("SELECT pgconductor.unsubscribe(task_key, event) FROM pgconductor.subscriptions()")
    conn.execute(
        "SELECT pgconductor.unsubscribe_table(task_key, table_name::text)"
        " FROM pgconductor.table_subscriptions()"
    )
    conn.execute("DROP TABLE IF EXISTS public.bench_orders")


def _ticks(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """TICKS ticks, each just after a whole second: their times (ms) and occurrences made."""
    times: list[float] = []
    made: list[int] = []
    conn.execute("SELECT pgconductor.tick(100000)")  # what was due before the first second
    for _ in range(TICKS):
        time.sleep(1.0 - (time.time() % 1.0) + 0.05)
        t = time.perf_counter()
        row = conn.execute("SELECT pgconductor.tick(100000)").fetchone()
        times.append((time.perf_counter() - t) * 1000)
        made.append(int(row[0]) if row else 0)
    return {"ms": times, "median_ms": statistics.median(times), "made": made}


def tick_cost(db: str) -> dict[str, Any]:
    """The tick with SCHEDULES_DUE every-second schedules, alone and beside the others."""
    b = _b()
    out: dict[str, Any] = {}
    with _conn(db) as conn:
        _clear(conn)
        conn.execute(
            "SELECT pgconductor.schedule('due-' || g, 'noop', '* * * * * *', p_queue => 'bench')"
            " FROM generate_series(1, %s) AS g",
            (SCHEDULES_DUE,),
        )
        out["alone"] = _ticks(conn)
        conn.execute(
            "INSERT INTO pgconductor.schedules (name, task_key, cron, parsed, next_run_at, queue)"
            " SELECT 'idle-' || g, 'noop', '0 0 1 1 *', pgconductor._cron_parse('0 0 1 1 *'),"
            "        pgconductor._cron_next(pgconductor._cron_parse('0 0 1 1 *'), 'UTC', now()),"
            "        'bench'"
            " FROM generate_series(1, %s) AS g",
            (SCHEDULES_NOT_DUE,),
        )
        conn.execute("ANALYZE pgconductor.schedules")
        out["beside"] = _ticks(conn)
        _clear(conn)
    out["ratio"] = out["beside"]["median_ms"] / out["alone"]["median_ms"]
    b.log(
        f"RESULT sources tick: {SCHEDULES_DUE} due: {out['alone']['median_ms']:.2f} ms alone,"
        f" {out['beside']['median_ms']:.2f} ms beside {SCHEDULES_NOT_DUE:,} not due"
        f" (x{out['ratio']:.2f}); made per tick {out['beside']['made']}"
    )
    return out


def _emit_rate(conn: psycopg.Connection[Any], name: str, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        conn.execute("SELECT pgconductor.emit_event(%s, %s::jsonb)", (name, f'{{"n": {i}}}'))
    return n / (time.perf_counter() - t)


def fan_out(db: str, n: int) -> dict[str, Any]:
    """emit_event to 3 subscribers vs to none: events/s."""
    b = _b()
    with _conn(db) as conn:
        _clear(conn)
        for task in ("noop", "noop-b", "noop-c"):
            conn.execute(
                "SELECT pgconductor.subscribe(%s, 'bench.paid', p_queue => 'bench')", (task,)
            )
        _emit_rate(conn, "bench.warm", 200)
        none = _emit_rate(conn, "bench.nobody", n)
        three = _emit_rate(conn, "bench.paid", n)
        made = conn.execute(
            "SELECT count(*) FROM pgconductor.executions WHERE dedupe_key LIKE 'event:%%'"
        ).fetchone()
        _clear(conn)
    out = {"n": n, "none": none, "three": three, "ratio": three / none,
           "made": int(made[0]) if made else 0}  # fmt: skip
    b.log(
        f"RESULT sources emit: {three:.0f} events/s with 3 subscribers, {none:.0f} with none"
        f" (x{out['ratio']:.2f}); executions made {out['made']:,} (want {3 * n:,})"
    )
    return out


def _insert_times(conn: psycopg.Connection[Any]) -> dict[str, float]:
    """Seconds for TRIGGER_ROWS rows as one INSERT ... SELECT, then as single-row INSERTs."""
    conn.execute("TRUNCATE public.bench_orders")
    t = time.perf_counter()
    conn.execute(
        "INSERT INTO public.bench_orders (id, status, note)"
        " SELECT g, 'new', 'note ' || g FROM generate_series(1, %s) AS g",
        (TRIGGER_ROWS,),
    )
    bulk = time.perf_counter() - t
    conn.execute("TRUNCATE public.bench_orders")
    t = time.perf_counter()
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.bench_orders (id, status, note) VALUES (%s, 'new', 'note')",
            [(i,) for i in range(TRIGGER_ROWS)],
        )
    rows = time.perf_counter() - t
    return {"bulk_s": bulk, "rows_s": rows}


def trigger_cost(db: str) -> dict[str, Any]:
    """TRIGGER_ROWS rows without and with a table subscription."""
    b = _b()
    with _conn(db) as conn:
        _clear(conn)
        conn.execute(
            "CREATE TABLE public.bench_orders (id bigint PRIMARY KEY, status text, note text)"
        )
        _insert_times(conn)  # warm
        without = _insert_times(conn)
        conn.execute(
            "SELECT pgconductor.subscribe_table('noop', 'public.bench_orders', '{insert}',"
            " '{id,status}', p_queue => 'bench')"
        )
        with_trigger = _insert_times(conn)
        _clear(conn)
    out = {
        "rows": TRIGGER_ROWS,
        "without": without,
        "with": with_trigger,
        "bulk_ratio": with_trigger["bulk_s"] / without["bulk_s"],
        "rows_ratio": with_trigger["rows_s"] / without["rows_s"],
    }
    b.log(
        f"RESULT sources trigger: {TRIGGER_ROWS:,} rows, one INSERT: {without['bulk_s']:.3f}s"
        f" -> {with_trigger['bulk_s']:.3f}s (x{out['bulk_ratio']:.1f}); single-row INSERTs:"
        f" {without['rows_s']:.3f}s -> {with_trigger['rows_s']:.3f}s (x{out['rows_ratio']:.1f})"
    )
    return out


def section(res: Any, m: dict[str, Any]) -> None:
    """Tick cost, fan-out and trigger cost; put them under "sources"; empty the queue after."""
    pgc = systems.get("pgconductor")
    asyncio.run(pgc.reset())
    out: dict[str, Any] = {}
    try:
        out["tick"] = tick_cost(pgc.db)
        res.put("sources", out)
        asyncio.run(pgc.reset())
        out["emit"] = fan_out(pgc.db, m.get("sources_emits", 2000))
        res.put("sources", out)
        asyncio.run(pgc.reset())
        out["trigger"] = trigger_cost(pgc.db)
        res.put("sources", out)
    finally:
        asyncio.run(pgc.reset())


# ------------------------------------------------------------------------------------------
# report


def rows(d: dict[str, Any], f: Any) -> list[list[str]]:
    """Summary rows: tick cost ratio, fan-out rate, trigger cost ratios (`f` formats)."""
    src = d.get("sources") or {}
    out: list[list[str]] = []
    tick = src.get("tick")
    if tick:
        out.append(
            [
                f"sources: tick() with {SCHEDULES_DUE} due, beside {SCHEDULES_NOT_DUE:,} not due"
                " vs alone (ms)",
                f"{tick['beside']['median_ms']:.2f}",
                f"{tick['alone']['median_ms']:.2f} (alone)",
                f"{tick['ratio']:.2f}",
                "O(due): ~1",
                "met" if tick["ratio"] < 1.5 else "missed",
            ]
        )
    emit = src.get("emit")
    if emit:
        out.append(
            [
                "sources: emit_event with 3 subscribers (events/s)",
                f(emit["three"]),
                f"{f(emit['none'])} (no subscriber)",
                f"{emit['ratio']:.2f}",
                "",
                "",
            ]
        )
    trig = src.get("trigger")
    if trig:
        for key, what in (("rows", "single-row INSERTs"), ("bulk", "one INSERT ... SELECT")):
            r = trig[f"{key}_ratio"]
            out.append(
                [
                    f"sources: {trig['rows']:,} rows into a subscribed table, {what} (s)",
                    f"{trig['with'][f'{key}_s']:.3f}",
                    f"{trig['without'][f'{key}_s']:.3f} (no trigger)",
                    f"{r:.1f}",
                    f"≤ {TARGET_TRIGGER:.0f}× without",  # noqa: RUF001 - report text
                    "met" if r <= TARGET_TRIGGER else "missed",
                ]
            )
    return out


def md(d: dict[str, Any], f: Any) -> list[str]:
    """The report's section on schedules and event sources."""
    src = d.get("sources") or {}
    if not src:
        return []
    lines = ["## Schedules and event sources (issue 12)\n", (__doc__ or "").split("\n\n", 1)[1]]
    tick = src.get("tick")
    if tick:
        lines.append(
            f"\nTicks (ms): alone {', '.join(f'{t:.2f}' for t in tick['alone']['ms'])};"
            f" beside {SCHEDULES_NOT_DUE:,} not due"
            f" {', '.join(f'{t:.2f}' for t in tick['beside']['ms'])}; occurrences made per tick"
            f" {tick['beside']['made']}.\n"
        )
    return lines
