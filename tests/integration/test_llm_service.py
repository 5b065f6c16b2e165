"""The llm service on real nats-server and the engine simulator: chat, streaming, tools, JSON,
embeddings, parameters at the backend, the catalogue, error translation, deadlines, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import jsonschema
import pytest
from openai import AsyncOpenAI

from aios_schemas import EmbedReply, ExecReply, LlmEmbed, ModelEntry, decode
from aios_services.cli.procs import free_port
from aios_services.sim.runner import SimServer, run_sim
from tests.integration.test_llm_harness import (
    LlmService,
    chat,
    llm_service,
    ok,
    wait_for,
)
from tests.kernel import backend_toml, model_toml

SIM_MODEL = "sim-llama-8b"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(SIM_MODEL,), decode_ms=0.5) as s:
        yield s


@pytest.fixture
async def llm(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[LlmService]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = "\n".join(
        [
            model_toml(
                "m",
                backend_toml("sim-prio", sim.base_url, model=SIM_MODEL, capabilities={"priority": True}),
                backend_toml("sim-plain", sim.base_url, model=SIM_MODEL, slots=4, rpm=600),
            ),
            model_toml("e", backend_toml("sim-embed", sim.base_url, model="sim-embed"), kind="embedding"),
            model_toml("dead", backend_toml("dead", dead, timeout_s=5.0)),
            model_toml("wrong", backend_toml("wrong-name", sim.base_url, model="no-such-model")),
        ]
    )
    async with llm_service(nats_url, tmp_path, config) as svc:
        yield svc


def last_body(sim: SimServer) -> dict[str, object]:
    seen = sim.stats()["recent_requests"]
    assert isinstance(seen, list) and isinstance(seen[-1], dict)
    return seen[-1]


async def test_chat_equals_a_direct_call_and_sends_exactly_the_agents_parameters(
    llm: LlmService, sim: SimServer
) -> None:
    params = {"temperature": 0.3, "top_p": 0.9, "max_tokens": 40, "stop": ["zzz"], "seed": 7}
    reply = await llm.exec(chat("Say hello.", **params), backend="sim-plain")
    direct = await AsyncOpenAI(base_url=sim.base_url, api_key="x").chat.completions.create(  # type: ignore[call-overload]
        model=SIM_MODEL, messages=[{"role": "user", "content": "Say hello."}], **params
    )
    r = ok(reply)
    assert r.content == direct.choices[0].message.content and r.backend == "sim-plain"
    assert direct.usage is not None and r.usage.total_tokens == direct.usage.total_tokens > 0
    assert reply.usage == r.usage
    body = last_body(sim)
    assert set(body) == {"model", "messages", *params}
    assert all(body[k] == v for k, v in params.items())

    ok(await llm.exec(chat("Nothing set."), backend="sim-plain"))
    assert set(last_body(sim)) == {"model", "messages"}


async def test_priority_reaches_only_backends_that_accept_it(llm: LlmService, sim: SimServer) -> None:
    ok(await llm.exec(chat("hi"), backend="sim-prio", priority=-5))
    assert last_body(sim)["priority"] == -5
    ok(await llm.exec(chat("hi"), backend="sim-plain", priority=-5))
    assert "priority" not in last_body(sim)
    # No backend named: the model's first backend.
    assert ok(await llm.exec(chat("hi"))).backend == "sim-prio"


async def test_streaming_chunks_in_order_add_up_to_the_reply(llm: LlmService, sim: SimServer) -> None:
    plain = ok(await llm.exec(chat("Tell a story.")))
    req = llm.request(chat("Tell a story.", stream=True))
    chunks = await llm.chunks(req.syscall.id)
    r = ok(await llm.send(req))
    await wait_for(lambda: chunks.done, what="the done chunk")
    assert [c.seq for c in chunks.items] == list(range(len(chunks.items)))
    assert len(chunks.items) > 5 and chunks.items[-1].finish_reason == r.finish_reason == "stop"
    assert chunks.text == r.content == plain.content
    assert r.usage == plain.usage  # from the stream's usage chunk
    body = last_body(sim)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_forced_tool_call_with_valid_arguments(llm: LlmService, stream: bool) -> None:
    p = chat(
        "Weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    req = llm.request(p.model_copy(update={"stream": stream}))
    chunks = await llm.chunks(req.syscall.id)
    r = ok(await llm.send(req))
    assert r.finish_reason == "tool_calls" and r.tool_calls and len(r.tool_calls) == 1
    call = r.tool_calls[0]
    assert call.function.name == "get_weather" and call.id
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])  # type: ignore[index]
    assert r.usage.completion_tokens > 0
    if stream:
        await wait_for(lambda: chunks.done, what="the done chunk")
        assert chunks.text == "" and chunks.items[-1].finish_reason == "tool_calls"


async def test_streamed_and_plain_tool_calls_are_the_same(llm: LlmService) -> None:
    p = chat("Weather in Oslo?", tools=[WEATHER], tool_choice="required")
    plain = ok(await llm.exec(p))
    streamed = ok(await llm.exec(p.model_copy(update={"stream": True})))
    assert plain.tool_calls == streamed.tool_calls


async def test_json_object_and_json_schema_output(llm: LlmService, sim: SimServer) -> None:
    r = ok(await llm.exec(chat("Answer in JSON.", response_format={"type": "json_object"})))
    assert isinstance(json.loads(r.content or ""), dict)
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    for stream in (False, True):
        r = ok(await llm.exec(chat("A person.", response_format=fmt, stream=stream)))
        jsonschema.validate(json.loads(r.content or ""), PERSON)
    assert last_body(sim)["response_format"] == fmt


async def test_json_reply_cut_by_max_tokens_is_returned_as_cut_not_retried(
    llm: LlmService, sim: SimServer
) -> None:
    """The agent's own budget ended the reply: returned once with finish_reason "length" and not
    validated (a retry would be cut at the same place), as OpenAI does."""
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}
    before = sim.stats()["requests"]
    r = ok(await llm.exec(chat("A person.", response_format=fmt, max_tokens=3)))
    assert r.finish_reason == "length" and r.usage.completion_tokens == 3
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content or "")
    assert sim.stats()["requests"] == before + 1


async def test_invalid_json_schema_is_refused_before_the_backend(llm: LlmService, sim: SimServer) -> None:
    before = sim.stats()["requests"]
    fmt = {"type": "json_schema", "json_schema": {"name": "bad", "schema": {"type": "no-such-type"}}}
    reply = await llm.exec(chat("x", response_format=fmt))
    assert reply.result and reply.result.error and reply.result.error.code == "invalid_request"
    assert sim.stats()["requests"] == before


async def test_embeddings(llm: LlmService, sim: SimServer) -> None:
    reply = await llm.exec(LlmEmbed(model="e", input=["alpha", "beta", "alpha"], dimensions=64))
    assert reply.result and isinstance(reply.result.result, EmbedReply), reply
    r = reply.result.result
    assert len(r.vectors) == 3 and all(len(v) == 64 for v in r.vectors)
    assert r.vectors[0] == r.vectors[2] != r.vectors[1]
    assert abs(sum(x * x for x in r.vectors[0]) - 1.0) < 1e-4
    assert r.usage.prompt_tokens > 0 and r.backend == "sim-embed"
    # A chat call to an embedding model, and the reverse, are the agent's mistake.
    wrong = await llm.exec(chat("hi").model_copy(update={"model": "e"}))
    assert wrong.result and wrong.result.error and wrong.result.error.code == "invalid_request"
    wrong = await llm.exec(LlmEmbed(model="m", input=["x"]))
    assert wrong.result and wrong.result.error and wrong.result.error.code == "invalid_request"


async def test_catalogue_is_published(llm: LlmService) -> None:
    kv = await llm.nc.jetstream().key_value(llm.ns.limits_bucket)
    keys = [key for key in await kv.keys() if key.startswith("model.m=")]
    assert len(keys) == 1  # one entry per replica, stamped so that a dead replica's expires
    m = decode((await kv.get(keys[0])).value or b"", ModelEntry)
    assert m.replica and m.ts and abs(m.ts - time.time()) < 60
    assert m.kind == "chat" and [b.name for b in m.backends] == ["sim-prio", "sim-plain"]
    assert m.backends[0].priority and not m.backends[1].priority
    assert m.backends[1].slots == 4 and m.backends[1].rpm == 600
    (ekey,) = [key for key in await kv.keys() if key.startswith("model.e=")]
    e = decode((await kv.get(ekey)).value or b"", ModelEntry)
    assert e.kind == "embedding"


def error_of(reply: ExecReply) -> tuple[str, bool, dict[str, object]]:
    assert reply.outcome == "done" and reply.result and reply.result.error, reply
    e = reply.result.error
    return e.code, e.retryable, dict(e.details)


async def test_unknown_model_and_unknown_backend(llm: LlmService) -> None:
    code, _, _ = error_of(await llm.exec(chat("hi").model_copy(update={"model": "nope"})))
    assert code == "not_found"
    code, retryable, details = error_of(await llm.exec(chat("hi"), backend="nope"))
    assert (code, retryable, details["backend"]) == ("backend_unavailable", True, "nope")


async def test_dead_backend_is_unavailable_and_retryable(llm: LlmService) -> None:
    for stream in (False, True):
        code, retryable, details = error_of(
            await llm.exec(chat("hi", stream=stream).model_copy(update={"model": "dead"}))
        )
        assert (code, retryable, details["backend"]) == ("backend_unavailable", True, "dead")


async def test_backend_without_the_model_is_a_backend_error(llm: LlmService) -> None:
    code, retryable, details = error_of(await llm.exec(chat("hi").model_copy(update={"model": "wrong"})))
    assert (code, retryable, details["status"], details["backend"]) == (
        "backend_error",
        False,
        404,
        "wrong-name",
    )


async def test_too_long_request_is_invalid(nats_url: str, tmp_path: Path) -> None:
    async with (
        run_sim("h100-tiny", time_scale=0.0) as tiny,
        llm_service(
            nats_url, tmp_path, model_toml("t", backend_toml("tiny", tiny.base_url, model=SIM_MODEL))
        ) as svc,
    ):
        # h100-tiny's max_model_len is 4096 tokens: the backend answers 400 context_length_exceeded.
        reply = await svc.exec(chat("[sim:tokens=5000] go").model_copy(update={"model": "t"}))
    code, retryable, details = error_of(reply)
    assert (code, retryable, details["status"], details["backend"]) == ("invalid_request", False, 400, "tiny")


async def test_hosted_api_429_is_rate_limited_with_retry_after(nats_url: str, tmp_path: Path) -> None:
    async with (
        run_sim("hosted-api", rpm=1, ttft_ms=0, decode_ms=0.1) as hosted,
        llm_service(
            nats_url,
            tmp_path,
            model_toml("g", backend_toml("openai", hosted.base_url, model="sim-gpt-4o-mini")),
        ) as svc,
    ):
        ok(await svc.exec(chat("one").model_copy(update={"model": "g"})))
        code, retryable, details = error_of(await svc.exec(chat("two").model_copy(update={"model": "g"})))
    assert (code, retryable, details["backend"], details["status"]) == ("rate_limited", True, "openai", 429)
    retry = details["retry_after_s"]
    assert isinstance(retry, float) and 0 < retry <= 60


async def test_deadline_shorter_than_the_generation_closes_the_backend_request(
    llm: LlmService, sim: SimServer
) -> None:
    # [sim:tokens=4000] at 0.5 ms per token: 2 s of generation, against a 0.3 s deadline.
    for expected, stream in enumerate((False, True), start=1):
        reply = await llm.exec(chat("[sim:tokens=4000] go", stream=stream), deadline_s=0.3)
        code, retryable, _ = error_of(reply)
        assert code == "deadline_exceeded" and retryable
        assert reply.usage.completion_tokens < 4000
        await wait_for(lambda: sim.stats()["cancelled"] == expected, what="the simulator to drop the request")  # noqa: B023
        assert sim.stats()["running"] == 0


async def test_cancel_stops_the_run_and_frees_the_backend(llm: LlmService, sim: SimServer) -> None:
    req = llm.request(chat("[sim:tokens=4000] go", stream=True))
    chunks = await llm.chunks(req.syscall.id)
    pending = asyncio.ensure_future(llm.send(req))
    await wait_for(lambda: len(chunks.items) >= 3, what="first chunks")
    await llm.control(req.syscall.id, "cancel")
    reply = await pending
    code, retryable, _ = error_of(reply)
    assert code == "cancelled" and not retryable
    assert 3 <= reply.usage.completion_tokens < 4000
    await wait_for(lambda: sim.stats()["running"] == 0, what="the simulator to drop the request")
