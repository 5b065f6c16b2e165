"""The attack suite: an agent with a valid identity of its own (mallory) tries to reach what is another
agent's (alice's) or the kernel's, with what an agent process gets: the bus URL and its own token.
Every attempt must be refused (by the bus's permissions or by the kernel) and change nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import (
    CancelRequest,
    ChatReply,
    ControlRequest,
    LlmChat,
    ResultQuery,
    Syscall,
    SyscallResult,
    Usage,
    decode_reply,
    encode,
    new_id,
)
from aios_sdk import AIOS, Unauthenticated
from aios_sdk.config import without_credentials
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel
from tests.servers import auth_for

MODEL = "sim-llama-8b"
ALICE, MALLORY = "agent-a", "agent-b"


@dataclass
class Attacker:
    """A raw NATS client logged in as mallory, recording what the server refuses and what it hears."""

    nc: NATS
    errors: list[str] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)

    async def refused(self, what: str, before: int, timeout: float = 5.0) -> None:
        """The server reported a permissions violation about `what` (after `before` errors)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.nc.flush()
            if any(
                "permissions violation" in e.lower() and what.lower() in e.lower()
                for e in self.errors[before:]
            ):
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"no permissions violation for {what!r}: {self.errors[before:]}")

    async def on(self, msg: Msg) -> None:
        self.heard.append(msg.subject)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as s:
        yield s


@pytest.fixture
async def mallory(kernel: Kernel) -> AsyncIterator[Attacker]:
    attacker = Attacker(nc=NATS())

    async def on_error(exc: Exception) -> None:
        attacker.errors.append(str(exc))

    await attacker.nc.connect(
        without_credentials(kernel.nats_url),
        user=MALLORY,
        password=auth_for(kernel.nats_url).token(MALLORY),
        inbox_prefix=f"_INBOX.{MALLORY}",
        error_cb=on_error,
        allow_reconnect=False,
    )
    yield attacker
    await attacker.nc.close()


def chat(text: str, agent: str, **kw: object) -> Syscall:
    payload = LlmChat.model_validate({"model": MODEL, "messages": [{"role": "user", "content": text}]})
    return Syscall(
        id=str(kw.pop("id", new_id())), agent=agent, payload=payload, deadline=time.time() + 30, **kw
    )  # type: ignore[arg-type]


async def test_nobody_logs_in_as_another_agent_or_without_credentials(kernel: Kernel) -> None:
    tokens = auth_for(kernel.nats_url)
    with pytest.raises(Unauthenticated):  # mallory's token is not alice's password
        async with AIOS.connect(
            url=kernel.nats_url, agent=ALICE, token=tokens.token(MALLORY), namespace=kernel.ns.name
        ):
            pass
    for user, password in ((None, None), (ALICE, None), ("admin", tokens.token(MALLORY))):
        with pytest.raises(nats.errors.Error):
            await nats.connect(
                without_credentials(kernel.nats_url), user=user, password=password, allow_reconnect=False
            )


async def test_mallory_hears_nothing_of_alice_or_the_kernel(kernel: Kernel, mallory: Attacker) -> None:
    ns = kernel.ns
    tries = [
        ns.result(ALICE, "*"),
        ns.stream(ALICE, "*"),
        ns.sys_all,
        ns.events_all,
        ns.exec("llm") + ".>",
        ns.ctl("llm", "control"),
        ns.ctl("scheduler", ">"),
        f"_INBOX.{ALICE}.>",
        "_INBOX.>",
        f"$KV.{ns.results_bucket}.>",
        f"$KV.{ns.access_bucket}.>",  # rules, pending approvals and their arguments
        ns.ctl("access", ">"),
        ns.audit("*"),
        ">",
    ]
    for subject in tries:
        before = len(mallory.errors)
        await mallory.nc.subscribe(subject, cb=mallory.on)
        await mallory.refused(f'"{subject}"', before)
    async with (
        kernel.connect(agent=ALICE) as alice,
        alice.llm.stream(MODEL, [{"role": "user", "content": "secret plans [sim:tokens=20]"}]) as s,
    ):
        text = "".join([d async for d in s])
    assert text and mallory.heard == []


