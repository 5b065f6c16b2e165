"""The memory handlers over a real DuckDB file (no bus): group commit under concurrency, superseding
races, idempotent re-runs of the same syscall, eviction events."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_schemas import AiosError, Syscall, new_id
from aios_schemas.memory import (
    MemoryAdd,
    MemoryAddReply,
    MemoryDelete,
    MemoryEvicted,
    MemoryGet,
    MemoryGetReply,
    MemoryList,
    MemoryListReply,
    MemoryPayload,
    MemoryReply,
    MemorySearch,
    MemorySearchReply,
    MemoryUpdate,
    MemoryUpdateReply,
)
from aios_services.memory.embedders import HashingEmbedder
from aios_services.memory.handlers import Deps, MemoryHandlers
from aios_services.memory.lruk import Quota
from aios_services.memory.store import Db, Space


class Service:
    def __init__(self, handlers: MemoryHandlers, events: list[MemoryEvicted]) -> None:
        self.h = handlers
        self.events = events

    async def call(self, payload: MemoryPayload, agent: str = "a", id: str | None = None) -> MemoryReply:
        return await self.h.handle(Syscall(id=id or new_id(), agent=agent, payload=payload))


@pytest.fixture
async def svc(duckdb_file: Path) -> AsyncIterator[Service]:
    e = HashingEmbedder(32)
    db = Db(duckdb_file, Space(e.name, e.dim))
    await db.run(db.open)
    events: list[MemoryEvicted] = []

    async def publish(ev: MemoryEvicted) -> None:
        events.append(ev)

    deps = Deps(db=db, blobs=None, embedder=e, quota=lambda agent: Quota(5, 10**6), publish=publish)
    yield Service(MemoryHandlers(deps), events)
    await db.aclose()


async def test_concurrent_updates_each_make_one_version(svc: Service) -> None:
    rec = await svc.call(MemoryAdd(text="v1"))
    assert isinstance(rec, MemoryAddReply)
    rid = rec.record.id
    replies = await asyncio.gather(*(svc.call(MemoryUpdate(id=rid, text=f"update {i}")) for i in range(10)))
    versions = sorted(r.record.version for r in replies if isinstance(r, MemoryUpdateReply))
    assert versions == list(range(2, 12))
    got = await svc.call(MemoryGet(id=rid, history=True))
    assert isinstance(got, MemoryGetReply)
    assert [r.version for r in got.history] == list(range(10, 0, -1))
    # The validity intervals chain with no gap or overlap.
    chain = [*reversed(got.history), got.record]
    assert all(a.valid_to == b.updated for a, b in itertools.pairwise(chain))


async def test_a_failing_write_does_not_sink_its_batch(svc: Service) -> None:
    calls = [svc.call(MemoryAdd(text=f"fact {i}")) for i in range(20)]
    calls.insert(7, svc.call(MemoryDelete(id="no-such-record")))
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], AiosError) and errors[0].code == "not_found"
    listed = await svc.call(MemoryList(limit=100))
    assert isinstance(listed, MemoryListReply) and len(listed.records) == 20


async def test_a_re_run_of_the_same_syscall_does_not_write_twice(svc: Service) -> None:
    op = new_id()
    first = await svc.call(MemoryAdd(text="once"), id=op)
    again = await svc.call(MemoryAdd(text="once"), id=op)
    assert isinstance(first, MemoryAddReply) and isinstance(again, MemoryAddReply)
    assert first.record.id == again.record.id == op and again.record.version == 1
    up = new_id()
    u1 = await svc.call(MemoryUpdate(id=op, text="twice"), id=up)
    u2 = await svc.call(MemoryUpdate(id=op, text="twice"), id=up)
    assert isinstance(u1, MemoryUpdateReply) and isinstance(u2, MemoryUpdateReply)
    assert u1.record.version == u2.record.version == 2 and u2.superseded.version == 1
    listed = await svc.call(MemoryList(history=True))
    assert isinstance(listed, MemoryListReply) and [r.version for r in listed.records] == [2, 1]


async def test_eviction_events_and_evicted_records_still_readable(svc: Service) -> None:
    ids = []
    for i in range(8):
        r = await svc.call(MemoryAdd(text=f"fact {i}"))
        assert isinstance(r, MemoryAddReply)
        ids.append(r.record.id)
    assert [i for ev in svc.events for i in ev.ids] == ids[:3]  # quota 5 records
    assert svc.h.details()["evicted"] == 3
    got = await svc.call(MemoryGet(id=ids[0]))
    assert isinstance(got, MemoryGetReply) and got.record.text == "fact 0" and got.record.tier == "working"
    other = await svc.call(MemoryList(), agent="b")
    assert isinstance(other, MemoryListReply) and other.records == []


async def test_a_late_re_run_does_not_put_an_old_version_in_ram(svc: Service) -> None:
    op = new_id()
    await svc.call(MemoryAdd(text="first"), id=op)
    up = new_id()
    await svc.call(MemoryUpdate(id=op, text="second"), id=up)
    await svc.call(MemoryUpdate(id=op, text="third"))
    again = await svc.call(MemoryAdd(text="first"), id=op)  # re-runs answer what they made...
    assert (
        isinstance(again, MemoryAddReply) and again.record.version == 1 and again.record.tier == "long_term"
    )
    upd = await svc.call(MemoryUpdate(id=op, text="second"), id=up)
    assert isinstance(upd, MemoryUpdateReply) and upd.record.version == 2
    got = await svc.call(MemoryGet(id=op))  # ...and the working set still holds the current one
    assert isinstance(got, MemoryGetReply) and (got.record.version, got.record.text) == (3, "third")


async def test_adds_committed_together_match_adds_one_by_one(svc: Service) -> None:
    """Adds that arrive together are written as one multi-row insert: the same records and vectors
    as one at a time, a re-run beside its first run or after it writes nothing more, and a
    search finds every one."""
    ops = [new_id() for _ in range(12)]
    before = await svc.call(MemoryAdd(text="fact 0 blue", metadata={"i": 0}), id=ops[0])  # already there
    calls = [
        svc.call(MemoryAdd(text=f"fact {i} blue", metadata={"i": i}, tags=["t"]), id=op)
        for i, op in enumerate(ops)
    ]
    calls.append(
        svc.call(MemoryAdd(text="fact 5 blue", metadata={"i": 5}, tags=["t"]), id=ops[5])
    )  # same commit
    replies = await asyncio.gather(*calls)
    assert all(isinstance(r, MemoryAddReply) for r in replies)
    assert [r.record.id for r in replies] == [*ops, ops[5]]  # type: ignore[union-attr]
    assert replies[0] == before  # the record that existed, untouched
    listed = await svc.call(MemoryList(limit=100, history=True))
    assert isinstance(listed, MemoryListReply)
    assert sorted(r.id for r in listed.records) == sorted(ops)  # each once, version 1
    assert all(r.version == 1 for r in listed.records)
    assert {r.id: r.metadata["i"] for r in listed.records} == {op: i for i, op in enumerate(ops)}
    found = await svc.call(MemorySearch(query="blue fact", k=20))
    assert isinstance(found, MemorySearchReply) and len(found.hits) == 12  # every vector written
