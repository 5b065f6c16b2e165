"""The recorder's console queries: syscalls filtered by agent, kind family, latest state and time,
a page at a time; finished calls per step with their latency."""

from __future__ import annotations

from pathlib import Path

from aios_schemas import SyscallEvent
from aios_schemas.explore import SeriesQuery, SyscallListQuery
from aios_services.recorder.explore import list_syscalls, series
from aios_services.recorder.store import TraceStore


def _events() -> list[tuple[int, SyscallEvent]]:
    out: list[tuple[int, SyscallEvent]] = []
    seq = 0

    def add(sid: str, state: str, ts: float, agent: str, kind: str, **details: object) -> None:
        nonlocal seq
        seq += 1
        ev = SyscallEvent(
            id=sid,
            state=state,
            ts=ts,
            agent=agent,
            kind=kind,
            resource=f"{kind.split('.')[0]}.x",
            details=details,  # type: ignore[arg-type]
        )
        out.append((seq, ev))

    for i in range(5):  # five finished chats of agent a, one a second
        sid = f"a-{i}"
        add(sid, "accepted", 100.0 + i, "a", "llm.chat")
        add(sid, "dispatched", 100.0 + i, "a", "llm.chat", backend="sim")
        add(sid, "done", 100.5 + i, "a", "llm.chat", tokens=10, queued_ms=1.0, service_ms=9.0, backend="sim")
    add("b-0", "accepted", 103.0, "b", "memory.add")
    add("b-0", "queued", 103.0, "b", "memory.add")  # same time as accepted: order by sequence
    add("b-1", "accepted", 104.0, "b", "llm.chat")
    add("b-1", "failed", 104.2, "b", "llm.chat", code="forbidden", queued_ms=0.0, service_ms=0.0, tokens=0)
    return out


def test_filters_and_pages(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.duckdb")
    store.write(_events(), [])
    everything = list_syscalls(store, SyscallListQuery())
    assert [s.id for s in everything.syscalls] == ["b-1", "a-4", "b-0", "a-3", "a-2", "a-1", "a-0"]
    assert not everything.more
    page = list_syscalls(store, SyscallListQuery(agent="a", limit=2, offset=2))
    assert [s.id for s in page.syscalls] == ["a-2", "a-1"] and page.more
    done = page.syscalls[0]
    assert (done.state, done.tokens, done.backend, done.queued_ms, done.service_ms) == (
        "done",
        10,
        "sim",
        1.0,
        9.0,
    )
    assert [s.id for s in list_syscalls(store, SyscallListQuery(kind="memory")).syscalls] == ["b-0"]
    assert [s.id for s in list_syscalls(store, SyscallListQuery(kind="llm.chat", agent="b")).syscalls] == [
        "b-1"
    ]
    assert list_syscalls(store, SyscallListQuery(kind="llm.cha")).syscalls == []
    queued = list_syscalls(store, SyscallListQuery(state="queued")).syscalls
    assert [(s.id, s.state) for s in queued] == [("b-0", "queued")]
    failed = list_syscalls(store, SyscallListQuery(state="failed")).syscalls
    assert [(s.id, s.code) for s in failed] == [("b-1", "forbidden")]
    window = list_syscalls(store, SyscallListQuery(since=101.0, until=103.0)).syscalls
    assert [s.id for s in window] == ["b-0", "a-3", "a-2", "a-1"]
    store.close()


def test_series_steps(tmp_path: Path) -> None:
    store = TraceStore(tmp_path / "t.duckdb")
    store.write(_events(), [])
    points = series(store, SeriesQuery(since=0.0, step_s=2.0)).points
    assert [(p.ts, p.calls, p.errors, p.tokens) for p in points] == [
        (100.0, 2, 0, 20),
        (102.0, 2, 0, 20),
        (104.0, 2, 1, 10),
    ]
    assert points[0].p50_ms == 10.0
    assert series(store, SeriesQuery(since=104.0, resource="llm.x")).points[0].calls == 2
    store.close()