async def test_mallory_cannot_act_for_alice_or_as_the_kernel(
    kernel: Kernel, mallory: Attacker, sim: SimServer, nc: NATS
) -> None:
    ns = kernel.ns
    async with kernel.connect(agent=ALICE) as alice:
        sid = new_id()
        requests_before = sim.stats()["requests"]
        running = asyncio.create_task(
            alice.llm.chat(
                MODEL, [{"role": "user", "content": "long [sim:tokens=300]"}], id=sid, max_tokens=300
            )
        )
        kv = await nc.jetstream().key_value(ns.limits_bucket)
        catalogue = {k: (await kv.get(k)).value for k in await kv.keys()}

        attacks: list[tuple[str, bytes]] = [
            (ns.sys("llm.chat", ALICE), encode(chat("as alice", ALICE))),  # publish as alice
            (ns.exec("llm"), b"{}"),  # run something without the scheduler
            (ns.ctl("llm", "control"), encode(ControlRequest(id=sid, action="cancel"))),  # stop her call
            (ns.ctl("llm", "control"), encode(ControlRequest(id=sid, action="suspend"))),
            (ns.ctl_for("scheduler", "cancel", ALICE), encode(CancelRequest(id=sid, agent=ALICE))),
            (
                ns.result(ALICE, sid),
                encode(
                    SyscallResult.ok(
                        sid, ChatReply(model=MODEL, backend="x", content="forged", usage=Usage())
                    )
                ),
            ),
            (ns.ctl("scheduler", "health"), b"{}"),
            (f"$KV.{ns.limits_bucket}.model.evil", b"{}"),  # rewrite the catalogue
            # Grant itself what a rule denies, approve its own (or alice's) held calls, add itself
            # to a group, add an identity, forge an audit event.
            (f"$KV.{ns.access_bucket}.rule.evil", b"{}"),
            (f"$KV.{ns.access_bucket}.approval.{sid}", b"{}"),
            (f"$KV.{ns.access_bucket}.agent.{MALLORY}", b"{}"),
            (ns.ctl("access", "decide"), b'{"id": "%s", "approve": true}' % sid.encode()),
            (ns.ctl("access", "agent_add"), b'{"name": "evil"}'),
            (ns.ctl("access", "rule_rm"), b'{"id": "x"}'),
            (ns.audit("approved"), b"{}"),
            (f"$JS.API.STREAM.PURGE.{ns.syscalls_stream}", b""),  # drop everyone's syscalls
            (f"$JS.API.STREAM.INFO.{ns.syscalls_stream}", b""),
        ]
        for subject, data in attacks:
            before = len(mallory.errors)
            await mallory.nc.publish(subject, data)
            await mallory.refused(f'"{subject}"', before)

        # Through the kernel, on mallory's own subjects, claiming to be alice: forbidden.
        def ask(op: str, body: bytes) -> Awaitable[Msg]:
            return mallory.nc.request(ns.ctl_for("scheduler", op, MALLORY), body, timeout=5)

        for op, body in (
            ("cancel", encode(CancelRequest(id=sid, agent=ALICE))),
            ("result", encode(ResultQuery(id=sid, agent=ALICE))),
        ):
            reply = await ask(op, body)
            assert json.loads(reply.data)["code"] == "forbidden", reply.data
        # As herself, about alice's syscall: it does not exist for her.
        reply = await ask("cancel", encode(CancelRequest(id=sid, agent=MALLORY)))
        assert json.loads(reply.data)["code"] == "not_found"

        answer = await running  # alice's call ran to the end, untouched, with the true answer
        assert answer.content and answer.content != "forged" and answer.usage.completion_tokens == 300

        # A syscall on mallory's own subject whose body says alice: refused, answered to mallory only.
        got: asyncio.Future[SyscallResult] = asyncio.get_running_loop().create_future()
        forged = chat("as alice again", ALICE)

        async def on_res(msg: Msg) -> None:
            if not got.done():
                got.set_result(decode_reply(msg.data, msg.headers, SyscallResult))

        await mallory.nc.subscribe(ns.result(MALLORY, forged.id), cb=on_res)
        await mallory.nc.jetstream().publish(
            ns.sys("llm.chat", MALLORY), encode(forged), headers={"Nats-Msg-Id": forged.id}
        )
        refused = await asyncio.wait_for(got, 10)
        assert refused.error is not None and refused.error.code == "forbidden"

        # Replaying alice's finished id as mallory: a conflict, never alice's answer.
        replay = chat("long [sim:tokens=300]", MALLORY, id=sid)
        got = asyncio.get_running_loop().create_future()
        await mallory.nc.subscribe(ns.result(MALLORY, sid), cb=on_res)
        await mallory.nc.jetstream().publish(
            ns.sys("llm.chat", MALLORY), encode(replay), headers={"Nats-Msg-Id": "replay-1"}
        )
        res = await asyncio.wait_for(got, 10)
        assert res.error is not None and res.error.code == "conflict" and res.result is None

        stored = await alice.result(sid)
        assert stored is not None and stored.status == "ok"  # still alice's result
        # Nothing ran for mallory's attempts: only alice's one call reached the engine.
        assert sim.stats()["requests"] == requests_before + 1
        assert {k: (await kv.get(k)).value for k in await kv.keys()} == catalogue


async def test_no_secret_travels_past_the_agent(kernel: Kernel, nc: NATS) -> None:
    """The token is the agent's NATS password: it is in no syscall, stream message or exec request."""
    token = auth_for(kernel.nats_url).token(ALICE)
    seen: list[bytes] = []

    async def on(msg: Msg) -> None:
        seen.append(msg.data)

    await nc.subscribe(kernel.ns.exec("llm") + ".>", cb=on)
    await nc.subscribe(kernel.ns.exec("llm"), cb=on)
    await nc.subscribe(kernel.ns.sys_all, cb=on)
    await nc.flush()
    async with kernel.connect(agent=ALICE) as alice:
        await alice.llm.chat(MODEL, [{"role": "user", "content": "hi"}], max_tokens=5)
    assert any(b'"payload"' in d for d in seen)  # we did see the syscall and its exec request
    assert all(token.encode() not in d for d in seen)
