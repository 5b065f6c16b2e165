"""`aios.tools`: the tools the kernel runs for you (the tools service), and the tool-calling step of
an agent loop.

```python
tools = await aios.tools.definitions()                   # OpenAI tool definitions: the service's
reply = await aios.llm.chat(model, messages, tools=tools) #   and this SDK's files/memory tools
messages += [assistant_message(reply), *await aios.tools.run_tool_calls(reply)]
out = (await aios.tools.call("calc", {"expression": "2**10"})).output   # {"value": 1024}
```
Each tool call is a syscall: `tools.call` for the service's tools, or for the SDK's own tools
(`files_read`, `files_write`, `files_list`, `memory_add`, `memory_search`) the agent's own `files.*`
or `memory.*` syscall. These run here because a tool must act as the agent (its namespace, its
grants): the tools service cannot make syscalls as an agent. A call that fails becomes a `tool`
message saying so (`{"error": {"code", "message"}}`), for the model to read, not an exception.
"""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue, ValidationError

from aios_schemas import (
    AiosError,
    ChatMessage,
    ChatReply,
    FunctionDef,
    SideEffects,
    ToolCall,
    ToolDef,
    ToolsCall,
    ToolsCallReply,
    ToolsList,
    ToolsListReply,
)
from aios_schemas.wire import validation_error

from .errors import typed

if TYPE_CHECKING:
    from .client import AIOS


@dataclass(frozen=True)
class AgentTool:
    """A tool run in the agent's process as the agent's own syscalls."""

    name: str
    description: str
    parameters: dict[str, JsonValue]
    run: Callable[[AIOS, dict[str, Any]], Awaitable[JsonValue]]

    def definition(self) -> ToolDef:
        return ToolDef(
            function=FunctionDef(name=self.name, description=self.description, parameters=self.parameters)
        )


def _obj(props: dict[str, JsonValue], required: list[str]) -> dict[str, JsonValue]:
    return {
        "type": "object",
        "properties": props,
        "required": list[JsonValue](required),
        "additionalProperties": False,
    }


async def _files_read(aios: AIOS, a: dict[str, Any]) -> JsonValue:
    return {"text": (await aios.files.read(a["path"])).decode("utf-8", errors="replace")}


async def _files_write(aios: AIOS, a: dict[str, Any]) -> JsonValue:
    info = await aios.files.write(a["path"], a["text"])
    return {"path": info.path, "version": info.version}


async def _files_list(aios: AIOS, a: dict[str, Any]) -> JsonValue:
    return {"files": [f.path for f in (await aios.files.list(a.get("prefix", ""))).entries]}


async def _memory_add(aios: AIOS, a: dict[str, Any]) -> JsonValue:
    return {"id": (await aios.memory.add(a["text"])).record.id}


async def _memory_search(aios: AIOS, a: dict[str, Any]) -> JsonValue:
    hits = (await aios.memory.search(a["query"], k=a.get("k", 5))).hits
    return {"hits": [{"id": h.record.id, "text": h.record.text, "score": h.score} for h in hits]}


_PATH: dict[str, JsonValue] = {"type": "string", "description": "A path in your own file space."}
AGENT_TOOLS: dict[str, AgentTool] = {
    t.name: t
    for t in (
        AgentTool(
            "files_read", "Read one of your files as text.", _obj({"path": _PATH}, ["path"]), _files_read
        ),
        AgentTool(
            "files_write",
            "Write text to one of your files (a new version; older ones are kept).",
            _obj({"path": _PATH, "text": {"type": "string"}}, ["path", "text"]),
            _files_write,
        ),
        AgentTool(
            "files_list",
            "List your files under a directory ('' for all).",
            _obj({"prefix": {"type": "string"}}, []),
            _files_list,
        ),
        AgentTool(
            "memory_add", "Remember a fact.", _obj({"text": {"type": "string"}}, ["text"]), _memory_add
        ),
        AgentTool(
            "memory_search",
            "Search what you remembered.",
            _obj(
                {"query": {"type": "string"}, "k": {"type": "integer", "minimum": 1, "maximum": 50}},
                ["query"],
            ),
            _memory_search,
        ),
    )
}


