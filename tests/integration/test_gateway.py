"""The OpenAI-compatible gateway on real servers, driven by the real `openai` client: sync, async,
streaming, tool calls, JSON output, embeddings, models; keys checked by NATS itself; errors with
the status codes and bodies OpenAI clients act on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from aios_services.cli.procs import free_port
from aios_services.gateway import main as gateway_main
from aios_services.gateway.settings import GatewaySettings
from aios_services.runtime import ServiceSettings
from aios_services.runtime.service import Starter
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel
from tests.servers import auth_for

MODEL, EMBED = "sim-llama-8b", "sim-embed"


def gateway_service(port: int) -> object:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        settings = GatewaySettings(**common, gateway_port=port)  # type: ignore[arg-type]
        return settings, lambda bus, stack: gateway_main.start(bus, stack, settings)

    return make


@pytest.fixture
async def gw(nats_url: str, tmp_path: Path) -> AsyncIterator[tuple[Kernel, str, SimServer]]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=1.0) as sim:
        port = free_port()
        models = {
            MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 8}],
            EMBED: [{"name": "sim-embed", "base_url": sim.base_url, "model": EMBED}, {"kind": "embedding"}],
        }
        async with running_kernel(
            nats_url,
            tmp_path,
            models,
            extra={"gateway": gateway_service(port)},  # type: ignore[dict-item]
        ) as k:
            yield k, f"http://127.0.0.1:{port}/v1", sim


def key(k: Kernel, agent: str = "agent-1") -> str:
    return f"{agent}:{auth_for(k.nats_url).token(agent)}"


HELLO = [{"role": "user", "content": "hello [sim:tokens=5]"}]


async def test_async_client_chat_stream_and_errors(gw: tuple[Kernel, str, SimServer]) -> None:
    k, url, _ = gw
    client = AsyncOpenAI(base_url=url, api_key=key(k), max_retries=0)
    r = await client.chat.completions.create(model=MODEL, messages=HELLO)  # type: ignore[arg-type]
    assert r.choices[0].message.content and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.completion_tokens > 0 and r.id.startswith("chatcmpl-")

    pieces = []
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
    assert "".join(pieces) == r.choices[0].message.content  # the simulator is deterministic
    assert usage is not None and usage.total_tokens > 0

    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="no-such-model", messages=HELLO)  # type: ignore[arg-type]
    assert nf.value.body and nf.value.body.get("code") == "not_found"  # type: ignore[union-attr]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])  # type: ignore[arg-type, list-item, misc]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=MODEL, messages=HELLO, n=2)  # type: ignore[arg-type]
    await client.close()


async def test_keys_are_checked_by_the_bus(gw: tuple[Kernel, str, SimServer]) -> None:
    k, url, _ = gw
    for bad in (f"agent-1:{'x' * 43}", "agent-1", f"agent-2:{auth_for(k.nats_url).token('agent-1')}"):
        client = AsyncOpenAI(base_url=url, api_key=bad, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model=MODEL, messages=HELLO)  # type: ignore[arg-type]
        await client.close()
    async with httpx.AsyncClient() as h:
        r = await h.post(f"{url}/chat/completions", json={"model": MODEL, "messages": HELLO})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await h.post(
            f"{url}/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {key(k)}"}
        )
        assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


async def test_sync_client_tools_json_embeddings_models(gw: tuple[Kernel, str, SimServer]) -> None:
    k, url, _ = gw

    def run() -> None:  # the sync client blocks: it runs in a thread, off the kernel's event loop
        client = OpenAI(base_url=url, api_key=key(k), max_retries=0)
        tools = [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ]
        ask = [{"role": "user", "content": "weather in Oslo?"}]
        r = client.chat.completions.create(model=MODEL, messages=ask, tools=tools, tool_choice="required")  # type: ignore[arg-type]
        calls = r.choices[0].message.tool_calls
        assert (
            calls and calls[0].function.name == "get_weather" and r.choices[0].finish_reason == "tool_calls"
        )
        json.loads(calls[0].function.arguments)
        # The tool's answer fed back, as frameworks do.
        follow = client.chat.completions.create(
            model=MODEL,
            messages=[
                *ask,
                {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in calls]},
                {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"},
            ],  # type: ignore[arg-type]
        )
        assert follow.choices[0].message.content
        j = client.chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )  # type: ignore[arg-type]
        assert isinstance(json.loads(j.choices[0].message.content or ""), dict)
        e = client.embeddings.create(model=EMBED, input=["a", "b"])
        assert len(e.data) == 2 and len(e.data[0].embedding) > 0 and e.data[1].index == 1
        assert MODEL in [m.id for m in client.models.list()]
        client.close()

    await asyncio.to_thread(run)
