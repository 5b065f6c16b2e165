"""The simulator over real HTTP (run_sim on a free loopback port), with the openai client and httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageFunctionToolCall

from aios_services.sim.runner import SimServer, run_sim
from tests.unit.test_sim_engine import assert_valid

MODEL = "sim-llama-8b"
USER = [{"role": "user", "content": "Tell me about schedulers."}]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", decode_ms=0.2) as s:
        yield s


def client(sim: SimServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)


async def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll a condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.005)


async def chat(c: AsyncOpenAI, **kwargs: Any) -> ChatCompletion:
    """Untyped request bodies (plain dicts), as a kernel would forward them."""
    reply: ChatCompletion = await c.chat.completions.create(**kwargs)
    return reply


async def stream_chat(c: AsyncOpenAI, **kwargs: Any) -> AsyncStream[ChatCompletionChunk]:
    stream: AsyncStream[ChatCompletionChunk] = await c.chat.completions.create(stream=True, **kwargs)
    return stream


def waiting_count_is(sim: SimServer, n: int) -> Callable[[], bool]:
    return lambda: sim.stats()["waiting"] == n


async def stream_pieces(c: AsyncOpenAI, **kwargs: Any) -> tuple[list[str], Any]:
    """Content deltas of a streamed answer, and its usage chunk."""
    pieces: list[str] = []
    usage = None
    stream = await stream_chat(c, stream_options={"include_usage": True}, **kwargs)
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return pieces, usage


async def test_answers_are_deterministic_and_always_report_usage(sim: SimServer) -> None:
    c = client(sim)
    a = await chat(c, model=MODEL, messages=USER, seed=3)
    b = await chat(c, model=MODEL, messages=USER, seed=3)
    other = await chat(c, model=MODEL, messages=USER, seed=4)
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.choices[0].message.content != other.choices[0].message.content
    assert a.usage is not None and a.usage.prompt_tokens > 0 and a.usage.completion_tokens > 0
    pieces, usage = await stream_pieces(c, model=MODEL, messages=USER, seed=3)
    assert "".join(pieces) == a.choices[0].message.content
    assert usage is not None and usage.completion_tokens == a.usage.completion_tokens == len(pieces)


async def test_length_directive_ignore_eos_and_max_tokens(sim: SimServer) -> None:
    c = client(sim)
    forced = [{"role": "user", "content": "write [sim:tokens=37]"}]
    r = await chat(c, model=MODEL, messages=forced)
    assert r.usage is not None and r.usage.completion_tokens == 37 and r.choices[0].finish_reason == "stop"
    r = await chat(
        c,
        model=MODEL,
        messages=USER,
        max_tokens=300,
        extra_body={"ignore_eos": True},
    )
    assert r.usage is not None and r.usage.completion_tokens == 300 and r.choices[0].finish_reason == "length"
    r = await chat(c, model=MODEL, messages=forced, max_tokens=5)
    assert r.usage is not None and r.usage.completion_tokens == 5 and r.choices[0].finish_reason == "length"


async def test_continuing_a_partial_answer_completes_it_exactly(sim: SimServer) -> None:
    c = client(sim)
    ask = [{"role": "user", "content": "A long story please [sim:tokens=60]"}]
    pieces, _ = await stream_pieces(c, model=MODEL, messages=ask)
    full = "".join(pieces)
    for cut in (1, 2, 17, 30, 59):  # cut at streamed chunk boundaries
        partial = "".join(pieces[:cut])
        messages = [*ask, {"role": "assistant", "content": partial}]
        extra = {"continue_final_message": True, "add_generation_prompt": False}
        r = await chat(c, model=MODEL, messages=messages, extra_body=extra)
        assert partial + (r.choices[0].message.content or "") == full
        assert r.usage is not None and r.usage.completion_tokens == 60 - cut
        rest, _ = await stream_pieces(c, model=MODEL, messages=messages, extra_body=extra)
        assert partial + "".join(rest) == full
    # A cut inside a chunk still continues from the exact character.
    messages = [*ask, {"role": "assistant", "content": full[:101]}]
    r = await chat(
        c,
        model=MODEL,
        messages=messages,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    assert full[:101] + (r.choices[0].message.content or "") == full


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "hourly": {"type": "boolean"},
        "fields": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "days", "unit"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
]


async def test_tool_calls_validate_and_stream_in_openai_chunk_shape(sim: SimServer) -> None:
    c = client(sim)
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = await chat(c, model=MODEL, messages=USER, tools=TOOLS, tool_choice=choice)
    assert r.choices[0].finish_reason == "tool_calls"
    calls = r.choices[0].message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall) and call.function.name == "get_weather"
    assert_valid(json.loads(call.function.arguments), WEATHER)

    stream = await stream_chat(c, model=MODEL, messages=USER, tools=TOOLS, tool_choice=choice)
    name, streamed, finish = "", "", None
    async for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            name += (delta.function and delta.function.name) or ""
            streamed += (delta.function and delta.function.arguments) or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, streamed, finish) == ("get_weather", call.function.arguments, "tool_calls")

    required = await chat(c, model=MODEL, messages=USER, tools=TOOLS, tool_choice="required")
    assert required.choices[0].message.tool_calls
    none = await chat(c, model=MODEL, messages=USER, tools=TOOLS, tool_choice="none")
    assert not none.choices[0].message.tool_calls and none.choices[0].message.content


async def test_structured_outputs_parse(sim: SimServer) -> None:
    c = client(sim)
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    r = await chat(c, model=MODEL, messages=USER, response_format=fmt)
    assert_valid(json.loads(r.choices[0].message.content or ""), WEATHER)
    r = await chat(c, model=MODEL, messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)


async def test_parameters_reach_the_backend_log(sim: SimServer) -> None:
    c = client(sim)
    await chat(
        c,
        model=MODEL,
        messages=USER,
        temperature=0.7,
        top_p=0.9,
        max_tokens=12,
        seed=11,
        stop=["END"],
        extra_body={"priority": 3},
    )
    last = sim.stats()["recent_requests"][-1]
    assert {k: last[k] for k in ("temperature", "top_p", "max_tokens", "seed", "stop", "priority")} == {
        "temperature": 0.7,
        "top_p": 0.9,
        "max_tokens": 12,
        "seed": 11,
        "stop": ["END"],
        "priority": 3,
    }
    async with httpx.AsyncClient() as h:
        stats = (await h.get(f"{sim.root_url}/sim/stats")).json()
        assert stats["recent_requests"][-1] == last and stats["completed"] >= 1
        await h.post(f"{sim.root_url}/sim/reset")
        assert (await h.get(f"{sim.root_url}/sim/stats")).json()["recent_requests"] == []


async def test_errors_are_openai_shaped(sim: SimServer) -> None:
    c = client(sim)
    with pytest.raises(openai.NotFoundError) as info:
        await chat(c, model="no-such-model", messages=USER)
    assert info.value.code == "model_not_found"
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{sim.base_url}/chat/completions", content=b"{not json")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await h.post(f"{sim.base_url}/chat/completions", json={"model": MODEL})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]
        r = await h.get(f"{sim.root_url}/health")
        assert r.status_code == 200 and r.headers["x-aios-simulator"] == "1"
    models = [m.id async for m in c.models.list()]
    assert MODEL in models


async def test_embeddings_are_deterministic_unit_vectors(sim: SimServer) -> None:
    c = client(sim)
    r = await c.embeddings.create(model="sim-embed", input=["alpha", "beta", "alpha"])  # base64 on the wire
    a, b, a2 = (d.embedding for d in r.data)
    assert len(a) == 384 and a == a2 and a != b
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-5)
    small = await c.embeddings.create(model="sim-embed", input="alpha", dimensions=8, encoding_format="float")
    assert len(small.data[0].embedding) == 8


async def test_prefix_cache_hit_is_reported_for_a_repeated_prompt(sim: SimServer) -> None:
    c = client(sim)
    long_prompt = [{"role": "user", "content": "context " * 400}]
    first = await chat(c, model=MODEL, messages=long_prompt, max_tokens=4)
    second = await chat(c, model=MODEL, messages=long_prompt, max_tokens=4)
    assert first.usage is not None and second.usage is not None
    cached = second.usage.prompt_tokens_details
    assert cached is not None and cached.cached_tokens is not None
    assert cached.cached_tokens >= second.usage.prompt_tokens - 16
    assert sim.stats()["prefix_cache_hit_tokens"] >= cached.cached_tokens


async def test_throughput_rises_with_concurrency_then_saturates_at_the_slots() -> None:
    # 10 ms per token (time_scale 1): 40 tokens take ~0.4 s whether one or four requests share a step.
    async with run_sim("fixed", decode_ms=10.0, max_num_seqs=4) as sim:
        c = client(sim)
        ask = [{"role": "user", "content": "go [sim:tokens=40]"}]

        async def rate(conc: int) -> float:
            start = time.monotonic()
            rs = await asyncio.gather(*(chat(c, model=MODEL, messages=ask) for _ in range(conc)))
            return sum(r.usage.completion_tokens for r in rs if r.usage) / (time.monotonic() - start)

        one, four, eight = await rate(1), await rate(4), await rate(8)
        assert four > 2.5 * one
        assert eight < 1.4 * four  # past the slot limit the extra requests only wait
        assert sim.stats()["max_running_seen"] <= 4  # a bound: the exact overlap depends on timing


async def test_client_disconnect_mid_stream_frees_the_slot(sim: SimServer) -> None:
    async with httpx.AsyncClient() as h:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "[sim:tokens=100000]"}],
            "stream": True,
        }
        async with h.stream("POST", f"{sim.base_url}/chat/completions", json=body) as r:
            lines = r.aiter_lines()
            seen = 0
            async for line in lines:
                seen += line.startswith("data: ")
                if seen >= 3:
                    break
            assert sim.stats()["running"] == 1 and sim.stats()["kv_blocks_used"] > 0
    await wait_until(lambda: sim.stats()["running"] == 0 and sim.stats()["kv_blocks_used"] == 0)
    assert sim.stats()["cancelled"] == 1 and sim.stats()["completed"] == 0


async def test_hosted_api_rate_limit_answers_429_with_retry_after() -> None:
    async with run_sim("hosted-api", rpm=2, ttft_ms=0.0, decode_ms=0.1) as sim:
        async with httpx.AsyncClient() as h:
            url = f"{sim.base_url}/chat/completions"
            body = {"model": "sim-gpt-4o-mini", "messages": USER, "max_tokens": 3}
            ok = await h.post(url, json=body)
            assert ok.status_code == 200 and ok.headers["x-ratelimit-limit-requests"] == "2"
            assert ok.headers["x-ratelimit-remaining-requests"] == "1"
            assert (await h.post(url, json=body)).status_code == 200
            limited = await h.post(url, json=body)
        assert limited.status_code == 429
        error = limited.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert error["message"].startswith("Rate limit reached for sim-gpt-4o-mini")
        assert "Please try again in" in error["message"]
        assert int(limited.headers["retry-after"]) >= 1 and int(limited.headers["retry-after-ms"]) > 0
        with pytest.raises(openai.RateLimitError):
            await chat(client(sim), model="sim-gpt-4o-mini", messages=USER)
        assert sim.stats()["429s"] == 2


async def test_hosted_api_refuses_a_request_larger_than_tpm() -> None:
    async with run_sim("hosted-api", tpm=1000, ttft_ms=0.0) as sim, httpx.AsyncClient() as h:
        body = {"model": "sim-gpt-4o-mini", "messages": USER, "max_tokens": 5000}
        r = await h.post(f"{sim.base_url}/chat/completions", json=body)
        assert r.status_code == 429 and r.json()["error"]["message"].startswith("Request too large")


async def test_priority_policy_over_http_admits_lower_values_first() -> None:
    async with run_sim("fixed", max_num_seqs=1, scheduling_policy="priority", decode_ms=1.0) as sim:
        c = client(sim)
        order: list[int] = []

        async def ask(priority: int, tokens: int) -> None:
            msg = [{"role": "user", "content": f"p{priority} [sim:tokens={tokens}]"}]
            await chat(c, model=MODEL, messages=msg, extra_body={"priority": priority})
            order.append(priority)

        blocker = asyncio.create_task(ask(0, 100_000))
        await wait_until(lambda: sim.stats()["running"] == 1)
        waiting: list[Awaitable[None]] = []
        for prio in (7, 2, 5):
            waiting.append(asyncio.create_task(ask(prio, 3)))
            await wait_until(waiting_count_is(sim, len(waiting)))
        blocker.cancel()  # the client gives up: its handler is cancelled and the slot frees
        with contextlib.suppress(asyncio.CancelledError):
            await blocker
        await asyncio.gather(*waiting)
        assert order == [2, 5, 7]
