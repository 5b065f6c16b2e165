"""The recorder's DuckDB file: events and spans, keyed by their stream sequence (a redelivered
message is stored once), written in batches, archived to Parquet on S3, and queried for `aios
trace` and `aios stats`. One thread owns the connection (DuckDB: one writer per file)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aios_schemas import SyscallEvent
from aios_schemas.traces import SpanRecord, TraceEvent, UsageRow

from ..runtime.storage import S3Config, connect_duckdb

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT PRIMARY KEY, id VARCHAR, state VARCHAR, ts DOUBLE, agent VARCHAR, session VARCHAR,
    kind VARCHAR, resource VARCHAR, details JSON);
CREATE TABLE IF NOT EXISTS spans (
    seq BIGINT, span_id VARCHAR, trace_id VARCHAR, parent_id VARCHAR, name VARCHAR, service VARCHAR,
    start_ts DOUBLE, end_ts DOUBLE, status VARCHAR, attributes JSON, syscall_id VARCHAR,
    PRIMARY KEY (seq, span_id));
CREATE TABLE IF NOT EXISTS other_events (seq BIGINT PRIMARY KEY, what VARCHAR, ts DOUBLE, body JSON);
CREATE TABLE IF NOT EXISTS archived (tbl VARCHAR PRIMARY KEY, upto BIGINT);
CREATE INDEX IF NOT EXISTS events_id ON events (id);
CREATE INDEX IF NOT EXISTS spans_syscall ON spans (syscall_id);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
"""
# The JSON shape of each table's rows, in column order (`from_json` unpacks them).
_ROW_TYPES = {
    "events": json.dumps(
        [
            {
                "seq": "BIGINT",
                "id": "VARCHAR",
                "state": "VARCHAR",
                "ts": "DOUBLE",
                "agent": "VARCHAR",
                "session": "VARCHAR",
                "kind": "VARCHAR",
                "resource": "VARCHAR",
                "details": "JSON",
            }
        ]
    ),
    "spans": json.dumps(
        [
            {
                "seq": "BIGINT",
                "span_id": "VARCHAR",
                "trace_id": "VARCHAR",
                "parent_id": "VARCHAR",
                "name": "VARCHAR",
                "service": "VARCHAR",
                "start_ts": "DOUBLE",
                "end_ts": "DOUBLE",
                "status": "VARCHAR",
                "attributes": "JSON",
                "syscall_id": "VARCHAR",
            }
        ]
    ),
    "other_events": json.dumps([{"seq": "BIGINT", "what": "VARCHAR", "ts": "DOUBLE", "body": "JSON"}]),
}


