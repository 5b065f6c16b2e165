"""The memory service through the kernel, on real servers: SDK -> JetStream -> scheduler -> memory ->
DuckDB (and weed mini for large values). CRUD, versions, filtered semantic and keyword search,
quota eviction that loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import decode
from aios_schemas.memory import (
    MemoryEvicted,
    MemoryGet,
    MemoryGetReply,
    MemoryInspect,
    MemoryList,
    MemoryListReply,
)
from aios_sdk import BackendUnavailable, InvalidRequest, NotFound, where
from aios_services.cli.memory import inspect
from aios_services.cli.procs import free_port
from tests.conftest import S3
from tests.integration.memory_kernel import memory_kernel
from tests.kernel import Kernel


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, s3_srv: S3) -> AsyncIterator[Kernel]:
    async with memory_kernel(nats_url, tmp_path, s3_srv, memory_large_bytes=1024) as k:
        yield k


async def test_add_get_update_history_delete(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        added = (
            await aios.memory.add("Alice prefers tea", metadata={"person": "alice"}, tags=["prefs"])
        ).record
        assert (added.version, added.namespace, added.valid_to, added.tier) == (1, "agent-1", None, "working")
        assert added.metadata == {"person": "alice"} and added.tags == ["prefs"]
        got = await aios.memory.get(added.id)
        assert got.record.text == "Alice prefers tea" and got.history == []

        upd = await aios.memory.update(added.id, text="Alice prefers coffee")
        assert upd.record.version == 2 and upd.record.text == "Alice prefers coffee"
        assert upd.record.metadata == {"person": "alice"} and upd.record.tags == ["prefs"]  # kept
        assert upd.superseded.version == 1 and upd.superseded.valid_to == upd.record.updated
        assert upd.record.created == added.created

        got = await aios.memory.get(added.id, history=True)
        assert got.record.text == "Alice prefers coffee"
        assert [(r.version, r.text) for r in got.history] == [(1, "Alice prefers tea")]
        # What was true before the update is still there, as of then.
        then = (await aios.memory.list(as_of=upd.superseded.updated)).records
        assert [r.text for r in then] == ["Alice prefers tea"]
        assert [r.version for r in (await aios.memory.list(history=True)).records] == [2, 1]
        # Superseded facts do not come back as current in a search.
        hits = (await aios.memory.search("alice prefers", mode="keyword")).hits
        assert [h.record.text for h in hits] == ["Alice prefers coffee"]

        await aios.memory.update(added.id, tags=["prefs", "drinks"])  # text kept, vector copied
        hits = (await aios.memory.search("Alice prefers coffee")).hits
        assert hits[0].record.id == added.id and hits[0].record.version == 3

        gone = await aios.memory.delete(added.id)
        assert gone.versions == 3
        with pytest.raises(NotFound):
            await aios.memory.get(added.id)
        with pytest.raises(NotFound):
            await aios.memory.update(added.id, text="x")
        with pytest.raises(NotFound):
            await aios.memory.delete(added.id)
        assert (await aios.memory.list(history=True)).records == []


async def test_filtered_semantic_and_keyword_search(kernel: Kernel) -> None:
    facts = [
        ("the cat sleeps on the warm sofa", {"kind": "pet", "age": 3}, ["home"]),
        ("the dog chases the cat in the garden", {"kind": "pet", "age": 7}, ["home", "outside"]),
        ("quarterly tax return is due in april", {"kind": "admin", "age": 1}, ["work"]),
        ("the cat food is in the kitchen cupboard", {"kind": "home", "urgent": True}, ["home"]),
    ]
    async with kernel.connect("agent-1") as aios:
        t0 = time.time()
        ids = [(await aios.memory.add(t, metadata=m, tags=tags)).record.id for t, m, tags in facts]
        hits = (await aios.memory.search("cat sleeps sofa", k=2)).hits
        assert hits[0].record.id == ids[0] and len(hits) == 2
        assert hits[0].score >= hits[1].score

        pets = where.eq("metadata.kind", "pet")
        hits = (await aios.memory.search("cat", filter=pets, k=10)).hits
        assert {h.record.id for h in hits} == {ids[0], ids[1]}
        older = where.and_(pets, where.cmp("gt", "metadata.age", 5))
        assert [h.record.id for h in (await aios.memory.search("cat", filter=older)).hits] == [ids[1]]
        either = where.or_(where.eq("metadata.urgent", True), where.in_("tags", ["work"]))
        assert {h.record.id for h in (await aios.memory.search("cat", filter=either)).hits} == {
            ids[2],
            ids[3],
        }
        recent = where.range("created", gte=t0)
        assert len((await aios.memory.search("cat", filter=recent)).hits) == 4
        assert (await aios.memory.search("cat", filter=where.range("created", lt=t0))).hits == []

        kw = (await aios.memory.search("CAT kitchen", mode="keyword")).hits
        assert kw[0].record.id == ids[3] and kw[0].score == 1.0
        assert {h.record.id for h in kw} == {ids[0], ids[1], ids[3]}  # tax return has neither word
        kw = (
            await aios.memory.search("cat", mode="keyword", filter=where.not_(where.eq("tags", "home")))
        ).hits
        assert kw == []
        listed = (await aios.memory.list(filter=where.eq("tags", "home"), limit=2)).records
        assert [r.id for r in listed] == [ids[3], ids[1]]  # newest first
        page2 = await aios.memory.list(filter=where.eq("tags", "home"), limit=2, offset=2)
        assert [r.id for r in page2.records] == [ids[0]] and page2.next_offset is None

        with pytest.raises(InvalidRequest):
            await aios.memory.search("cat", filter={"op": "lt", "field": "tags", "value": "x"})
        with pytest.raises(InvalidRequest):
            await aios.memory.search("cat", filter={"op": "eq", "field": "namespace", "value": "agent-2"})
        with pytest.raises(InvalidRequest):
            await aios.memory.search("!!!", mode="keyword")


async def test_sessions_scope_records(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        a = (await aios.memory.add("note in run one", session="run-1")).record
        b = (await aios.memory.add("note in run two", session="run-2")).record
        c = (await aios.memory.add("note for every run")).record
        assert a.session == "run-1" and c.session is None
        assert [r.id for r in (await aios.memory.list(session="run-1")).records] == [a.id]
        assert {h.record.id for h in (await aios.memory.search("note", session="run-2")).hits} == {b.id}
        assert len((await aios.memory.list()).records) == 3


async def test_large_values_go_to_s3_and_come_back_whole(kernel: Kernel) -> None:
    big = "memory " * 2000 + "the end"  # over the 1 KiB threshold of this kernel
    async with kernel.connect("agent-1") as aios:
        rec = (await aios.memory.add(big, tags=["big"])).record
        assert rec.text == big
        assert (await aios.memory.get(rec.id)).record.text == big
        assert (await aios.memory.list(filter=where.eq("tags", "big"))).records[0].text == big
        hits = (await aios.memory.search("memory", filter=where.eq("tags", "big"))).hits
        assert hits[0].record.text == big
        upd = await aios.memory.update(rec.id, text=big + " and more")
        assert upd.superseded.text == big and upd.record.text == big + " and more"
        assert (await aios.memory.delete(rec.id)).versions == 2


async def events(nc: NATS, subject: str) -> tuple[asyncio.Queue[MemoryEvicted], object]:
    q: asyncio.Queue[MemoryEvicted] = asyncio.Queue()

    async def on(msg: Msg) -> None:
        q.put_nowait(decode(msg.data, MemoryEvicted))

    sub = await nc.subscribe(subject, cb=on)
    await nc.flush()
    return q, sub


async def test_over_quota_evicts_lru2_with_events_and_loses_nothing(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    quotas = {"agent-1": {"records": 3, "bytes": 10_000}}
    async with memory_kernel(nats_url, tmp_path, memory_quotas=quotas) as kernel:
        q, _ = await events(nc, kernel.ns.service_event("memory", "evicted"))
        async with kernel.connect("agent-1") as aios:
            hot = (await aios.memory.add("hot fact about teapots")).record.id
            await aios.memory.get(hot)  # accessed twice: survives a run of one-off adds
            ids = [(await aios.memory.add(f"one-off fact number {i}")).record.id for i in range(8)]
            evicted: list[str] = []
            while len(evicted) < 6:  # 9 records, quota 3: 6 leave RAM, one event per add that evicts
                ev = await asyncio.wait_for(q.get(), timeout=10)
                assert ev.namespace == "agent-1" and ev.working_records <= 3 and ev.quota_records == 3
                evicted += ev.ids
            assert hot not in evicted
            assert evicted == ids[:6]  # the once-touched, least recently used first
            # Nothing evicted is lost: every record is still there, by id, list and search.
            for rid in ids:
                rec = (await aios.memory.get(rid)).record
                assert rec.id == rid
            assert len((await aios.memory.list()).records) == 9
            hits = (await aios.memory.search("one-off fact number 0", mode="keyword", k=20)).hits
            assert ids[0] in {h.record.id for h in hits}
        # The other agents' quota is untouched (the default): agent-2 evicts nothing here.
        async with kernel.connect("agent-2") as other:
            for i in range(5):
                await other.memory.add(f"agent two fact {i}")
        assert q.empty() or all(e.namespace == "agent-1" for e in [q.get_nowait() for _ in range(q.qsize())])


async def test_operator_inspects_an_agents_memory(kernel: Kernel) -> None:
    """`aios memory` asks the service on ctl.memory.inspect (kernel credentials), read-only."""
    async with kernel.connect("agent-1") as aios:
        rec = (await aios.memory.add("operator can see this", tags=["ops"])).record
        await aios.memory.update(rec.id, text="operator can see this, version two")
    listed = await inspect(kernel.nats_url, kernel.ns, MemoryInspect(agent="agent-1", payload=MemoryList()))
    assert isinstance(listed.result, MemoryListReply)
    assert [r.text for r in listed.result.records] == ["operator can see this, version two"]
    got = await inspect(
        kernel.nats_url, kernel.ns, MemoryInspect(agent="agent-1", payload=MemoryGet(id=rec.id, history=True))
    )
    assert isinstance(got.result, MemoryGetReply) and [r.version for r in got.result.history] == [1]
    other = await inspect(kernel.nats_url, kernel.ns, MemoryInspect(agent="agent-2", payload=MemoryList()))
    assert isinstance(other.result, MemoryListReply) and other.result.records == []


async def test_s3_unavailable_fails_only_large_values(nats_url: str, tmp_path: Path) -> None:
    """An object store that is down (nothing listens there): the service starts, small values work,
    a large one is backend_unavailable within seconds, nothing half-written is left."""
    nowhere = S3(f"http://127.0.0.1:{free_port()}", "nobody", "nothing")
    async with (
        memory_kernel(nats_url, tmp_path, nowhere, memory_large_bytes=1024) as kernel,
        kernel.connect("agent-1") as aios,
    ):
        small = (await aios.memory.add("small values live in DuckDB")).record
        with pytest.raises(BackendUnavailable):
            await aios.memory.add("large " * 1000)
        assert [r.id for r in (await aios.memory.list(history=True)).records] == [small.id]
        assert (await aios.memory.search("small values", k=1)).hits[0].record.id == small.id
