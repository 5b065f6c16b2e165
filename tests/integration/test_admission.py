"""Admission on real servers: quotas reserved before a call runs (concurrent calls cannot overshoot),
windowed quotas, and a syscall id reused for another request answered `conflict`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from aios_schemas import (
    AiosError,
    LlmChat,
    QuotaQuery,
    QuotaReply,
    Syscall,
    SyscallResult,
    decode_reply,
    encode,
)
from aios_sdk import Conflict, QuotaExceeded
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as s:
        yield s


def backends(sim: SimServer) -> dict[str, list[dict[str, object]]]:
    return {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_concurrent_calls_cannot_overshoot_a_calls_quota(
    nats_url: str, tmp_path: Path, sim: SimServer
) -> None:
    quotas = {"agent-1": {"calls": 5}}
    async with running_kernel(nats_url, tmp_path, backends(sim), quotas=quotas) as k, k.connect() as aios:
        outcomes = await asyncio.gather(
            *(aios.llm.chat(MODEL, ask(f"q{i}"), max_tokens=20) for i in range(12)), return_exceptions=True
        )
        ok = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
        # Reserved at admission: exactly the quota runs, whatever the timing.
        assert len(ok) == 5 and len(refused) == 7, outcomes
        async with k.connect(agent="agent-2") as other:  # another agent is not affected
            assert (await other.llm.chat(MODEL, ask("hi"), max_tokens=5)).content


async def test_windowed_quota_and_token_settlement(nats_url: str, tmp_path: Path, sim: SimServer) -> None:
    # A day window (a minute could roll over mid-test) besides a generous lifetime quota.
    quotas = {"agent-*": [{"calls": 100}, {"calls": 3, "per": "day"}]}
    async with running_kernel(nats_url, tmp_path, backends(sim), quotas=quotas) as k, k.connect() as aios:
        for i in range(3):
            await aios.llm.chat(MODEL, ask(f"q{i}"), max_tokens=10)
        with pytest.raises(QuotaExceeded) as exc:
            await aios.llm.chat(MODEL, ask("one more"), max_tokens=10)
        assert exc.value.details.get("per") == "day"
        assert "this day" in str(exc.value)


async def test_token_quota_is_settled_to_what_was_used(nats_url: str, tmp_path: Path, sim: SimServer) -> None:
    # Each call reserves ~max_tokens (1000) but uses ~10: settlement gives the rest back, so a
    # 1500-token budget serves more than one call.
    quotas = {"agent-1": {"tokens": 1500}}
    async with running_kernel(nats_url, tmp_path, backends(sim), quotas=quotas) as k, k.connect() as aios:
        for i in range(4):
            r = await aios.llm.chat(MODEL, ask(f"go {i} [sim:tokens=10]"), max_tokens=1000)
            assert r.usage.total_tokens < 100


async def publish_raw(nc: nats.NATS, k: Kernel, call: Syscall, msg_id: str) -> SyscallResult:
    """Publish a syscall as any client could, under its own Msg-Id, and wait for its answer."""
    got: asyncio.Future[SyscallResult] = asyncio.get_running_loop().create_future()

    async def on(msg: nats.aio.msg.Msg) -> None:
        res = SyscallResult.model_validate_json(msg.data)
        if res.request == call.digest() and not got.done():
            got.set_result(res)

    sub = await nc.subscribe(k.ns.result(call.agent, call.id), cb=on)
    try:
        await nc.jetstream().publish(
            k.ns.sys(call.kind, call.agent), encode(call), headers={"Nats-Msg-Id": msg_id}
        )
        return await asyncio.wait_for(got, 10)
    finally:
        await sub.unsubscribe()


async def test_an_id_reused_for_another_request_is_a_conflict(
    nats_url: str, tmp_path: Path, sim: SimServer, nc: nats.NATS
) -> None:
    async with running_kernel(nats_url, tmp_path, backends(sim)) as k, k.connect() as aios:
        sid = "reused-id-0001"
        first = await aios.llm.chat(MODEL, ask("first question"), max_tokens=10, id=sid)

        def raw(text: str, agent: str = "agent-1") -> Syscall:
            payload = LlmChat.model_validate({"model": MODEL, "messages": ask(text), "max_tokens": 10})
            return Syscall(id=sid, agent=agent, token=k.token, payload=payload, deadline=time.time() + 30)

        # Past JetStream's duplicate window (another Msg-Id): the scheduler itself sees the reuse.
        other = await publish_raw(nc, k, raw("another question"), "m-1")
        assert other.error is not None and other.error.code == "conflict"
        stranger = await publish_raw(nc, k, raw("first question", agent="agent-2"), "m-2")
        assert stranger.error is not None and stranger.error.code == "conflict"
        # The same request again is a replay: the stored answer, not a second run.
        replay = await publish_raw(nc, k, raw("first question"), "m-3")
        assert replay.status == "ok" and replay.result is not None
        assert replay.result.content == first.content  # type: ignore[union-attr]
        stored = await aios.result(sid)
        assert stored is not None and stored.status == "ok"  # the first call's result is untouched


async def test_the_sdk_reusing_an_id_for_another_request_gets_conflict(
    nats_url: str, tmp_path: Path, sim: SimServer
) -> None:
    async with running_kernel(nats_url, tmp_path, backends(sim)) as k, k.connect() as aios:
        sid = "reused-id-0002"
        first = await aios.llm.chat(MODEL, ask("first"), max_tokens=10, id=sid)
        # Within JetStream's duplicate window the second publish is dropped as a duplicate; the SDK
        # sees the answer belongs to another request.
        with pytest.raises(Conflict):
            await aios.llm.chat(MODEL, ask("second"), max_tokens=10, id=sid)
        again = await aios.llm.chat(MODEL, ask("first"), max_tokens=10, id=sid)  # a retry: same answer
        assert again.content == first.content


async def test_a_redelivered_syscall_is_not_charged_twice(nc: nats.NATS) -> None:
    import uuid

    from aios_services.scheduler.quotas import Quotas
    from aios_services.scheduler.settings import Quota

    kv = await nc.jetstream().create_key_value(bucket=f"q{uuid.uuid4().hex[:12]}")
    quotas = Quotas(kv, {"a-*": Quota(calls=10, tokens=1000)})
    first = await quotas.reserve("sys-00000001", "a-1", 100)
    again = await quotas.reserve("sys-00000001", "a-1", 100)  # redelivered after a crash
    assert again == first
    usage = await quotas.usage("a-1")
    assert (usage.calls, usage.tokens) == (1, 100)
    await quotas.settle(first, 30)
    usage = await quotas.usage("a-1")
    assert (usage.calls, usage.tokens) == (1, 30)
    await quotas.reserve("sys-00000001", "a-1", 100)  # settled: a later syscall with the id is new
    assert (await quotas.usage("a-1")).calls == 2


def v7_id(at: float) -> str:
    """A UUIDv7 made at unix time `at` (as a client whose clock says `at` would make it)."""
    import os
    import uuid

    value = (int(at * 1000) & ((1 << 48) - 1)) << 80 | 0x7 << 76 | 0b10 << 62
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


async def test_an_id_from_a_clock_far_ahead_is_refused(
    nats_url: str, tmp_path: Path, sim: SimServer, nc: nats.NATS
) -> None:
    # Fresh ids skip the stored-result lookup (admission.FRESH_S); that is safe only if no id can
    # be made far in the future: such an id is refused, and nothing is stored for it.
    async with running_kernel(nats_url, tmp_path, backends(sim)) as k:
        ahead = Syscall(
            id=v7_id(time.time() + 3600), agent="agent-1", payload=LlmChat(model=MODEL, messages=ask("hi"))
        )
        res = await publish_raw(nc, k, ahead, ahead.id)
        assert res.error is not None and res.error.code == "invalid_request"
        assert "clock" in res.error.message and 3500 < float(res.error.details["ahead_s"]) < 3700  # type: ignore[arg-type]
        # An id made an hour ago is looked up (not fresh) and runs; the same request again under
        # another Msg-Id (not de-duplicated by JetStream) is answered from the store, not run again.
        old = Syscall(
            id=v7_id(time.time() - 3600), agent="agent-1", payload=LlmChat(model=MODEL, messages=ask("hi"))
        )
        first = await publish_raw(nc, k, old, old.id)
        again = await publish_raw(nc, k, old, "another-msg-id")
        assert first.status == again.status == "ok" and first.result == again.result


async def test_jetstream_drops_a_fresh_id_published_again_after_it_was_answered(
    nats_url: str, tmp_path: Path, sim: SimServer, nc: nats.NATS
) -> None:
    # What admission's fast path relies on: within the duplicate window the stream drops a
    # re-published id even after the first message was acked and removed (work-queue retention).
    async with running_kernel(nats_url, tmp_path, backends(sim)) as k, k.connect() as aios:
        sid = v7_id(time.time())
        await aios.llm.chat(MODEL, ask("once"), max_tokens=5, id=sid)
        call = Syscall(id=sid, agent="agent-1", payload=LlmChat(model=MODEL, messages=ask("once")))
        ack = await nc.jetstream().publish(
            k.ns.sys(call.kind, call.agent), encode(call), headers={"Nats-Msg-Id": sid}
        )
        assert ack.duplicate


async def test_what_agents_have_left_of_their_quotas(
    nats_url: str, nc: nats.NATS, tmp_path: Path, sim: SimServer
) -> None:
    quotas = {"agent-1": [{"calls": 10}, {"calls": 5, "tokens": 100_000, "per": "day"}]}
    async with running_kernel(nats_url, tmp_path, backends(sim), quotas=quotas) as k, k.connect() as aios:
        for i in range(2):
            await aios.llm.chat(MODEL, ask(f"q{i}"), max_tokens=10)
        msg = await nc.request(
            k.ns.ctl("scheduler", "quotas"), encode(QuotaQuery(agents=["agent-1", "agent-2"])), timeout=5
        )
        left = decode_reply(msg.data, msg.headers, QuotaReply).agents
        lifetime, day = left["agent-1"]
        assert (lifetime.per, lifetime.calls, lifetime.calls_used, lifetime.tokens) == (
            "lifetime",
            10,
            2,
            None,
        )
        assert (day.per, day.calls, day.calls_used, day.tokens) == ("day", 5, 2, 100_000)
        assert 0 < day.tokens_used < 100_000
        assert left["agent-2"] == []  # no quota applies to it
        bad = await nc.request(k.ns.ctl("scheduler", "quotas"), b'{"agents": []}', timeout=5)
        with pytest.raises(AiosError) as exc:
            decode_reply(bad.data, bad.headers, QuotaReply)
        assert exc.value.code == "invalid_request"
