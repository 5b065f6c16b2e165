"""Tools service settings (environment, prefix `AIOS_`; `aios up` passes the `[tools]` section of the
operator's `aios.toml`).

```toml
[tools]
web_fetch = true                        # the web_fetch built-in (off by default)
web_fetch_hosts = ["example.org"]       # only these hosts (empty: any)

[tools.tool.calc]                       # a built-in's limits, changed
timeout_s = 2
max_concurrency = 8

[tools.tool.lookup]                     # a Python function of yours, run in the sandbox
function = "mypkg.tools:lookup"         # called with the arguments as keywords; returns JSON
description = "Look a customer up by id."
input_schema = { type = "object", properties = { id = { type = "string" } }, required = ["id"] }
side_effects = "none"

[tools.tool.deploy]                     # served by an external worker (any language, plain NATS)
worker = "external"
description = "Deploy a build."
input_schema = { type = "object", properties = { build = { type = "string" } } }
side_effects = "irreversible"
requires_approval = true

[tools.mcp.github]                      # an MCP server: its tools become github__<tool>
command = ["npx", "-y", "@modelcontextprotocol/server-github"]   # stdio; or url = "http://…/mcp"
tools = { delete_repo = { side_effects = "irreversible", requires_approval = true } }
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from aios_schemas.tools import TOOL_NAME_PATTERN, SideEffects

from ..runtime.worker import WorkerSettings

_STRICT = ConfigDict(extra="forbid", frozen=True)
FUNCTION_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"


class ToolConfig(BaseModel):
    """One tool as the operator declares it, or what the operator changes of a built-in's or an MCP
    tool's definition (every field left out keeps its value; the operator's always wins)."""

    model_config = _STRICT
    function: str | None = Field(
        None, pattern=FUNCTION_PATTERN, description="`module:function` run in the sandbox (a new tool)."
    )
    worker: Literal["subprocess", "external"] = Field(
        "subprocess",
        description="subprocess: `function` in the sandbox; external: another process answers on the"
        " tool's subject (`aios.v1.exec.tools.ext.<name>`, plain NATS request/reply).",
    )
    description: str | None = Field(None, max_length=4096, description="What it does, for the model.")
    input_schema: dict[str, JsonValue] | None = Field(None, description="JSON Schema of its arguments.")
    output_schema: dict[str, JsonValue] | None = Field(None, description="JSON Schema of its output.")
    timeout_s: float | None = Field(None, gt=0, le=3600, description="Killed after this long.")
    max_concurrency: int | None = Field(None, ge=1, le=1024, description="Runs at once (more wait).")
    memory_mb: int | None = Field(None, ge=16, description="Memory a run may allocate (sandbox tools).")
    side_effects: SideEffects | None = Field(None, description="none | reversible | irreversible.")
    requires_approval: bool | None = Field(None, description="An operator approves each call.")
    agents: list[str] | None = Field(
        None, description="Agents (globs) that may see and call it; unset: every agent."
    )
    enabled: bool = Field(True, description="False: not registered at all.")
    options: dict[str, JsonValue] = Field(
        default_factory=dict, description="Keyword arguments the function gets besides the agent's."
    )


class McpServerConfig(BaseModel):
    """An MCP server whose tools are registered as `<prefix>__<tool>`."""

    model_config = _STRICT
    command: list[str] | None = Field(None, min_length=1, description="stdio: the command to start.")
    env: dict[str, str] = Field(default_factory=dict, description="stdio: its environment (added).")
    cwd: str | None = Field(None, description="stdio: its working directory.")
    url: str | None = Field(None, description="Streamable HTTP: the server's endpoint URL.")
    headers: dict[str, str] = Field(default_factory=dict, description="Streamable HTTP: request headers.")
    protocol: Literal["auto", "legacy"] = Field(
        "auto",
        description="auto: MCP 2026-07-28 (server/discover), else the initialize handshake (2025-11-25"
        " and older); legacy: the handshake only.",
    )
    prefix: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_-]{1,30}$", description="Tool name prefix (default: the server's name)."
    )
    include: list[str] | None = Field(
        None, description="Only its tools matching these globs (by their MCP name)."
    )
    timeout_s: float = Field(30.0, gt=0, le=3600, description="Default timeout of its tools.")
    max_concurrency: int = Field(4, ge=1, le=1024, description="Default concurrency of each of its tools.")
    tools: dict[str, ToolConfig] = Field(
        default_factory=dict, description="Per tool (by MCP name): what the operator sets; wins over hints."
    )

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of `command` (stdio) or `url` (HTTP)")
        return self


class ToolsSettings(WorkerSettings):
    tool: dict[str, ToolConfig] = Field(
        default_factory=dict, description="Tools by name: new ones, or changes to built-ins."
    )
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict, description="MCP servers by name.")
    web_fetch: bool = Field(False, description="Offer the web_fetch built-in.")
    web_fetch_hosts: list[str] = Field(
        default_factory=list, description="Hosts web_fetch may reach (empty: any)."
    )
    web_fetch_loopback_only: bool = Field(False, description="web_fetch reaches loopback addresses only.")
    tools_timeout_s: float = Field(30.0, gt=0, description="Default timeout of a tool.")
    tools_max_concurrency: int = Field(4, ge=1, description="Default concurrency of a tool.")
    tools_memory_mb: int = Field(512, ge=16, description="Default memory a sandboxed run may allocate.")
    tools_mcp_start_wait_s: float = Field(
        10.0, ge=0, description="How long the start waits for MCP servers' tools (later ones come later)."
    )
    tools_max_output_bytes: int = Field(
        1024 * 1024, ge=1024, le=8 * 1024 * 1024, description="A tool's output larger than this (JSON) fails."
    )
    tools_spare_workers: int = Field(2, ge=0, le=64, description="Sandbox workers started ahead.")
    tools_idle_workers: int = Field(8, ge=0, le=256, description="Sandbox workers kept idle at most.")

    @model_validator(mode="after")
    def _names(self) -> ToolsSettings:
        for name in self.tool:
            if not re.fullmatch(TOOL_NAME_PATTERN, name):
                raise ValueError(
                    f"tool name {name!r} must match {TOOL_NAME_PATTERN} (an OpenAI function name)"
                )
        for name in self.mcp:
            if not re.fullmatch(r"^[A-Za-z0-9_-]{1,30}$", name):
                raise ValueError(f"MCP server name {name!r} must be 1-30 letters, digits, _ or -")
        return self
