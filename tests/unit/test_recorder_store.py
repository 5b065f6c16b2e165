"""The recorder's DuckDB store: rows of every kind written in one statement per table, stored once
however often a message is redelivered, read back as they went in."""

from __future__ import annotations

from pathlib import Path

from aios_schemas import SyscallEvent
from aios_schemas.traces import SpanRecord
from aios_services.recorder.store import TraceStore


def test_write_is_idempotent_and_reads_back(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "traces.duckdb")
    ev = SyscallEvent(
        id="s-00000001",
        state="done",
        agent="a",
        kind="llm.chat",
        resource="llm.m",
        details={"tokens": 7, "queued_ms": 1.0, "service_ms": 2.0},
    )
    span = SpanRecord(
        trace_id="t" * 32,
        span_id="1" * 16,
        parent_id=None,
        name="syscall llm.chat",
        service="aios-x",
        start=1.0,
        end=2.0,
        attributes={"aios.syscall.id": "s-00000001"},
    )
    for _ in range(2):  # a redelivery
        store.write(
            [(1, ev)], [(2, span)], [(3, "audit.denied", b'{"why": "rule r1"}'), (4, "x", b"not json")]
        )
    assert [(e.id, e.state, e.details) for e in store.events_of(["s-00000001"])] == [
        ("s-00000001", "done", {"tokens": 7, "queued_ms": 1.0, "service_ms": 2.0})
    ]
    assert [s.name for s in store.spans_of(["s-00000001"])] == ["syscall llm.chat"]
    assert store.con.execute("SELECT count(*) FROM other_events").fetchone() == (2,)
    rows = store.usage(None, None, {"llm.m": 2.0})
    assert [(r.agent, r.calls, r.tokens, r.cost) for r in rows] == [("a", 1, 7, 0.014)]
    store.close()
