"""Contract test against the REAL local model (SmolLM2-135M via llama.cpp's OpenAI server), through
the llm service: chat, streaming, a forced tool call, and JSON mode.

These tests assert the contract (types, structure, accounting), never what a 135M model happens to
say: its exact output depends on the CPU and the llama.cpp build. In particular a JSON reply may be
cut by `max_tokens` on one machine and not on another; the contract is that a reply that finished
(`stop`) parses, and a cut one comes back once, marked `length`, without a retry or an error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aios_schemas import LlmChat
from aios_services.cli.procs import free_port, local_model_path, local_model_spec
from tests.integration.test_llm_harness import (
    LlmService,
    chat,
    llm_service,
    ok,
    wait_for,
)
from tests.kernel import backend_toml, model_toml, running_kernel
from tests.servers import running

pytestmark = pytest.mark.localmodel

MODEL = "smollm2-135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def local_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama.cpp's server on SmolLM2, started like `aios up --local-model` starts it."""
    try:
        gguf = local_model_path()
    except FileNotFoundError as exc:  # `make test` installs it first: missing means broken setup
        pytest.fail(f"{exc}; run `make local-model`")
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with running(local_model_spec(free_port(), gguf, MODEL), log) as server:
        yield server.address


@pytest.fixture
async def llm(nats_url: str, tmp_path: Path, local_url: str) -> AsyncIterator[LlmService]:
    config = model_toml(MODEL, backend_toml("llamacpp", local_url, slots=1, timeout_s=60.0))
    async with llm_service(nats_url, tmp_path, config) as svc:
        yield svc


def ask(content: str, **params: object) -> LlmChat:
    return chat(content, **params).model_copy(update={"model": MODEL})


async def test_chat(llm: LlmService) -> None:
    r = ok(await llm.exec(ask("What is the capital of France?", max_tokens=24, temperature=0)))
    assert r.content and r.backend == "llamacpp"
    assert r.usage.prompt_tokens > 0 and 0 < r.usage.completion_tokens <= 24
    assert r.finish_reason in ("stop", "length")


async def test_streaming(llm: LlmService) -> None:
    req = llm.request(ask("Count from one to five.", max_tokens=24, temperature=0, stream=True))
    chunks = await llm.chunks(req.syscall.id)
    r = ok(await llm.send(req))
    await wait_for(lambda: chunks.done, what="the done chunk")
    assert len(chunks.items) > 2 and [c.seq for c in chunks.items] == list(range(len(chunks.items)))
    assert chunks.text == r.content and r.content
    assert r.usage.completion_tokens > 0


async def test_forced_tool_call(llm: LlmService) -> None:
    p = ask(
        "What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=64,
        temperature=0,
    )
    r = ok(await llm.exec(p))
    # A forced tool call is grammar-constrained to the tool's parameters schema: it names the tool,
    # and its arguments parse when the reply finished (a cut one is returned as cut).
    assert r.tool_calls and r.tool_calls[0].function.name == "get_weather"
    if r.finish_reason != "length":
        args = json.loads(r.tool_calls[0].function.arguments)
        assert isinstance(args, dict) and isinstance(args.get("city"), str)


def assert_json_contract(content: str | None, finish_reason: str | None) -> None:
    """llama.cpp constrains json_object output with a JSON grammar but cannot bound its length: the
    reply parses when it finished, and is returned as cut (not retried, not an error) when not."""
    assert finish_reason in ("stop", "length"), finish_reason
    if finish_reason == "stop":
        assert isinstance(json.loads(content or ""), dict), content


async def test_json_mode(llm: LlmService) -> None:
    p = ask(
        "Give a JSON object with a key 'name' for a cat.",
        response_format={"type": "json_object"},
        max_tokens=96,
        temperature=0,
    )
    r = ok(await llm.exec(p))
    assert_json_contract(r.content, r.finish_reason)
    assert 0 < r.usage.completion_tokens <= 96  # one generation's worth: a cut reply is not retried


async def test_contract_through_the_kernel(nats_url: str, tmp_path: Path, local_url: str) -> None:
    """The same four operations, end to end: SDK -> JetStream -> scheduler -> llm -> llama.cpp."""
    backends = [{"name": "llamacpp", "base_url": local_url, "slots": 1, "timeout_s": 60.0}]
    async with running_kernel(nats_url, tmp_path, {MODEL: backends}) as k, k.connect() as aios:
        msgs = [{"role": "user", "content": "What is the capital of France?"}]
        r = await aios.llm.chat(MODEL, msgs, max_tokens=24, temperature=0)
        assert r.content and 0 < r.usage.completion_tokens <= 24
        async with aios.llm.stream(MODEL, msgs, max_tokens=24, temperature=0) as stream:
            deltas = [d async for d in stream]
        assert len(deltas) > 2 and stream.reply is not None and "".join(deltas) == stream.reply.content
        t = await aios.llm.chat(
            MODEL,
            [{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=64,
            temperature=0,
        )
        assert t.tool_calls and t.tool_calls[0].function.name == "get_weather"
        if t.finish_reason != "length":
            assert isinstance(json.loads(t.tool_calls[0].function.arguments).get("city"), str)
        j = await aios.llm.chat(
            MODEL,
            [{"role": "user", "content": "Give a JSON object with a key 'name' for a cat."}],
            response_format={"type": "json_object"},
            max_tokens=96,
            temperature=0,
        )
        assert_json_contract(j.content, j.finish_reason)
        assert 0 < j.usage.completion_tokens <= 96
