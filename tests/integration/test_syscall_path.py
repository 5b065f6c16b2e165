"""The first vertical slice, on real servers: SDK -> JetStream -> scheduler -> llm -> simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from openai import AsyncOpenAI

from aios_schemas import LlmChat, Syscall, SyscallResult, decode_reply, new_id
from aios_sdk import AIOS, BackendUnavailable, DeadlineExceeded, InvalidRequest, NotFound, Unauthenticated
from aios_services.cli.procs import free_port
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.5) as s:
        yield s


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[Kernel]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    models = {
        MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 16}],
        "dead-model": [{"name": "dead", "base_url": dead, "slots": 2, "timeout_s": 5.0}],
        "sim-embed": [{"kind": "embedding"}, {"name": "sim-e", "base_url": sim.base_url, "slots": 4}],
    }
    async with running_kernel(nats_url, tmp_path, models) as k:
        yield k


async def test_chat_roundtrip_matches_direct_call(kernel: Kernel, sim: SimServer) -> None:
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="x")
    expected = await direct.chat.completions.create(
        model=MODEL, messages=HELLO, temperature=0.3, max_tokens=40, seed=7
    )  # type: ignore[arg-type]
    async with kernel.connect() as aios:
        reply = await aios.llm.chat(MODEL, HELLO, temperature=0.3, max_tokens=40, seed=7)
    assert reply.content == expected.choices[0].message.content
    assert reply.usage.completion_tokens > 0 and reply.usage.prompt_tokens > 0
    assert reply.backend == "sim"
    seen = sim.stats()["recent_requests"]
    assert isinstance(seen, list)
    last = seen[-1]
    assert isinstance(last, dict)
    assert last["temperature"] == 0.3 and last["max_tokens"] == 40 and last["seed"] == 7


async def test_concurrent_calls_each_answered_to_their_caller(kernel: Kernel, sim: SimServer) -> None:
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="x")
    prompts = [[{"role": "user", "content": f"question number {i}"}] for i in range(40)]
    expected = await asyncio.gather(
        *(direct.chat.completions.create(model=MODEL, messages=p) for p in prompts)  # type: ignore[arg-type]
    )
    async with kernel.connect() as aios:
        replies = await asyncio.gather(*(aios.llm.chat(MODEL, p) for p in prompts))
    assert [r.content for r in replies] == [e.choices[0].message.content for e in expected]
    assert len({r.content for r in replies}) > 30  # the prompts really differ


async def test_streaming_chunks_add_up_to_the_reply(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        full = await aios.llm.chat(MODEL, HELLO)
        async with aios.llm.stream(MODEL, HELLO) as stream:
            deltas = [d async for d in stream]
    assert len(deltas) > 3
    assert "".join(deltas) == full.content
    assert stream.reply is not None and stream.reply.content == full.content


async def test_unknown_model_is_not_found(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(NotFound) as info:
            await aios.llm.chat("no-such-model", HELLO, timeout=10)
    assert info.value.code == "not_found"


async def test_dead_backend_is_backend_unavailable_not_a_hang(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(BackendUnavailable):
            await aios.llm.chat("dead-model", HELLO, timeout=20)


async def test_bad_arguments_are_rejected_by_the_sdk(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        with pytest.raises(InvalidRequest) as info:
            await aios.llm.chat(MODEL, HELLO, temperature=7.0)
    assert "temperature" in info.value.message


async def test_bad_payload_on_the_bus_gets_invalid_request(kernel: Kernel, nc: nats.NATS) -> None:
    """A client in another language publishes a malformed syscall: it gets a typed error back."""
    sid = new_id()
    body = {
        "id": sid,
        "agent": "agent-1",
        "token": kernel.token,
        "payload": {"kind": "llm.chat", "model": MODEL, "messages": [], "temperature": 9},
    }
    sub = await nc.subscribe(kernel.ns.result("agent-1", sid))
    await nc.jetstream().publish(
        kernel.ns.sys("llm.chat", "agent-1"), json.dumps(body).encode(), headers={"Nats-Msg-Id": sid}
    )
    msg = await sub.next_msg(timeout=10)
    res = decode_reply(msg.data, msg.headers, SyscallResult)
    assert res.status == "error" and res.error is not None
    assert res.error.code == "invalid_request"
    assert "messages" in res.error.message or "temperature" in res.error.message


async def test_unknown_token_or_agent_is_unauthenticated_at_once(kernel: Kernel) -> None:
    # The bus itself refuses the connection: no retrying until the connect timeout.
    for agent, token in (("agent-1", "wrong"), ("nobody", kernel.token)):
        with pytest.raises(Unauthenticated):
            async with AIOS.connect(
                url=kernel.nats_url, token=token, agent=agent, namespace=kernel.ns.name, connect_timeout=30
            ):
                pass


async def test_result_can_be_fetched_by_id_and_only_by_its_agent(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        sid = new_id()
        payload = LlmChat.model_validate({"model": MODEL, "messages": HELLO})
        reply = await aios.syscall(payload, id=sid)
        stored = await aios.result(sid)
        assert stored is not None and stored.result == reply
    async with kernel.connect(agent="agent-2") as other:
        assert await other.result(sid) is None


async def test_redelivered_syscall_is_answered_from_results_not_rerun(
    kernel: Kernel, sim: SimServer, nc: nats.NATS
) -> None:
    async with kernel.connect() as aios:
        sid = new_id()
        payload = LlmChat.model_validate({"model": MODEL, "messages": HELLO})
        first = await aios.syscall(payload, id=sid)
    runs = sim.stats()["requests"]
    # Publish the same syscall again under another Msg-Id (as a redelivery would bring it back).
    call = Syscall(id=sid, agent="agent-1", token=kernel.token, payload=payload)
    sub = await nc.subscribe(kernel.ns.result("agent-1", sid))
    await nc.jetstream().publish(
        kernel.ns.sys("llm.chat", "agent-1"),
        call.model_dump_json().encode(),
        headers={"Nats-Msg-Id": sid + "-again"},
    )
    msg = await sub.next_msg(timeout=10)
    again = decode_reply(msg.data, msg.headers, SyscallResult)
    assert again.result == first
    assert sim.stats()["requests"] == runs


async def test_syscall_waits_for_a_worker_until_its_deadline(
    nats_url: str, tmp_path: Path, sim: SimServer
) -> None:
    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    async with running_kernel(nats_url, tmp_path, models, services=("scheduler",)) as k, k.connect() as aios:
        with pytest.raises(DeadlineExceeded):
            await aios.llm.chat(MODEL, HELLO, timeout=1.0)


async def test_embeddings_through_the_kernel(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        reply = await aios.llm.embed("sim-embed", ["a cat", "a dog", "a cat"])
        with pytest.raises(InvalidRequest):  # a chat model does not embed
            await aios.llm.embed(MODEL, ["x"], timeout=10)
    assert len(reply.vectors) == 3 and reply.vectors[0] == reply.vectors[2] != reply.vectors[1]
    assert reply.usage.prompt_tokens > 0
