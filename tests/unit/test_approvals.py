"""Holding a syscall for approval (scheduler/approvals.py): a decision the watch brings while the
scheduler is still writing or reading the call's approval entry applies to the call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError

from aios_schemas import AccessRule, Approval, LlmChat, Namespace, Syscall, SyscallResult, new_id
from aios_services.scheduler.access import AccessTable
from aios_services.scheduler.approvals import Approvals
from aios_services.scheduler.groups import Held
from aios_services.scheduler.policies import Job

RULE = AccessRule.model_validate(
    {"id": "ask", "who": "agent:a", "action": "llm.chat", "resource": "*", "effect": "approve"}
)


class FakeBus:
    ns = Namespace("t")

    def __init__(self) -> None:
        self.published: list[str] = []
        self.spawned: list[asyncio.Future[None]] = []

    def publish_soon(self, subject: str, data: bytes) -> None:
        self.published.append(subject)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.spawned.append(asyncio.ensure_future(coro))


class Entry:
    def __init__(self, value: bytes) -> None:
        self.value = value


class SlowKv:
    """An approval bucket whose answers come after `meanwhile` ran (what the watch delivers while
    the scheduler waits for the server). `existing`: the entry a crashed replica wrote."""

    def __init__(self, meanwhile: Callable[[], None], existing: Approval | None = None) -> None:
        self.meanwhile = meanwhile
        self.existing = existing

    async def create(self, key: str, value: bytes) -> int:
        self.meanwhile()
        if self.existing is not None:
            raise KeyWrongLastSequenceError
        return 1

    async def get(self, key: str) -> Entry:
        assert self.existing is not None
        self.meanwhile()
        return Entry(self.existing.model_dump_json().encode())


def held() -> Held:
    payload = LlmChat.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    call = Syscall(id=new_id(), agent="a", payload=payload, deadline=time.time() + 60)
    return Held(
        call=call,
        delivery=None,
        group="llm.m",
        service="llm",
        accepted=0.0,
        deadline=call.deadline or 0.0,
        job=Job(id=call.id, agent="a", program="a", arrival=0.0),
        approval=RULE,
    )


def pending(h: Held) -> Approval:
    return Approval(
        id=h.call.id,
        agent="a",
        kind="llm.chat",
        resource="llm.m",
        rule="ask",
        payload=h.call.payload.model_dump(mode="json"),
        deadline=h.deadline,
    )


def approvals(table: AccessTable, bus: FakeBus) -> tuple[Approvals, list[Held], list[SyscallResult]]:
    queued: list[Held] = []
    answered: list[SyscallResult] = []

    def complete(h: Held, res: SyscallResult) -> Awaitable[None]:
        async def done() -> None:
            answered.append(res)

        return done()

    return Approvals(bus, table, queued.append, complete), queued, answered  # type: ignore[arg-type]


async def test_a_decision_arriving_while_the_request_is_written_applies() -> None:
    """The operator saw the entry (KV) and approved before the scheduler heard back from its create."""
    table, h = AccessTable(), held()
    a, queued, answered = approvals(table, FakeBus())
    entry = pending(h)

    def watch_delivers() -> None:
        table.put_approval(entry)
        table.put_approval(entry.model_copy(update={"state": "approved", "decided_by": "op"}))

    a.kv = SlowKv(watch_delivers)  # type: ignore[assignment]
    await a.hold(h)
    assert queued == [h] and not answered and h.call.id not in a.pending
    assert table.approvals[h.call.id].state == "approved"  # not overwritten by the stale request


async def test_a_decision_arriving_while_a_restarted_scheduler_reads_the_request_applies() -> None:
    """Redelivered after a crash before the watch had the entry: its decision comes while it is read."""
    table, h, bus = AccessTable(), held(), FakeBus()
    a, queued, answered = approvals(table, bus)
    entry = pending(h)
    rejected = entry.model_copy(update={"state": "rejected", "reason": "no", "decided_by": "op"})
    calls: list[None] = []

    def watch_delivers() -> None:
        calls.append(None)
        if len(calls) == 2:  # during the read that follows the failed create
            table.put_approval(entry)
            table.put_approval(rejected)

    a.kv = SlowKv(watch_delivers, existing=entry)  # type: ignore[assignment]
    await a.hold(h)
    await asyncio.gather(*bus.spawned)  # the rejection is answered by a spawned task
    assert not queued and len(answered) == 1 and h.call.id not in a.pending
    assert answered[0].error is not None and answered[0].error.code == "approval_denied"
    assert "no" in answered[0].error.message
