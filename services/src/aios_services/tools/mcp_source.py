"""MCP servers as a source of tools, through the `mcp` package's client: stdio (the service starts
the server) or streamable HTTP. `Client(mode="auto")` asks `server/discover` (revision 2026-07-28,
the current one) and falls back to the `initialize` handshake (2025-11-25, the previous one, and
older) for servers that do not know it.

Each server's tools are registered as `<prefix>__<tool>` (an OpenAI function name: letters, digits,
`_`, `-`; a `.` or any other character of an MCP name becomes `_`, and a name over 64 characters
is cut and suffixed with a hash). The server's input schemas validate the arguments. Its
annotations are hints from a program the operator did not write: they set `side_effects` only where
the operator's config says nothing (readOnlyHint -> none; destructiveHint false -> reversible;
otherwise irreversible, the MCP default), never the other way round.

A client is held by one task for its whole life (the `mcp` package's connections are anyio task
groups, entered and left in one task); calls come from other tasks. If the server dies, the next
call reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import logging
import re
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent, Tool
from pydantic import JsonValue

from aios_schemas import AiosError, SideEffects

from .registry import Defaults, make_tool
from .registry import Tool as RegTool
from .settings import McpServerConfig

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(prefix: str, mcp_name: str) -> str:
    name = f"{prefix}__{_UNSAFE.sub('_', mcp_name)}"
    if len(name) > 64:
        name = name[:55] + "_" + hashlib.sha256(mcp_name.encode()).hexdigest()[:8]
    return name


def hinted_side_effects(tool: Tool) -> SideEffects:
    a = tool.annotations
    if a is not None and a.read_only_hint:
        return "none"
    if a is not None and a.destructive_hint is False:
        return "reversible"
    return "irreversible"


def output_of(result: CallToolResult) -> JsonValue:
    """A tool result as JSON: its structured content if any, else its text, else its content blocks."""
    if result.structured_content is not None:
        out: JsonValue = result.structured_content
        return out
    if all(isinstance(b, TextContent) for b in result.content):
        return "\n".join(b.text for b in result.content if isinstance(b, TextContent))
    return [b.model_dump(mode="json", by_alias=True, exclude_none=True) for b in result.content]


class McpServer:
    def __init__(self, name: str, config: McpServerConfig) -> None:
        self.name = name
        self.config = config
        self.prefix = config.prefix or name
        self.client: Client | None = None
        self.protocol: str | None = None
        self._holder: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _target(self, stack: contextlib.AsyncExitStack) -> Any:
        c = self.config
        if c.command is not None:
            return StdioServerParameters(
                command=c.command[0], args=c.command[1:], env=c.env or None, cwd=c.cwd
            )
        assert c.url is not None
        if c.headers:  # (closed with the connection)
            http = await stack.enter_async_context(httpx2.AsyncClient(headers=c.headers))
            return streamable_http_client(c.url, http_client=http)
        return c.url

    async def _hold(self, ready: asyncio.Future[Client]) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                target = await self._target(stack)
                async with Client(target, mode=self.config.protocol, cache=None) as client:
                    ready.set_result(client)
                    await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise
            log.warning("MCP server %s: connection ended: %s", self.name, exc)
        finally:
            self.client = None

    async def connect(self) -> Client:
        async with self._lock:
            if self.client is not None and self._holder is not None and not self._holder.done():
                return self.client
            self._stop = asyncio.Event()
            ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
            self._holder = asyncio.create_task(self._hold(ready), name=f"mcp {self.name}")
            self.client = await ready
            self.protocol = self.client.protocol_version
            log.info("MCP server %s: connected, protocol %s", self.name, self.protocol)
            return self.client

    async def list_tools(self) -> list[Tool]:
        client = await self.connect()
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(100):
            page = await client.list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if cursor is None:
                break
        include = self.config.include
        return [t for t in tools if include is None or any(fnmatch.fnmatchcase(t.name, p) for p in include)]

    async def call(self, mcp_name: str, arguments: dict[str, JsonValue], timeout_s: float) -> JsonValue:
        try:
            client = await asyncio.wait_for(self.connect(), timeout_s)
            result = await asyncio.wait_for(client.call_tool(mcp_name, dict(arguments)), timeout_s)
        except TimeoutError:
            raise AiosError(
                "deadline_exceeded",
                f"MCP server {self.name!r}: {mcp_name} ran past its timeout of {timeout_s:g}s",
            ) from None
        except AiosError:
            raise
        except Exception as exc:  # the server died or answered an error: reconnect next time
            await self._drop()
            raise AiosError("backend_error", f"MCP server {self.name!r}: {mcp_name}: {exc}") from exc
        if result.is_error:
            text = output_of(result.model_copy(update={"structured_content": None}))
            raise AiosError("backend_error", f"MCP tool {mcp_name!r} failed: {text}"[:2000])
        return output_of(result)

    async def _drop(self) -> None:
        self._stop.set()
        if self._holder is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._holder, 5)
        self.client = None

    async def close(self) -> None:
        await self._drop()

    async def tools(self, defaults: Defaults) -> list[RegTool]:
        """The registry's tools for this server's tools, the operator's config over their hints."""
        out = []
        for t in await self.list_tools():
            cfg = self.config.tools.get(t.name)
            if cfg is not None and not cfg.enabled:
                continue

            async def run(
                arguments: dict[str, JsonValue], timeout_s: float, mcp_name: str = t.name
            ) -> JsonValue:
                return await self.call(mcp_name, arguments, timeout_s)

            out.append(
                make_tool(
                    tool_name(self.prefix, t.name),
                    source="mcp",
                    description=t.description or t.title or "",
                    input_schema=t.input_schema,
                    output_schema=t.output_schema,
                    defaults=Defaults(
                        timeout_s=self.config.timeout_s,
                        max_concurrency=self.config.max_concurrency,
                        memory_mb=None,
                        side_effects=hinted_side_effects(t),
                    ),
                    config=cfg,
                    run=run,
                )
            )
        return out