def _error_content(code: str, message: str) -> str:
    return json.dumps({"error": {"code": code, "message": message}})


def assistant_message(reply: ChatReply) -> ChatMessage:
    """The assistant turn a reply is, to put in the conversation before its tool results."""
    return ChatMessage(role="assistant", content=reply.content, tool_calls=reply.tool_calls)


class ToolsApi:
    """The kernel's tools (`tools.list`, `tools.call`) and the tool-calling step."""

    def __init__(self, client: AIOS) -> None:
        self._c = client
        self.agent_tools: dict[str, AgentTool] = dict(AGENT_TOOLS)

    async def list(
        self,
        names: Sequence[str] | None = None,
        *,
        side_effects: Sequence[SideEffects] | None = None,
        timeout: float | None = None,
    ) -> ToolsListReply:
        """The service's tools you may call (`names`: globs), with their limits and side effects."""
        try:
            p = ToolsList(
                names=builtins.list(names) if names is not None else None,
                side_effects=builtins.list(side_effects) if side_effects is not None else None,
            )
        except ValidationError as exc:
            raise typed(validation_error(exc, "tools.list payload")) from exc
        result = await self._c.syscall(p, timeout=timeout)
        assert isinstance(result, ToolsListReply)
        return result

    async def definitions(
        self, names: Sequence[str] | None = None, *, agent_tools: bool = True
    ) -> builtins.list[ToolDef]:
        """OpenAI tool definitions to pass to `llm.chat`: the service's and (unless told not to)
        this SDK's files/memory tools."""
        defs = (await self.list(names)).tools
        if agent_tools:
            defs = [d for d in defs if d.function.name not in self.agent_tools]
            defs += [t.definition() for t in self.agent_tools.values()]
        return defs

    async def call(
        self,
        name: str,
        arguments: Mapping[str, JsonValue] | None = None,
        *,
        timeout: float | None = None,
        id: str | None = None,
    ) -> ToolsCallReply:
        """Run the service's tool `name` (a syscall, scheduled within the tool's concurrency)."""
        try:
            p = ToolsCall(name=name, arguments=dict(arguments or {}))
        except ValidationError as exc:
            raise typed(validation_error(exc, "tools.call payload")) from exc
        result = await self._c.syscall(p, timeout=timeout, id=id)
        assert isinstance(result, ToolsCallReply)
        return result

    async def run_tool_call(self, call: ToolCall, *, timeout: float | None = None) -> ChatMessage:
        """One tool call of a model's reply, run as a syscall; its result as a `tool` message."""
        name = call.function.name
        try:
            arguments = json.loads(call.function.arguments or "{}")
            if not isinstance(arguments, dict):
                raise ValueError("the arguments are not a JSON object")
        except ValueError as exc:
            content = _error_content("invalid_request", f"arguments of {name} are not valid JSON: {exc}")
            return ChatMessage(role="tool", tool_call_id=call.id, content=content)
        try:
            local = self.agent_tools.get(name)
            if local is not None:
                output = await local.run(self._c, arguments)
            else:
                output = (await self.call(name, arguments, timeout=timeout)).output
            content = json.dumps(output)
        except AiosError as exc:
            content = _error_content(exc.code, exc.message)
        except (KeyError, TypeError) as exc:  # an SDK tool given arguments it cannot use
            content = _error_content("invalid_request", f"{type(exc).__name__}: {exc}")
        return ChatMessage(role="tool", tool_call_id=call.id, content=content)

    async def run_tool_calls(
        self, reply: ChatReply | Iterable[ToolCall], *, timeout: float | None = None
    ) -> builtins.list[ChatMessage]:
        """Run every tool call an `llm.chat` reply asked for (concurrently, each its own syscall);
        the `tool` messages to append after the assistant's message, in the calls' order."""
        calls = (reply.tool_calls or []) if isinstance(reply, ChatReply) else builtins.list(reply)
        return builtins.list(await asyncio.gather(*(self.run_tool_call(c, timeout=timeout) for c in calls)))
