"""MCP servers' tools through the kernel: a small MCP server of the tests (`tests/mcp_server.py`, the
`mcp` package's server side) over stdio, spoken to in the current revision (2026-07-28) and the
previous one (2025-11-25, the initialize handshake), and over streamable HTTP; its tools registered
under a prefix, validated by their own input schemas, their annotations never over the operator's
config. Also: web_fetch (off by default) on a loopback server, and the SDK's tool-calling step
with the simulated engine."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import nats
import pytest

from aios_schemas import ChatMessage, FunctionCall, Health, HealthQuery, ToolCall, decode, encode
from aios_sdk import AIOS, BackendError, DeadlineExceeded, InvalidRequest, assistant_message
from aios_services.cli.procs import free_port
from aios_services.sim.runner import SimServer, run_sim
from tests.integration.tools_kernel import tools_kernel
from tests.kernel import Kernel

SERVER = str(Path(__file__).parent.parent / "mcp_server.py")
MODEL = "sim-llama-8b"


async def wait_for_tools(aios: AIOS, pattern: str, count: int) -> list[str]:
    """MCP servers register in the background: poll tools.list until they are there."""
    deadline = time.monotonic() + 30
    while True:
        names = [d.function.name for d in (await aios.tools.list([pattern])).tools]
        if len(names) >= count:
            return sorted(names)
        assert time.monotonic() < deadline, f"MCP tools did not appear: {names}"
        await asyncio.sleep(0.05)


async def mcp_protocols(kernel: Kernel) -> dict[str, object]:
    """The MCP revision each server speaks, from the tools service's verbose health."""
    nc = await nats.connect(kernel.nats_url)
    try:
        msg = await nc.request(kernel.ns.ctl("tools", "health"), encode(HealthQuery(verbose=True)), timeout=5)
        mcp = decode(msg.data, Health).details["mcp"]
        assert isinstance(mcp, dict)
        return dict(mcp)
    finally:
        await nc.close()


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path) -> AsyncIterator[Kernel]:
    mcp = {
        "demo": {  # the current revision (server/discover)
            "command": [sys.executable, SERVER],
            # The server says wipe is read-only; the operator says otherwise, and wins.
            "tools": {"wipe": {"side_effects": "irreversible", "requires_approval": True}},
        },
        "old": {"command": [sys.executable, SERVER], "protocol": "legacy", "include": ["add"]},
    }
    async with tools_kernel(nats_url, tmp_path, mcp=mcp) as k:
        yield k


async def test_mcp_stdio_both_revisions(kernel: Kernel) -> None:
    async with kernel.connect() as aios:
        names = await wait_for_tools(aios, "demo__*", 6)
        assert names == [
            "demo__add",
            "demo__broken",
            "demo__die",
            "demo__notes_append",  # `.` -> `_`
            "demo__slow",
            "demo__wipe",
        ]
        assert await wait_for_tools(aios, "old__*", 1) == ["old__add"]  # include = ["add"]
        entries = {e.name: e for e in (await aios.tools.list(["demo__*"])).entries}
        assert entries["demo__add"].side_effects == "none"  # readOnlyHint
        assert entries["demo__notes_append"].side_effects == "reversible"  # destructiveHint false
        assert entries["demo__broken"].side_effects == "irreversible"  # no hints: MCP's default
        wipe = entries["demo__wipe"]
        assert (wipe.side_effects, wipe.requires_approval) == ("irreversible", True)  # config wins
        assert entries["demo__add"].input_schema["required"] == ["a", "b"]
        assert entries["demo__add"].source == "mcp"

        assert (await aios.tools.call("demo__add", {"a": 2, "b": 40})).output == {"result": 42}
        assert (await aios.tools.call("old__add", {"a": 1, "b": 1})).output == {"result": 2}
        assert (await aios.tools.call("demo__notes_append", {"text": "hi"})).output == {"length": 2}
        with pytest.raises(InvalidRequest, match=r"\$\.b"):  # the server's own schema, checked here
            await aios.tools.call("demo__add", {"a": 1, "b": "x"})
        with pytest.raises(BackendError, match="broken"):
            await aios.tools.call("demo__broken", {})
    assert await mcp_protocols(kernel) == {"demo": "2026-07-28", "old": "2025-11-25"}


