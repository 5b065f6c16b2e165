"""Access rules enforced by the scheduler at admission, from its copy of KV `AIOS_ACCESS`: a denied
call is `forbidden` naming the rule, an allow-list confines a group to its models, a revoked agent's
calls are `unauthenticated`; every decision is an audit event. (Real nats-server with auth, real
scheduler and llm services; the rules are written to KV as the access service writes them.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from aios_schemas import AccessRule, AgentAccess, AuditEvent, encode
from aios_sdk import AIOS, Forbidden, Unauthenticated
from tests.integration.conftest import MODEL
from tests.kernel import Kernel

MSGS = [{"role": "user", "content": "hi [sim:tokens=2]"}]


@pytest.fixture
async def access(kernel: Kernel) -> AsyncIterator[KeyValue]:
    nc = await nats.connect(kernel.nats_url)
    yield await nc.jetstream().key_value(kernel.ns.access_bucket)
    await nc.close()


class Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def on(self, msg: nats.aio.msg.Msg) -> None:
        self.events.append(AuditEvent.model_validate_json(msg.data))

    async def wait(self, pred: Callable[[AuditEvent], bool], timeout: float = 10.0) -> AuditEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no such audit event in {self.events}")


@pytest.fixture
async def audit(kernel: Kernel) -> AsyncIterator[Audit]:
    nc: NATS = await nats.connect(kernel.nats_url)
    a = Audit()
    await nc.subscribe(kernel.ns.audit("*"), cb=a.on)
    await nc.flush()
    yield a
    await nc.close()


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll `check` until true (the scheduler's copy of the rules follows KV through a watch)."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def put_rule(kv: KeyValue, **fields: str) -> AccessRule:
    rule = AccessRule.model_validate(fields)
    await kv.put(f"rule.{rule.id}", encode(rule))
    return rule


async def denied(aios: AIOS) -> bool:
    try:
        await aios.llm.chat(MODEL, MSGS)
    except Forbidden:
        return True
    return False


async def test_deny_rule_names_itself_and_is_audited(kernel: Kernel, access: KeyValue, audit: Audit) -> None:
    async with kernel.connect("agent-1") as a1, kernel.connect("agent-2") as a2:
        assert not await denied(a1)
        await put_rule(
            access,
            id="no-sim-1",
            who="agent:agent-1",
            action="llm.*",
            resource="llm.sim*",
            effect="deny",
            note="budget",
        )
        await until(lambda: denied(a1))
        with pytest.raises(Forbidden) as err:
            await a1.llm.chat(MODEL, MSGS)
        assert err.value.details["rule"] == "no-sim-1" and "budget" in str(err.value)
        assert not await denied(a2)  # a rule of agent-1 is not agent-2's
        evt = await audit.wait(lambda e: e.what == "denied" and e.rule == "no-sim-1")
        assert evt.agent == "agent-1" and evt.action == "llm.chat" and evt.resource == f"llm.{MODEL}"
        await access.delete("rule.no-sim-1")
        await until(lambda: _not(denied(a1)))


async def _not(x: Awaitable[bool]) -> bool:
    return not await x


async def test_group_allow_list(kernel: Kernel, access: KeyValue, audit: Audit) -> None:
    async with kernel.connect("agent-1") as a1, kernel.connect("agent-2") as a2:
        await access.put("agent.agent-1", encode(AgentAccess(name="agent-1", groups=["interns"])))
        await put_rule(
            access,
            id="interns-llm",
            who="group:interns",
            action="llm.*",
            resource="llm.tiny*",
            effect="allow",
        )
        await until(lambda: denied(a1))
        with pytest.raises(Forbidden) as err:
            await a1.llm.chat(MODEL, MSGS)
        assert err.value.details["rules"] == ["interns-llm"]
        assert not await denied(a2)  # not in the group
        # The group's list grows: the model is on it now, and its use is audited as allowed.
        await put_rule(
            access,
            id="interns-sim",
            who="group:interns",
            action="llm.chat",
            resource=f"llm.{MODEL}",
            effect="allow",
        )
        await until(lambda: _not(denied(a1)))
        await audit.wait(lambda e: e.what == "allowed" and e.rule == "interns-sim" and e.agent == "agent-1")


async def test_revoked_agent_is_unauthenticated(kernel: Kernel, access: KeyValue) -> None:
    """A revoked agent whose syscall reaches the stream anyway (published before the bus dropped it)."""
    async with kernel.connect("agent-3") as a3:
        await a3.llm.chat(MODEL, MSGS)
        await access.put("agent.agent-3", encode(AgentAccess(name="agent-3", revoked=True)))

        async def refused() -> bool:
            try:
                await a3.llm.chat(MODEL, MSGS)
            except Unauthenticated:
                return True
            return False

        await until(refused)
