"""Attacks on another agent's memory through the kernel: agent-b (mallory) knows agent-a's record ids
and texts and tries every field of every memory syscall; it reaches nothing of agent-a's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import Syscall, SyscallResult, decode_reply, encode, new_id
from aios_schemas.memory import MemoryAdd, MemoryGet
from aios_sdk import Conflict, Forbidden, InvalidRequest, NotFound, where
from aios_sdk.config import without_credentials
from tests.integration.memory_kernel import memory_kernel
from tests.kernel import Kernel
from tests.servers import auth_for

ALICE, MALLORY = "agent-a", "agent-b"
SECRET = "alice's bank pin is 4321"


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path) -> AsyncIterator[Kernel]:
    async with memory_kernel(nats_url, tmp_path) as k:
        yield k


async def test_mallory_reaches_nothing_of_alice(kernel: Kernel) -> None:
    async with kernel.connect(ALICE) as alice, kernel.connect(MALLORY) as mallory:
        rec = (
            await alice.memory.add(SECRET, metadata={"kind": "secret"}, tags=["bank"], session="s1")
        ).record
        await mallory.memory.add("mallory's own note", metadata={"kind": "secret"}, tags=["bank"])

        # By a forged id, every operation: not found (the same answer as an id that never existed).
        with pytest.raises(NotFound):
            await mallory.memory.get(rec.id)
        with pytest.raises(NotFound):
            await mallory.memory.get(rec.id, history=True)
        with pytest.raises(NotFound):
            await mallory.memory.update(rec.id, text="overwritten by mallory")
        with pytest.raises(NotFound):
            await mallory.memory.delete(rec.id)

        # By naming alice's namespace: forbidden (shared namespaces need a grant).
        for call in (
            mallory.memory.get(rec.id, namespace=ALICE),
            mallory.memory.update(rec.id, text="x", namespace=ALICE),
            mallory.memory.delete(rec.id, namespace=ALICE),
            mallory.memory.list(namespace=ALICE),
            mallory.memory.search(SECRET, namespace=ALICE),
            mallory.memory.add("planted", namespace=ALICE),
        ):
            with pytest.raises(Forbidden):
                await call

        # By search and list with the words of the secret, alice's session and every filter trick.
        for mode in ("semantic", "keyword"):
            hits = (await mallory.memory.search(SECRET, mode=mode, k=100)).hits  # type: ignore[arg-type]
            assert all(h.record.namespace == MALLORY for h in hits)
            assert SECRET not in [h.record.text for h in hits]
        tricks = [
            where.or_(where.eq("metadata.kind", "secret"), where.not_(where.eq("metadata.kind", "secret"))),
            where.eq("session", "s1"),
            where.in_("tags", ["bank"]),
            where.range("created", gte=0),
        ]
        for f in tricks:
            listed = (await mallory.memory.list(filter=f, history=True, limit=1000)).records
            assert all(r.namespace == MALLORY for r in listed)
            found = (await mallory.memory.search("pin", filter=f, k=1000)).hits
            assert all(h.record.namespace == MALLORY for h in found)
        assert (await mallory.memory.list(session="s1", history=True)).records == []
        for field in ("namespace", "agent", "id", "text"):
            with pytest.raises(InvalidRequest):
                await mallory.memory.list(filter={"op": "eq", "field": field, "value": ALICE})
        with pytest.raises(InvalidRequest):
            await mallory.memory.list(filter={"op": "eq", "field": "metadata.kind' OR 1=1 --", "value": "x"})
        with pytest.raises(InvalidRequest):  # extra fields are refused, not ignored
            await mallory.memory.list(filter={"op": "eq", "field": "tags", "value": "x", "agent": ALICE})

        # Reusing alice's record id (her syscall's id) as a syscall id: never alice's record, and a
        # Conflict at once (within JetStream's duplicate window the publish is dropped; the SDK asks
        # the scheduler, which says the id is taken; after the window admission says conflict).
        with pytest.raises(Conflict):
            await mallory.syscall(MemoryAdd(text="same id as alice's record"), id=rec.id, timeout=3)

        # Alice's record is intact, one version, never touched.
        got = await alice.memory.get(rec.id, history=True)
        assert got.record.text == SECRET and got.record.version == 1 and got.history == []
        assert [r.text for r in (await alice.memory.list()).records] == [SECRET]


async def test_a_body_naming_alice_is_refused_to_mallory(kernel: Kernel) -> None:
    """A raw syscall on mallory's own subject whose envelope says it is alice's: the kernel trusts the
    subject NATS let mallory publish on, and refuses it (to mallory only); nothing runs."""
    async with kernel.connect(ALICE) as alice:
        rec = (await alice.memory.add(SECRET)).record
    nc = NATS()
    await nc.connect(
        without_credentials(kernel.nats_url),
        user=MALLORY,
        password=auth_for(kernel.nats_url).token(MALLORY),
        inbox_prefix=f"_INBOX.{MALLORY}",
        allow_reconnect=False,
    )
    try:
        forged = Syscall(id=new_id(), agent=ALICE, payload=MemoryGet(id=rec.id), deadline=time.time() + 30)
        got: asyncio.Future[SyscallResult] = asyncio.get_running_loop().create_future()

        async def on_res(msg: Msg) -> None:
            if not got.done():
                got.set_result(decode_reply(msg.data, msg.headers, SyscallResult))

        await nc.subscribe(kernel.ns.result(MALLORY, forged.id), cb=on_res)
        await nc.jetstream().publish(
            kernel.ns.sys("memory.get", MALLORY), encode(forged), headers={"Nats-Msg-Id": forged.id}
        )
        res = await asyncio.wait_for(got, 10)
        assert res.error is not None and res.error.code == "forbidden" and res.result is None
    finally:
        await nc.close()