async def test_mcp_timeout_and_a_dying_server(nats_url: str, tmp_path: Path) -> None:
    """A tool past its timeout: deadline_exceeded, the server still serves. A server that dies:
    backend_error, and the next call starts it again (stdio)."""
    mcp = {"m": {"command": [sys.executable, SERVER], "tools": {"slow": {"timeout_s": 0.5}}}}
    async with tools_kernel(nats_url, tmp_path, mcp=mcp) as kernel, kernel.connect() as aios:
        await wait_for_tools(aios, "m__*", 6)
        with pytest.raises(DeadlineExceeded, match=r"timeout of 0\.5s"):
            await aios.tools.call("m__slow", {"seconds": 30})
        assert (await aios.tools.call("m__add", {"a": 1, "b": 2})).output == {"result": 3}
        with pytest.raises(BackendError):
            await aios.tools.call("m__die", {})
        assert (await aios.tools.call("m__add", {"a": 2, "b": 2})).output == {"result": 4}


@pytest.fixture
def mcp_http() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "MCP HTTP server did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def test_mcp_streamable_http(nats_url: str, tmp_path: Path, mcp_http: str) -> None:
    async with (
        tools_kernel(
            nats_url, tmp_path, mcp={"web": {"url": mcp_http, "prefix": "h", "headers": {"X-Aios-Test": "1"}}}
        ) as kernel,
        kernel.connect() as aios,
    ):
        assert "h__add" in await wait_for_tools(aios, "h__*", 6)
        assert (await aios.tools.call("h__add", {"a": 3, "b": 4})).output == {"result": 7}


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


async def test_web_fetch_is_off_by_default_and_loopback_only_here(nats_url: str, tmp_path: Path) -> None:
    httpd = HTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/page"
    try:
        async with (
            tools_kernel(nats_url, tmp_path, web_fetch=True, web_fetch_loopback_only=True) as kernel,
            kernel.connect() as aios,
        ):
            out = (await aios.tools.call("web_fetch", {"url": url, "max_bytes": 10})).output
            assert out == {
                "status": 200,
                "content_type": "text/plain",
                "text": "hello from",
                "truncated": True,
            }
            with pytest.raises(InvalidRequest, match="not allowed"):
                await aios.tools.call("web_fetch", {"url": "http://192.0.2.1/"})
            with pytest.raises(InvalidRequest, match="only http"):
                await aios.tools.call("web_fetch", {"url": "file:///etc/passwd"})
    finally:
        httpd.shutdown()


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.2) as s:
        yield s


async def test_sdk_tool_calling_step_with_the_simulator(
    nats_url: str, tmp_path: Path, sim: SimServer
) -> None:
    """The model asks for a tool; each call runs as a syscall (tools.call); the results go back as
    `tool` messages, errors included (for the model to read), and the model answers."""
    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    async with tools_kernel(nats_url, tmp_path, models) as kernel, kernel.connect() as aios:
        tools = await aios.tools.definitions(["calc"])
        assert {t.function.name for t in tools} >= {"calc", "files_read", "memory_add"}
        messages = [ChatMessage(role="user", content="What is 6*7?")]
        reply = await aios.llm.chat(
            MODEL,
            messages,
            tools=tools,
            tool_choice={"type": "function", "function": {"name": "calc"}},
            max_tokens=64,
        )
        assert reply.finish_reason == "tool_calls" and reply.tool_calls
        results = await aios.tools.run_tool_calls(reply)
        assert [m.tool_call_id for m in results] == [c.id for c in reply.tool_calls]
        body = json.loads(results[0].content or "")
        # The simulator makes up an expression that fits the schema: a number back, or calc's refusal.
        assert "value" in body or body["error"]["code"] == "invalid_request"
        # A call the model garbled and a good one, in one step.
        garbled = ToolCall(id="c2", function=FunctionCall(name="calc", arguments="{not json"))
        direct = ToolCall(id="c3", function=FunctionCall(name="calc", arguments='{"expression": "6*7"}'))
        more = await aios.tools.run_tool_calls([garbled, direct])
        assert json.loads(more[0].content or "")["error"]["code"] == "invalid_request"
        assert json.loads(more[1].content or "") == {"value": 42}
        final = await aios.llm.chat(MODEL, [*messages, assistant_message(reply), *results], max_tokens=16)
        assert final.content
