"""Approvals end to end: a rule with effect `approve` holds a syscall; the operator (through the access
service's `ctl.access.*`) approves it, approves it with edited arguments, rejects it with a reason, or
lets its deadline pass; a pending approval survives a scheduler restart; every decision is audited.
Real nats-server, scheduler, llm and access services; the agent uses the SDK and sees a syscall that
takes longer, or `approval_denied`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from aios_schemas import (
    AccessRule,
    AiosError,
    Approval,
    ApprovalDecide,
    ApprovalList,
    ApprovalListReply,
    AuditEvent,
    ChatReply,
    GroupAdd,
    Namespace,
    RuleAdd,
    decode_reply,
    encode,
)
from aios_sdk import AIOS, ApprovalDenied, Forbidden
from aios_services.access import main as access_main
from aios_services.access.settings import AccessSettings
from aios_services.runtime import ServiceSettings
from aios_services.runtime.service import Starter
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import ExtraService, Kernel, running_kernel

MODEL = "sim-llama-8b"
MSGS = [{"role": "user", "content": "delete everything [sim:tokens=2]"}]

T = TypeVar("T", bound=BaseModel)


def access_service(db: Path) -> ExtraService:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        s = AccessSettings(**common, access_db=db)  # type: ignore[arg-type]
        return s, lambda bus, st: access_main.start(bus, st, s)

    return make


async def ctl(nc: NATS, ns: Namespace, op: str, req: BaseModel, reply: type[T]) -> T:
    msg = await nc.request(ns.ctl("access", op), encode(req), timeout=10)
    return decode_reply(msg.data, msg.headers, reply)


class Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def on(self, msg: nats.aio.msg.Msg) -> None:
        self.events.append(AuditEvent.model_validate_json(msg.data))

    async def wait(self, pred: Callable[[AuditEvent], bool], timeout: float = 15.0) -> AuditEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if pred(e):
                    return e
            await asyncio.sleep(0.02)
        raise AssertionError(f"no such audit event in {self.events}")


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.5) as s:
        yield s


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[Kernel]:
    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    async with running_kernel(
        nats_url, tmp_path, models, extra={"access": access_service(tmp_path / "access.duckdb")}
    ) as k:
        yield k


@pytest.fixture
async def op(kernel: Kernel) -> AsyncIterator[NATS]:
    """The operator's connection (the kernel's credentials)."""
    nc = await nats.connect(kernel.nats_url)
    yield nc
    await nc.close()


@pytest.fixture
async def audit(kernel: Kernel, op: NATS) -> Audit:
    a = Audit()
    await op.subscribe(kernel.ns.audit("*"), cb=a.on)
    await op.flush()
    return a


async def require_approval(op: NATS, ns: Namespace, aios: AIOS, agent: str) -> None:
    """Agent `agent`'s chats need approval, from when the scheduler's copy has the rule (a deny rule
    added after it, on embeddings, shows when: the watch delivers in order)."""
    await ctl(
        op,
        ns,
        "rule_add",
        RuleAdd(
            id=f"ask-{agent}", who=f"agent:{agent}", action="llm.chat", effect="approve", note="irreversible"
        ),
        AccessRule,
    )
    await ctl(
        op,
        ns,
        "rule_add",
        RuleAdd(id=f"mark-{agent}", who=f"agent:{agent}", action="llm.embed", effect="deny"),
        AccessRule,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            await aios.llm.embed(MODEL, ["x"])
        except Forbidden:
            return
        except AiosError:
            pass
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def requested(audit: Audit, agent: str) -> str:
    evt = await audit.wait(lambda e: e.what == "approval_requested" and e.agent == agent)
    assert evt.rule == f"ask-{agent}" and evt.action == "llm.chat" and evt.syscall
    return evt.syscall


async def test_approve_edit_reject(kernel: Kernel, op: NATS, audit: Audit) -> None:
    ns = kernel.ns
    async with kernel.connect("agent-1") as aios:
        await require_approval(op, ns, aios, "agent-1")

        # Approved as is: the agent gets its result, later.
        call = asyncio.create_task(aios.llm.chat(MODEL, MSGS))
        sid = await requested(audit, "agent-1")
        waiting = await ctl(op, ns, "approvals", ApprovalList(), ApprovalListReply)
        mine = [a for a in waiting.approvals if a.id == sid]
        assert mine and mine[0].payload["messages"][0]["content"] == MSGS[0]["content"]  # type: ignore[index,call-overload]
        assert not call.done()
        await ctl(op, ns, "decide", ApprovalDecide(id=sid, approve=True, by="alice-op"), Approval)
        reply = await call
        assert isinstance(reply, ChatReply) and reply.usage.completion_tokens == 2
        assert (await audit.wait(lambda e: e.what == "approved" and e.syscall == sid)).actor == "alice-op"

        # Edited: invalid arguments are refused (the call still waits), valid ones replace the agent's.
        call = asyncio.create_task(aios.llm.chat(MODEL, MSGS))
        sid = await _next_request(audit, "agent-1", {sid})
        with pytest.raises(AiosError) as bad:
            await ctl(
                op, ns, "decide", ApprovalDecide(id=sid, approve=True, args={"messages": "no"}), Approval
            )
        assert bad.value.code == "invalid_request"
        edited = {"model": MODEL, "messages": [{"role": "user", "content": "something safe [sim:tokens=5]"}]}
        await ctl(op, ns, "decide", ApprovalDecide(id=sid, approve=True, args=edited), Approval)
        reply = await call
        assert isinstance(reply, ChatReply) and reply.usage.completion_tokens == 5
        evt = await audit.wait(lambda e: e.what == "edited" and e.syscall == sid)
        assert evt.details["args"] == edited

        # Rejected with a reason: approval_denied, the reason in it; deciding twice is a conflict.
        call = asyncio.create_task(aios.llm.chat(MODEL, MSGS))
        sid3 = await _next_request(audit, "agent-1", {sid, *(e.syscall for e in audit.events if e.syscall)})
        with pytest.raises(AiosError) as no_reason:
            await ctl(op, ns, "decide", ApprovalDecide(id=sid3, approve=False), Approval)
        assert no_reason.value.code == "invalid_request"
        await ctl(op, ns, "decide", ApprovalDecide(id=sid3, approve=False, reason="too risky"), Approval)
        with pytest.raises(ApprovalDenied, match="too risky"):
            await call
        with pytest.raises(AiosError) as twice:
            await ctl(op, ns, "decide", ApprovalDecide(id=sid3, approve=True), Approval)
        assert twice.value.code in ("conflict", "not_found")
        assert (await audit.wait(lambda e: e.what == "rejected" and e.syscall == sid3)).why == "too risky"


async def _next_request(audit: Audit, agent: str, seen: set[str]) -> str:
    evt = await audit.wait(
        lambda e: e.what == "approval_requested" and e.agent == agent and e.syscall not in seen
    )
    assert evt.syscall
    return evt.syscall


async def test_no_decision_by_the_deadline_is_denied(kernel: Kernel, op: NATS, audit: Audit) -> None:
    async with kernel.connect("agent-2") as aios:
        await require_approval(op, kernel.ns, aios, "agent-2")
        with pytest.raises(ApprovalDenied):
            await aios.llm.chat(MODEL, MSGS, timeout=1.0)
        evt = await audit.wait(lambda e: e.what == "expired" and e.agent == "agent-2")
        assert evt.rule == "ask-agent-2"
        left = await ctl(op, kernel.ns, "approvals", ApprovalList(), ApprovalListReply)
        assert all(a.agent != "agent-2" for a in left.approvals)


async def test_other_agents_cannot_decide_or_see_approvals(kernel: Kernel) -> None:
    """An agent's NATS user may not reach `ctl.access.*` at all (the operator's subjects)."""
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    from aios_sdk.config import without_credentials
    from tests.servers import auth_for

    nc = await nats.connect(
        without_credentials(kernel.nats_url),
        user="agent-b",
        password=auth_for(kernel.nats_url).token("agent-b"),
        error_cb=on_error,
        allow_reconnect=False,
    )
    try:
        for op_name, req in (
            ("approvals", ApprovalList()),
            ("decide", ApprovalDecide(id="0" * 16, approve=True)),
            ("group_add", GroupAdd(name="mine")),
        ):
            with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
                await nc.request(kernel.ns.ctl("access", op_name), encode(req), timeout=0.5)
        await nc.flush()
        assert any("permissions violation" in e.lower() for e in errors)
    finally:
        await nc.close()


def start_scheduler(k: Kernel, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "AIOS_NATS_URL": k.nats_url, "AIOS_NAMESPACE": k.ns.name, "AIOS_ACK_WAIT_S": "1.5"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aios_services.scheduler"], env=env, stdout=out, stderr=out
        )


async def test_pending_approval_survives_a_scheduler_restart(
    nats_url: str, tmp_path: Path, sim: SimServer
) -> None:
    from aios_services.cli.procs import service_probe

    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    extra = {"access": access_service(tmp_path / "access.duckdb")}
    async with running_kernel(nats_url, tmp_path, models, services=("llm",), extra=extra) as k:
        op = await nats.connect(k.nats_url)
        audit = Audit()
        await op.subscribe(k.ns.audit("*"), cb=audit.on)
        procs = [start_scheduler(k, tmp_path / "scheduler1.log")]
        try:
            probe = service_probe(k.nats_url, k.ns, "scheduler")
            while not await probe():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            async with k.connect("agent-3") as aios:
                await require_approval(op, k.ns, aios, "agent-3")
                call = asyncio.create_task(aios.llm.chat(MODEL, MSGS, timeout=60))
                sid = await requested(audit, "agent-3")
                procs[0].send_signal(signal.SIGKILL)  # dies holding it
                procs[0].wait()
                procs.append(start_scheduler(k, tmp_path / "scheduler2.log"))
                # Still waiting for a decision after the restart: the new scheduler holds it again.
                waiting = await ctl(op, k.ns, "approvals", ApprovalList(), ApprovalListReply)
                assert [a.id for a in waiting.approvals] == [sid]
                while not await probe():  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await ctl(op, k.ns, "decide", ApprovalDecide(id=sid, approve=True), Approval)
                reply = await call
                assert isinstance(reply, ChatReply)
                # Asked once: the restarted scheduler found the request, it did not ask again.
                assert sum(e.what == "approval_requested" and e.syscall == sid for e in audit.events) == 1
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=15)
            await op.close()


async def test_a_resource_flagged_requires_approval_waits_for_the_operator(
    kernel: Kernel, op: NATS, audit: Audit
) -> None:
    """A worker service's catalogue entry says each call needs approval (the tools service does so
    for tools configured `requires_approval`): no rule needed. Here no memory worker runs: the call
    is decided before it would be queued."""
    from aios_schemas import BackendEntry, ResourceEntry, resource_key

    js = op.jetstream()
    limits = await js.key_value(kernel.ns.limits_bucket)
    entry = ResourceEntry(
        name="memory",
        service="memory",
        lanes=[BackendEntry(name="local", slots=1)],
        replica="fake",
        ts=time.time(),
        requires_approval=True,
    )
    await limits.put(resource_key("memory", "fake"), encode(entry))
    async with kernel.connect("agent-1") as aios:
        call = asyncio.create_task(aios.memory.add("remember this"))
        evt = await audit.wait(lambda e: e.what == "approval_requested" and e.resource == "memory")
        assert evt.rule == "requires-approval" and evt.syscall
        await ctl(
            op, kernel.ns, "decide", ApprovalDecide(id=evt.syscall, approve=False, reason="no"), Approval
        )
        with pytest.raises(ApprovalDenied):
            await call


async def test_another_agent_reusing_a_held_id_changes_nothing(
    kernel: Kernel, op: NATS, audit: Audit
) -> None:
    """Mallory replays the id of alice's call held for approval, with her own arguments: `conflict`,
    answered to her alone; alice's request, its arguments and its approval stay as they were."""
    from aios_schemas import LlmChat, Syscall, SyscallResult
    from aios_sdk.config import without_credentials
    from tests.servers import auth_for

    ns = kernel.ns
    async with kernel.connect("agent-a") as alice:
        await require_approval(op, ns, alice, "agent-a")
        call = asyncio.create_task(alice.llm.chat(MODEL, MSGS))
        sid = await requested(audit, "agent-a")
        mallory = await nats.connect(
            without_credentials(kernel.nats_url),
            user="agent-b",
            password=auth_for(kernel.nats_url).token("agent-b"),
            inbox_prefix="_INBOX.agent-b",
        )
        try:
            got: asyncio.Future[SyscallResult] = asyncio.get_running_loop().create_future()

            async def on_res(msg: nats.aio.msg.Msg) -> None:
                if not got.done():
                    got.set_result(decode_reply(msg.data, msg.headers, SyscallResult))

            await mallory.subscribe(ns.result("agent-b", sid), cb=on_res)
            payload = LlmChat.model_validate(
                {"model": MODEL, "messages": [{"role": "user", "content": "rm -rf"}]}
            )
            forged = Syscall(id=sid, agent="agent-b", payload=payload, deadline=time.time() + 30)
            await mallory.jetstream().publish(
                ns.sys("llm.chat", "agent-b"), encode(forged), headers={"Nats-Msg-Id": "m-1"}
            )
            res = await asyncio.wait_for(got, 10)
            assert res.error is not None and res.error.code == "conflict"
        finally:
            await mallory.close()
        waiting = await ctl(op, ns, "approvals", ApprovalList(), ApprovalListReply)
        mine = [a for a in waiting.approvals if a.id == sid]
        assert len(mine) == 1 and mine[0].agent == "agent-a"
        assert mine[0].payload["messages"][0]["content"] == MSGS[0]["content"]  # type: ignore[index,call-overload]
        await ctl(op, ns, "decide", ApprovalDecide(id=sid, approve=True), Approval)
        reply = await call
        assert isinstance(reply, ChatReply) and reply.usage.completion_tokens == 2