def _json_value(body: bytes) -> Any:
    text = body.decode(errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


class TraceStore:
    def __init__(self, path: Path, s3: S3Config | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder-db")
        self.s3 = s3
        self.con = self._pool.submit(lambda: connect_duckdb(path, s3)).result()
        self._pool.submit(self.con.execute, SCHEMA).result()

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        self._pool.submit(self.con.close).result()
        self._pool.shutdown()

    # --- writes ------------------------------------------------------------------------------
    def write(
        self,
        events: Sequence[tuple[int, SyscallEvent]],
        spans: Sequence[tuple[int, SpanRecord]],
        others: Sequence[tuple[int, str, bytes]] = (),
    ) -> None:
        """One transaction. Rows go in as one JSON text per table, unpacked by DuckDB itself: its
        Python client binds each parameter slowly (~0.1 ms: import probes for optional types, py-spy),
        which made row-by-row parameters the recorder's main cost (2.7 ms of CPU per syscall)."""
        ev = [
            {
                "seq": seq,
                "id": e.id,
                "state": e.state,
                "ts": e.ts,
                "agent": e.agent,
                "session": e.session,
                "kind": e.kind,
                "resource": e.resource,
                "details": e.details,
            }
            for seq, e in events
        ]
        sp = [
            {
                "seq": seq,
                "span_id": s.span_id,
                "trace_id": s.trace_id,
                "parent_id": s.parent_id,
                "name": s.name,
                "service": s.service,
                "start_ts": s.start,
                "end_ts": s.end,
                "status": s.status,
                "attributes": s.attributes,
                "syscall_id": _syscall_of(s),
            }
            for seq, s in spans
        ]
        ot = [
            {"seq": seq, "what": what, "ts": time.time(), "body": _json_value(body)}
            for seq, what, body in others
        ]
        self.con.execute("BEGIN")
        try:
            for table, rows in (("events", ev), ("spans", sp), ("other_events", ot)):
                if rows:
                    self.con.execute(
                        f"INSERT OR IGNORE INTO {table} SELECT r.* FROM"
                        f" (SELECT unnest(from_json(?::JSON, '{_ROW_TYPES[table]}')) AS r)",
                        [json.dumps(rows)],
                    )
            self.con.execute("COMMIT")
        except BaseException:
            self.con.execute("ROLLBACK")
            raise

    def archive(self, bucket: str) -> dict[str, int]:
        """New rows of each table as one Parquet object each on S3; rows archived per table."""
        out = {}
        for table in ("events", "spans", "other_events"):
            row = self.con.execute("SELECT upto FROM archived WHERE tbl = ?", [table]).fetchone()
            upto = int(row[0]) if row else -1
            top = self.con.execute(f"SELECT max(seq), count(*) FROM {table} WHERE seq > ?", [upto]).fetchone()
            if top is None or top[0] is None:
                continue
            key = f"s3://{bucket}/{table}/{upto + 1:012d}-{int(top[0]):012d}.parquet"
            self.con.execute(
                f"COPY (SELECT * FROM {table} WHERE seq > ? AND seq <= ? ORDER BY seq)"
                f" TO '{key}' (FORMAT parquet)",
                [upto, int(top[0])],
            )
            self.con.execute("INSERT OR REPLACE INTO archived VALUES (?, ?)", [table, int(top[0])])
            out[table] = int(top[1])
        return out

    # --- reads -------------------------------------------------------------------------------
    def _source(self, table: str, bucket: str | None) -> str:
        """The table, or (with a bucket) its Parquet archives on S3."""
        return table if bucket is None else f"read_parquet('s3://{bucket}/{table}/*.parquet')"

    def events_of(self, syscall_ids: Sequence[str], bucket: str | None = None) -> list[TraceEvent]:
        if not syscall_ids:
            return []
        marks = ",".join("?" * len(syscall_ids))
        rows = self.con.execute(
            f"SELECT id, state, ts, agent, kind, resource, details FROM {self._source('events', bucket)}"
            f" WHERE id IN ({marks}) ORDER BY ts, seq",
            list(syscall_ids),
        ).fetchall()
        return [
            TraceEvent(
                id=r[0],
                state=r[1],
                ts=r[2],
                agent=r[3],
                kind=r[4],
                resource=r[5],
                details=json.loads(r[6] or "{}"),
            )
            for r in rows
        ]

    def spans_of(self, syscall_ids: Sequence[str], bucket: str | None = None) -> list[SpanRecord]:
        if not syscall_ids:
            return []
        marks = ",".join("?" * len(syscall_ids))
        src = self._source("spans", bucket)
        rows = self.con.execute(
            "SELECT DISTINCT ON (span_id) trace_id, span_id, parent_id, name, service, start_ts, end_ts,"
            f" status, attributes FROM {src} WHERE trace_id IN"
            f" (SELECT DISTINCT trace_id FROM {src} WHERE syscall_id IN ({marks})) ORDER BY span_id",
            list(syscall_ids),
        ).fetchall()
        spans = [
            SpanRecord(
                trace_id=r[0],
                span_id=r[1],
                parent_id=r[2],
                name=r[3],
                service=r[4],
                start=r[5],
                end=r[6],
                status=r[7],
                attributes=json.loads(r[8] or "{}"),
            )
            for r in rows
        ]
        return sorted(spans, key=lambda s: s.start)

    def recent(self, agent: str, limit: int) -> list[str]:
        rows = self.con.execute(
            "SELECT id FROM events WHERE agent = ? GROUP BY id ORDER BY max(ts) DESC LIMIT ?", [agent, limit]
        ).fetchall()
        return [str(r[0]) for r in rows]

    def usage(self, since: float | None, agent: str | None, prices: dict[str, float]) -> list[UsageRow]:
        rows = self.con.execute(
            """
            SELECT agent, coalesce(resource, '') AS resource, count(*) AS calls,
                   count(*) FILTER (WHERE state <> 'done') AS errors,
                   coalesce(sum(CAST(json_extract(details, '$.tokens') AS BIGINT)), 0) AS tokens,
                   quantile_cont(CAST(json_extract(details, '$.queued_ms') AS DOUBLE)
                                 + CAST(json_extract(details, '$.service_ms') AS DOUBLE), 0.5) AS p50,
                   quantile_cont(CAST(json_extract(details, '$.queued_ms') AS DOUBLE)
                                 + CAST(json_extract(details, '$.service_ms') AS DOUBLE), 0.99) AS p99
            FROM events
            WHERE state IN ('done', 'failed', 'cancelled') AND ts >= ? AND (? IS NULL OR agent = ?)
            GROUP BY ALL ORDER BY agent, resource
            """,
            [since or 0.0, agent, agent],
        ).fetchall()
        out = []
        for a, res, calls, errors, tokens, p50, p99 in rows:
            price = prices.get(res)
            out.append(
                UsageRow(
                    agent=a,
                    resource=res,
                    calls=int(calls),
                    errors=int(errors),
                    tokens=int(tokens),
                    latency_p50_ms=None if p50 is None else round(float(p50), 3),
                    latency_p99_ms=None if p99 is None else round(float(p99), 3),
                    cost=None if price is None else round(price * int(tokens) / 1000, 6),
                )
            )
        return out


def _syscall_of(span: SpanRecord) -> str | None:
    value: Any = span.attributes.get("aios.syscall.id")
    return value if isinstance(value, str) else None
