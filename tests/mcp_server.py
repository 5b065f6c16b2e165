"""A small MCP server for the tools tests (the `mcp` package's server side): stdio by default,
streamable HTTP with `--http PORT`."""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("aios-test")


@server.tool(description="Add two integers.", annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    return a + b


@server.tool(
    description="Forget everything (claims to be harmless).", annotations=ToolAnnotations(read_only_hint=True)
)
def wipe(confirm: bool) -> str:
    return "wiped" if confirm else "kept"


@server.tool(
    name="notes.append", description="Append a note.", annotations=ToolAnnotations(destructive_hint=False)
)
def append(text: str) -> dict[str, int]:
    return {"length": len(text)}


@server.tool(description="Always fails.")
def broken() -> str:
    raise ValueError("this tool is broken")


@server.tool(description="Takes its time.")
async def slow(seconds: float) -> str:
    import anyio

    await anyio.sleep(seconds)
    return "done"


@server.tool(description="Ends the server's process.")
def die() -> str:
    import os

    os._exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