async def test_groups_of_a_configured_agent(kernel: Kernel, op: NATS, audit: Audit) -> None:
    """An agent of the deployment's config (not added at run time) joins a group; the group's rule
    applies to it from then on, and no longer once it leaves."""
    from aios_schemas import AgentAccess, AgentGroups, GroupAdd, GroupInfo

    ns = kernel.ns
    await ctl(op, ns, "group_add", GroupAdd(name="no-llm"), GroupInfo)
    await ctl(
        op,
        ns,
        "rule_add",
        RuleAdd(id="g-deny", who="group:no-llm", action="llm.*", effect="deny"),
        AccessRule,
    )
    with pytest.raises(AiosError) as missing:
        await ctl(op, ns, "agent_groups", AgentGroups(name="agent-free", groups=["nope"]), AgentAccess)
    assert missing.value.code == "not_found"
    async with kernel.connect("agent-free") as a:
        await a.llm.chat(MODEL, MSGS)
        await ctl(op, ns, "agent_groups", AgentGroups(name="agent-free", groups=["no-llm"]), AgentAccess)
        await audit.wait(lambda e: e.what == "agent_groups" and e.agent == "agent-free")

        async def denied() -> bool:
            try:
                await a.llm.chat(MODEL, MSGS)
            except Forbidden:
                return True
            return False

        deadline = time.monotonic() + 10
        while not await denied():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await ctl(op, ns, "agent_groups", AgentGroups(name="agent-free", groups=[]), AgentAccess)
        while await denied():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
