"""The recorder's queries for the web console: syscalls by filter, a page at a time
(`ctl.recorder.syscalls`), and finished calls per time step (`ctl.recorder.series`). Aggregated in
DuckDB, next to the rows, so the console gets a page or a few dozen points however many agents run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aios_schemas.explore import (
    SeriesPoint,
    SeriesQuery,
    SeriesReply,
    SyscallListQuery,
    SyscallListReply,
    SyscallSummary,
)

from ..runtime import Bus
from .store import TraceStore

_DETAIL = "json_extract_string(details, '$.{}')"


def list_syscalls(store: TraceStore, q: SyscallListQuery) -> SyscallListReply:
    # One row per syscall id: its latest state is that of its latest event (by stream sequence,
    # which orders events as the scheduler emitted them even when two share a timestamp).
    sql = f"""
        WITH s AS (
            SELECT id, any_value(agent) AS agent, any_value(kind) AS kind, max(resource) AS resource,
                   arg_max(state, seq) AS state, min(ts) AS started, max(ts) AS updated,
                   max(TRY_CAST({_DETAIL.format("tokens")} AS BIGINT)) AS tokens,
                   max(TRY_CAST({_DETAIL.format("queued_ms")} AS DOUBLE)) AS queued_ms,
                   max(TRY_CAST({_DETAIL.format("service_ms")} AS DOUBLE)) AS service_ms,
                   arg_max({_DETAIL.format("backend")}, seq)
                       FILTER (WHERE {_DETAIL.format("backend")} IS NOT NULL) AS backend,
                   arg_max({_DETAIL.format("code")}, seq)
                       FILTER (WHERE {_DETAIL.format("code")} IS NOT NULL) AS code
            FROM events
            WHERE (? IS NULL OR agent = ?) AND (? IS NULL OR kind = ? OR starts_with(kind, ? || '.'))
            GROUP BY id
        )
        SELECT * FROM s
        WHERE (? IS NULL OR state = ?) AND started >= ? AND (? IS NULL OR started <= ?)
        ORDER BY started DESC, id DESC LIMIT ? OFFSET ?
    """
    params: list[object] = [
        q.agent,
        q.agent,
        q.kind,
        q.kind,
        q.kind,
        q.state,
        q.state,
        q.since or 0.0,
        q.until,
        q.until,
        q.limit + 1,
        q.offset,
    ]
    rows = store.con.execute(sql, params).fetchall()
    out = [
        SyscallSummary(
            id=r[0],
            agent=r[1],
            kind=r[2],
            resource=r[3],
            state=r[4],
            started=r[5],
            updated=r[6],
            tokens=r[7],
            queued_ms=r[8],
            service_ms=r[9],
            backend=r[10],
            code=r[11],
        )
        for r in rows[: q.limit]
    ]
    return SyscallListReply(syscalls=out, more=len(rows) > q.limit)


def series(store: TraceStore, q: SeriesQuery) -> SeriesReply:
    queued, service = _DETAIL.format("queued_ms"), _DETAIL.format("service_ms")
    latency = f"TRY_CAST({queued} AS DOUBLE) + TRY_CAST({service} AS DOUBLE)"
    rows = store.con.execute(
        f"""
        SELECT floor(ts / ?) * ? AS step, count(*), count(*) FILTER (WHERE state <> 'done'),
               coalesce(sum(TRY_CAST({_DETAIL.format("tokens")} AS BIGINT)), 0),
               quantile_cont({latency}, 0.5), quantile_cont({latency}, 0.99)
        FROM events
        WHERE state IN ('done', 'failed', 'cancelled') AND ts >= ? AND (? IS NULL OR resource = ?)
        GROUP BY step ORDER BY step
        """,
        [q.step_s, q.step_s, q.since, q.resource, q.resource],
    ).fetchall()
    return SeriesReply(
        points=[
            SeriesPoint(
                ts=float(r[0]),
                calls=int(r[1]),
                errors=int(r[2]),
                tokens=int(r[3]),
                p50_ms=None if r[4] is None else round(float(r[4]), 3),
                p99_ms=None if r[5] is None else round(float(r[5]), 3),
            )
            for r in rows
        ]
    )


async def serve(bus: Bus, store: TraceStore, flush: Callable[[], Awaitable[None]]) -> None:
    """Answer the console's two queries (what has arrived is flushed first, as `aios trace` does)."""

    async def syscalls(q: SyscallListQuery) -> SyscallListReply:
        await flush()
        return await store.run(lambda: list_syscalls(store, q))

    async def steps(q: SeriesQuery) -> SeriesReply:
        await flush()
        return await store.run(lambda: series(store, q))

    await bus.serve(bus.ns.ctl("recorder", "syscalls"), SyscallListQuery, syscalls, max_concurrency=4)
    await bus.serve(bus.ns.ctl("recorder", "series"), SeriesQuery, steps, max_concurrency=4)
