"""The exec handler with fake deps and a scripted backend (a real HTTP server on loopback answering
what each test scripts): JSON output is retried once then refused, streaming without a streaming
backend, and stream delta assembly."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import cast

from aiohttp import web
from openai.types.chat import ChatCompletionChunk

from aios_schemas import (
    ChatReply,
    ContextSnapshot,
    ExecReply,
    ExecRequest,
    LlmChat,
    Namespace,
    StreamChunk,
    Syscall,
    new_id,
)
from aios_services.llm.backends import Backend
from aios_services.llm.config import BackendConfig
from aios_services.llm.contexts import ContextStore
from aios_services.llm.control import Runs
from aios_services.llm.generation import Generation
from aios_services.llm.handlers import Deps, LlmHandlers, Model
from aios_services.runtime import Bus


class FakeBus:
    def __init__(self) -> None:
        self.ns = Namespace("unit")
        self.published: list[StreamChunk] = []

    async def publish(self, subject: str, msg: StreamChunk) -> None:
        self.published.append(msg)


class FakeContexts:
    def __init__(self) -> None:
        self.items: dict[str, ContextSnapshot] = {}

    async def get(self, syscall_id: str) -> ContextSnapshot | None:
        return self.items.get(syscall_id)

    async def put(self, snapshot: ContextSnapshot) -> None:
        self.items[snapshot.id] = snapshot

    async def delete(self, syscall_id: str) -> None:
        self.items.pop(syscall_id, None)


def completion(content: str) -> dict[str, object]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


@asynccontextmanager
async def handlers(
    respond: Callable[[dict[str, object]], dict[str, object]], **caps: bool
) -> AsyncIterator[tuple[LlmHandlers, FakeBus, list[dict[str, object]]]]:
    bodies: list[dict[str, object]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        return web.json_response(respond(body))

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = BackendConfig.model_validate(
        {"name": "b", "base_url": f"http://127.0.0.1:{port}/v1", "capabilities": caps}
    )
    backend = Backend("m", "chat", cfg)
    bus = FakeBus()
    deps = Deps(
        bus=cast(Bus, bus),
        models={"m": Model("m", "chat", [backend])},
        contexts=cast(ContextStore, FakeContexts()),
        runs=Runs(),
    )
    try:
        yield LlmHandlers(deps), bus, bodies
    finally:
        await backend.close()
        await runner.cleanup()


def request(**payload: object) -> ExecRequest:
    p = LlmChat.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **payload})
    sys = Syscall(id=new_id(), agent="a1", token="t", payload=p)
    return ExecRequest(syscall=sys, resource="llm.m", deadline=time.time() + 10)


def chat_reply(reply: ExecReply) -> ChatReply:
    assert reply.result and isinstance(reply.result.result, ChatReply), reply
    return reply.result.result


async def test_bad_json_is_retried_once_then_accepted() -> None:
    answers = iter(["Sure! here it is", '{"ok": true}'])
    async with handlers(lambda body: completion(next(answers))) as (h, _, bodies):
        reply = await h.exec(request(response_format={"type": "json_object"}))
        r = chat_reply(reply)
        assert r.content == '{"ok": true}' and len(bodies) == 2 and bodies[0] == bodies[1]
        assert r.usage.total_tokens == 16 == reply.usage.total_tokens  # both attempts are counted


async def test_bad_json_twice_is_a_backend_error() -> None:
    schema = {"type": "object", "required": ["age"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    async with handlers(lambda body: completion('{"name": "x"}')) as (h, _, bodies):
        reply = await h.exec(request(response_format=fmt))
        assert reply.result and reply.result.error, reply
        assert reply.result.error.code == "backend_error" and "age" in reply.result.error.message
        assert reply.result.error.details == {"backend": "b", "attempts": 2}
        assert len(bodies) == 2 and reply.usage.total_tokens == 16


async def test_agent_streams_from_a_backend_that_cannot() -> None:
    async with handlers(lambda body: completion("all at once"), streaming=False) as (h, bus, bodies):
        req = request(stream=True)
        r = chat_reply(await h.exec(req))
        assert "stream" not in bodies[0] and r.content == "all at once"
        assert [(c.seq, c.delta, c.done) for c in bus.published] == [(0, "all at once", False), (1, "", True)]
        assert all(c.id == req.syscall.id for c in bus.published)


async def test_capability_refusals_do_not_reach_the_backend() -> None:
    async with handlers(lambda body: completion("x"), tools=False) as (h, _, bodies):
        tool = {"type": "function", "function": {"name": "f"}}
        reply = await h.exec(request(tools=[tool]))
        assert reply.result and reply.result.error and reply.result.error.code == "invalid_request"
        assert bodies == []


def chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    """A stream chunk as the backend sends it (validated against openai's type, then as JSON)."""
    return ChatCompletionChunk.model_validate(
        {
            "id": "x",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    ).model_dump(mode="json")


def test_tool_call_deltas_are_assembled() -> None:
    gen = Generation()
    start = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get", "arguments": ""}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "put", "arguments": "{}"}}
    for d in (
        {"role": "assistant", "tool_calls": [start]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
        {"tool_calls": [second]},
    ):
        assert gen.add_chunk(chunk(d)) == ""
    gen.add_chunk(chunk({}, "tool_calls"))
    calls = gen.tool_calls()
    assert calls is not None and [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("call_1", "get", '{"city": "Oslo"}'),
        ("call_2", "put", "{}"),
    ]
    assert gen.finish == "tool_calls"
    # No usage chunk arrived: output is the deltas counted, input estimated from the prompt size.
    u = gen.usage(prompt_chars=40)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (10, 3, 13)
