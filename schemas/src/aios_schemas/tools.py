"""`tools.*` payloads: listing the tools an agent may call (as OpenAI tool definitions it hands to
`llm.chat`) and calling one; and `ToolEntry`, what the tools service publishes about each tool in KV
`AIOS_LIMITS` (`tool.<name>`) for the scheduler (side effects, approval)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from .llm import ToolDef

_STRICT = ConfigDict(extra="forbid", frozen=True)

# A tool's name is an OpenAI function name (the model calls it by that name) and one NATS key token.
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
TOOL_PATTERN_PATTERN = r"^[A-Za-z0-9_*?-]{1,64}$"  # a name or a glob of names (`github__*`)
SideEffects = Literal["none", "reversible", "irreversible"]
ToolSource = Literal["builtin", "python", "mcp", "external"]
_KEY_UNSAFE = re.compile(r"[^-_a-zA-Z0-9]")
Glob = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class ToolsList(BaseModel):
    """The tools the calling agent may call, as OpenAI tool definitions (optionally filtered)."""

    model_config = _STRICT
    kind: Literal["tools.list"] = Field("tools.list", description="Syscall kind.")
    names: list[Glob] | None = Field(
        None,
        max_length=256,
        description="Only tools whose name matches one of these globs (`calc`, `github__*`); all if unset.",
    )
    side_effects: list[SideEffects] | None = Field(
        None, description='Only tools with one of these side effects (e.g. ["none"]); all if unset.'
    )


class ToolsCall(BaseModel):
    """Run one tool with arguments that its input schema accepts."""

    model_config = _STRICT
    kind: Literal["tools.call"] = Field("tools.call", description="Syscall kind.")
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="The tool, as `tools.list` names it.")
    arguments: dict[str, JsonValue] = Field(
        default_factory=dict, description="Arguments, checked against the tool's input schema."
    )


class ToolEntry(BaseModel):
    """One tool, as the registry knows it: what it does and how careful the kernel must be with it.
    Published in KV `AIOS_LIMITS` under `tool_key(name)` for the scheduler (approvals)."""

    model_config = _STRICT
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Tool name (an OpenAI function name).")
    description: str = Field("", description="What it does, for the model.")
    input_schema: dict[str, JsonValue] = Field(description="JSON Schema of its arguments.")
    output_schema: dict[str, JsonValue] | None = Field(None, description="JSON Schema of its output.")
    source: ToolSource = Field(description="builtin, python (a function), mcp (a server's tool) or external.")
    timeout_s: float = Field(gt=0, description="A run longer than this is killed (deadline_exceeded).")
    max_concurrency: int = Field(ge=1, description="Runs at once (the scheduler queues the rest).")
    side_effects: SideEffects = Field(description="none | reversible | irreversible.")
    requires_approval: bool = Field(description="An operator must approve each call before it runs.")
    memory_mb: int | None = Field(None, ge=1, description="Address-space limit of a run (subprocess tools).")
    ts: float | None = Field(None, description="Unix time the tools service last published it.")


class ToolsListReply(BaseModel):
    model_config = _STRICT
    kind: Literal["tools.list"] = Field("tools.list", description="Answers tools.list.")
    tools: list[ToolDef] = Field(description="OpenAI-style tool definitions, to pass as `llm.chat` tools.")
    entries: list[ToolEntry] = Field(description="The same tools with their limits and side effects.")


class ToolsCallReply(BaseModel):
    model_config = _STRICT
    kind: Literal["tools.call"] = Field("tools.call", description="Answers tools.call.")
    name: str = Field(description="The tool that ran.")
    output: JsonValue = Field(description="What it returned (checked against its output schema, if any).")


class ToolsInspect(BaseModel):
    """The operator's `aios tools` (`ctl.tools.inspect`, kernel credentials): every tool, whoever may
    call it, answered as a `ToolsListReply`."""

    model_config = _STRICT
    names: list[Glob] | None = Field(None, max_length=256, description="Only tools matching these globs.")


class ToolRegister(BaseModel):
    """An external worker (any language) registers a tool it serves on `exec.tools.ext.<name>`
    (request `ctl.tools.register`, with the tools service's credentials), and registers it again
    within `ttl_s` to keep it: a worker gone is a tool gone. A tool of the operator's config keeps
    the config's definition."""

    model_config = _STRICT
    name: str = Field(pattern=TOOL_NAME_PATTERN, description="Tool name (an OpenAI function name).")
    description: str = Field("", max_length=4096, description="What it does, for the model.")
    input_schema: dict[str, JsonValue] = Field(description="JSON Schema of its arguments.")
    output_schema: dict[str, JsonValue] | None = Field(None, description="JSON Schema of its output.")
    timeout_s: float = Field(30.0, gt=0, le=3600, description="A call longer than this fails.")
    max_concurrency: int = Field(4, ge=1, le=1024, description="Calls at once (the scheduler queues more).")
    side_effects: SideEffects = Field("irreversible", description="none | reversible | irreversible.")
    requires_approval: bool = Field(False, description="An operator approves each call.")
    ttl_s: float = Field(30.0, ge=1, le=3600, description="Gone unless registered again within this.")


class ToolRegistered(BaseModel):
    model_config = _STRICT
    name: str = Field(description="The tool registered.")
    expires: float | None = Field(
        description="Unix time it goes unless registered again (None: never, config)."
    )


ToolsPayload = ToolsList | ToolsCall
ToolsKind = Literal["tools.list", "tools.call"]
ToolsResult = ToolsListReply | ToolsCallReply


def tool_key(name: str) -> str:
    """KV key of a tool's `ToolEntry` in `AIOS_LIMITS`."""
    return "tool." + _KEY_UNSAFE.sub("_", name)
