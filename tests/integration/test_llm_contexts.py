"""Context switching on the simulator: a generation suspended at several points and resumed gives
exactly the text of an uninterrupted run, with or without the agent streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_schemas import ChatReply, ExecReply, LlmChat
from aios_services.sim.runner import SimServer, run_sim
from tests.integration.test_llm_harness import (
    LlmService,
    chat,
    llm_service,
    wait_for,
)
from tests.kernel import backend_toml, model_toml

SIM_MODEL = "sim-llama-8b"
LONG = "[sim:tokens=300] Tell me everything."


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    # 2 ms per token: 0.6 s for 300 tokens, long enough to suspend it mid-way several times.
    async with run_sim("fixed", models=(SIM_MODEL,), decode_ms=2.0) as s:
        yield s


@pytest.fixture
async def llm(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[LlmService]:
    config = model_toml(
        "m",
        backend_toml("sim-cont", sim.base_url, model=SIM_MODEL, capabilities={"continue_partial": True}),
        backend_toml("sim-plain", sim.base_url, model=SIM_MODEL),
    )
    async with llm_service(nats_url, tmp_path, config) as svc:
        yield svc


def generated(sim: SimServer) -> int:
    n = sim.stats()["generated_tokens"]
    assert isinstance(n, int)
    return n


def done(reply: ExecReply) -> ChatReply:
    assert reply.outcome == "done" and reply.result and isinstance(reply.result.result, ChatReply), reply
    return reply.result.result


async def suspend_after(
    llm: LlmService, sim: SimServer, req_id: str, pending: asyncio.Future[ExecReply], k: int
) -> ExecReply:
    """Let the backend generate `k` more tokens, then suspend the run; its reply."""
    start = generated(sim)
    await wait_for(lambda: generated(sim) >= start + k or pending.done(), what=f"{k} tokens")
    assert not pending.done(), "the run finished before it could be suspended"
    await llm.control(req_id, "suspend")
    return await pending


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("max_tokens", [None, 120])
async def test_suspended_and_resumed_equals_uninterrupted(
    llm: LlmService, sim: SimServer, stream: bool, max_tokens: int | None
) -> None:
    payload = chat(LONG, stream=stream, max_tokens=max_tokens)
    reference = done(await llm.exec(payload.model_copy(update={"stream": False})))
    assert reference.finish_reason == ("length" if max_tokens else "stop")

    first = llm.request(payload, preemptible=True)
    sid = first.syscall.id
    chunks = await llm.chunks(sid)
    partials: list[str] = []
    req = first
    for i, k in enumerate((10, 40, 25)):
        reply = await suspend_after(llm, sim, sid, asyncio.ensure_future(llm.send(req)), k)
        assert reply.outcome == "suspended" and reply.result is None
        assert reply.usage.completion_tokens > 0
        snap = await llm.snapshot(sid)
        assert snap is not None and snap.suspensions == i + 1 and snap.backend == "sim-cont"
        assert reference.content and reference.content.startswith(snap.partial)
        partials.append(snap.partial)
        if stream:
            assert snap.chunks == len(chunks.items) and chunks.text == snap.partial
        req = llm.request(payload, id=sid, preemptible=True, resume=True, backend="sim-cont")
    assert len(partials[0]) < len(partials[1]) < len(partials[2]) < len(reference.content or "")

    final = done(await llm.send(req))
    assert final.content == reference.content
    assert final.finish_reason == reference.finish_reason
    # Every token was generated once: what the suspended runs streamed plus the continuation.
    assert final.usage.completion_tokens == reference.usage.completion_tokens
    assert await llm.snapshot(sid) is None  # deleted once the syscall completed
    if stream:
        await wait_for(lambda: chunks.done, what="the done chunk")
        assert [c.seq for c in chunks.items] == list(range(len(chunks.items)))
        assert chunks.text == final.content
    body = sim.stats()["recent_requests"][-1]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["messages"][-1] == {"role": "assistant", "content": partials[-1]}
    if max_tokens:
        assert body["max_tokens"] < max_tokens


async def test_preemptible_run_streams_internally_but_not_to_the_agent(
    llm: LlmService, sim: SimServer
) -> None:
    req = llm.request(chat("hello"), preemptible=True)
    chunks = await llm.chunks(req.syscall.id)
    reply = done(await llm.send(req))
    assert reply.content and reply.usage.completion_tokens > 0
    assert sim.stats()["recent_requests"][-1]["stream"] is True
    assert chunks.items == []


async def test_suspend_of_a_not_preemptible_run_is_ignored(llm: LlmService, sim: SimServer) -> None:
    req = llm.request(chat("[sim:tokens=100] go"))
    pending = asyncio.ensure_future(llm.send(req))
    await wait_for(lambda: sim.stats()["running"] == 1, what="the run to start")
    await llm.control(req.syscall.id, "suspend")
    assert done(await pending).usage.completion_tokens == 100


async def test_resume_needs_a_backend_that_continues(llm: LlmService, sim: SimServer) -> None:
    first = llm.request(chat(LONG), preemptible=True)
    sid = first.syscall.id
    reply = await suspend_after(llm, sim, sid, asyncio.ensure_future(llm.send(first)), 20)
    assert reply.outcome == "suspended"
    again = await llm.send(llm.request(chat(LONG), id=sid, resume=True, backend="sim-plain"))
    assert again.result and again.result.error and again.result.error.code == "invalid_request"
    assert again.result.error.details["backend"] == "sim-plain"


async def test_resume_without_a_snapshot_is_not_found(llm: LlmService) -> None:
    reply = await llm.exec(chat("hi"), resume=True)
    assert reply.result and reply.result.error and reply.result.error.code == "not_found"


async def test_cancel_of_a_resumed_run_deletes_the_snapshot(llm: LlmService, sim: SimServer) -> None:
    payload: LlmChat = chat(LONG, stream=True)
    first = llm.request(payload, preemptible=True)
    sid = first.syscall.id
    assert (
        await suspend_after(llm, sim, sid, asyncio.ensure_future(llm.send(first)), 20)
    ).outcome == "suspended"
    assert await llm.snapshot(sid) is not None
    resumed = asyncio.ensure_future(llm.send(llm.request(payload, id=sid, preemptible=True, resume=True)))
    start = generated(sim)
    await wait_for(lambda: generated(sim) >= start + 10, what="the resumed run to progress")
    await llm.control(sid, "cancel")
    reply = await resumed
    assert reply.result and reply.result.error and reply.result.error.code == "cancelled"
    assert await llm.snapshot(sid) is None
    await wait_for(lambda: sim.stats()["running"] == 0, what="the simulator to drop the request")


async def test_a_suspend_before_the_first_token_waits_for_output(nats_url: str, tmp_path: Path) -> None:
    """A run cut before its first new token would have paid for a context switch (its request, the
    engine's prefill) for nothing; resumed and cut again the same way, it would never progress. A
    suspend that arrives that early takes effect only once the run has produced output."""
    async with run_sim("fixed", models=(SIM_MODEL,), decode_ms=2.0, ttft_ms=500.0) as slow:
        config = model_toml(
            "m",
            backend_toml("sim-cont", slow.base_url, model=SIM_MODEL, capabilities={"continue_partial": True}),
        )
        async with llm_service(nats_url, tmp_path, config) as svc:
            payload = chat(LONG)
            reference = done(await svc.exec(payload))
            req = svc.request(payload, preemptible=True)
            asked = slow.stats()["requests"]
            assert isinstance(asked, int)
            pending = asyncio.ensure_future(svc.send(req))
            await wait_for(lambda: slow.stats()["requests"] == asked + 1, what="the backend call")
            before = generated(slow)
            await svc.control(req.syscall.id, "suspend")  # within the 0.5 s before the first token
            reply = await pending
            assert reply.outcome == "suspended" and reply.usage.completion_tokens > 0
            snap = await svc.snapshot(req.syscall.id)
            assert snap is not None and snap.partial and reference.content
            assert reference.content.startswith(snap.partial)
            assert generated(slow) > before
