"""`tools.list` and `tools.call`: the registry's answers, the checks around a run."""

from __future__ import annotations

import json
import time

from pydantic import JsonValue

from aios_schemas import AiosError, Syscall, ToolsCall, ToolsCallReply, ToolsList, ToolsListReply
from aios_schemas.tools import ToolsInspect

from .registry import Registry


class ToolsHandlers:
    def __init__(self, registry: Registry, max_output_bytes: int = 1024 * 1024) -> None:
        self.registry = registry
        self.max_output_bytes = max_output_bytes
        self.counts: dict[str, int] = {"calls": 0, "failed": 0}

    async def handle(self, call: Syscall) -> ToolsListReply | ToolsCallReply:
        p = call.payload
        if isinstance(p, ToolsList):
            return self.list(call.agent, p)
        if isinstance(p, ToolsCall):
            return await self.call(call.agent, p, call.deadline)
        raise AiosError("invalid_request", f"the tools service does not run {call.kind}")

    def list(self, agent: str, p: ToolsList) -> ToolsListReply:
        tools = self.registry.visible(agent, p.names, p.side_effects)
        return ToolsListReply(tools=[t.definition() for t in tools], entries=[t.entry for t in tools])

    async def inspect(self, req: ToolsInspect) -> ToolsListReply:
        """The operator's view: every tool, with who may call it left to the entries' readers."""
        tools = self.registry.every(req.names)
        return ToolsListReply(tools=[t.definition() for t in tools], entries=[t.entry for t in tools])

    async def call(self, agent: str, p: ToolsCall, deadline: float | None) -> ToolsCallReply:
        """`agent` is the authenticated caller (the scheduler checked it), never one a payload names."""
        tool = self.registry.get(p.name, agent)
        tool.check_arguments(p.arguments)
        timeout = tool.entry.timeout_s
        if deadline is not None:
            timeout = min(timeout, max(0.001, deadline - time.time()))
        self.counts["calls"] += 1
        try:
            output = await tool.run(dict(p.arguments), timeout)
            tool.check_output(output)
            size = len(json.dumps(output))
            if size > self.max_output_bytes:  # it goes into a model's context and over the bus
                raise AiosError(
                    "backend_error",
                    f"tool {tool.name!r} returned {size} bytes, over the limit of {self.max_output_bytes}",
                    details={"tool": tool.name, "size": size, "limit": self.max_output_bytes},
                )
        except AiosError:
            self.counts["failed"] += 1
            raise
        return ToolsCallReply(name=tool.name, output=output)

    def details(self) -> dict[str, JsonValue]:
        return {"tools": list[JsonValue](sorted(self.registry.tools)), **self.counts}
