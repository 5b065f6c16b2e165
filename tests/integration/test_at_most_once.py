"""A resource that runs at most once (a tool with side effects): a call sent again after its worker
died midway (a new worker, the same kept-replies bucket) is answered `backend_error`, not run a
second time; a resource without the flag runs it again (at least once); a finished run's kept
reply is still what a repeat gets."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from aios_schemas import Namespace, Syscall, ToolsCall, ToolsCallReply, new_id
from aios_schemas.envelope import ExecRequest
from aios_services.runtime import Bus
from aios_services.runtime.finished import FINISHED_TTL_S, FinishedRuns
from aios_services.runtime.worker import ResourceSpec, ResourceWorker


@pytest.fixture
async def kept(nats_url: str) -> AsyncIterator[tuple[Bus, FinishedRuns]]:
    """A bus in a fresh namespace and its kept-replies bucket (shared by every worker replica)."""
    ns = Namespace("t" + uuid.uuid4().hex[:12])
    bus = await Bus.open(nats_url, "test-at-most-once", ns)
    try:
        yield (
            bus,
            FinishedRuns(await bus.ensure_kv(ns.finished_bucket, ttl_s=FINISHED_TTL_S), ns.finished_bucket),
        )
    finally:
        await bus.nc.close()


def request(sid: str, *, again: bool) -> ExecRequest:
    call = Syscall(id=sid, agent="agent-1", payload=ToolsCall(name="mark", arguments={}))
    return ExecRequest(syscall=call, resource="tools.mark", deadline=time.time() + 30, again=again)


async def test_a_side_effecting_run_cut_off_midway_is_not_run_again(kept: tuple[Bus, FinishedRuns]) -> None:
    bus, finished = kept
    runs: list[str] = []
    forever = asyncio.Event()
    began = asyncio.Event()

    async def hangs(call: Syscall) -> ToolsCallReply:
        runs.append(call.id)
        began.set()
        await forever.wait()  # the worker dies before this returns
        raise AssertionError("unreachable")

    async def returns(call: Syscall) -> ToolsCallReply:
        runs.append(call.id)
        return ToolsCallReply(name="mark", output="done")

    once = ResourceSpec(service="tools", resource="tools.mark", at_most_once=True)
    sid = new_id()
    first = ResourceWorker(bus, once, hangs, finished)
    running = asyncio.ensure_future(first.exec(request(sid, again=False)))
    await began.wait()  # the run has started (its start is marked before the handler runs)
    running.cancel()  # its worker process is gone

    second = ResourceWorker(bus, once, returns, finished)  # the restarted service
    reply = await second.exec(request(sid, again=True))
    assert reply.result is not None and reply.result.error is not None
    assert reply.result.error.code == "backend_error" and reply.result.error.details["interrupted"]
    assert runs == [sid]  # not run a second time

    # Without the flag, a run cut off midway runs again (at least once).
    plain = ResourceSpec(service="tools", resource="tools.mark")
    other = new_id()
    cut = asyncio.ensure_future(ResourceWorker(bus, plain, hangs, finished).exec(request(other, again=False)))
    began.clear()
    await began.wait()
    cut.cancel()
    again = await ResourceWorker(bus, plain, returns, finished).exec(request(other, again=True))
    assert again.result is not None and again.result.error is None and runs.count(other) == 2

    # A finished at-most-once run: a repeat gets its kept reply, not an error.
    done_id = new_id()
    ok = await ResourceWorker(bus, once, returns, finished).exec(request(done_id, again=False))
    repeat = await ResourceWorker(bus, once, returns, finished).exec(request(done_id, again=True))
    assert repeat == ok and runs.count(done_id) == 1


async def test_a_duplicate_dispatch_without_again_does_not_run_twice(kept: tuple[Bus, FinishedRuns]) -> None:
    """A scheduler paused past its ack wait resumes and dispatches a call that another scheduler
    replica has since run: its request does not say `again` (for it, the first delivery), and
    another worker replica takes it. The kept reply answers it; the tool does not run again."""
    bus, finished = kept
    runs: list[str] = []
    release, began = asyncio.Event(), asyncio.Event()

    async def slow(call: Syscall) -> ToolsCallReply:
        runs.append(call.id)
        began.set()
        await release.wait()
        return ToolsCallReply(name="mark", output="done")

    once = ResourceSpec(service="tools", resource="tools.mark", at_most_once=True)
    sid = new_id()
    # While the first run is still going, on another replica: the duplicate waits for its reply.
    first = asyncio.ensure_future(ResourceWorker(bus, once, slow, finished).exec(request(sid, again=True)))
    await began.wait()
    duplicate = asyncio.ensure_future(
        ResourceWorker(bus, once, slow, finished).exec(request(sid, again=False))
    )
    await asyncio.sleep(0.3)
    assert not duplicate.done()
    release.set()
    assert await duplicate == await first
    # After it finished: answered at once from the kept reply.
    late = await ResourceWorker(bus, once, slow, finished).exec(request(sid, again=False))
    assert late == await first
    assert runs == [sid]
