"""`python -m aios_services.tools`: build the registry (built-ins, the operator's tools, MCP servers'
tools), start the sandbox, and serve `tools.list` (resource `tools`) and each tool as its own
resource (`tools.<name>`, with `max_concurrency` slots: the scheduler queues calls beyond it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from typing import cast

import nats
from pydantic import JsonValue

from aios_schemas import AiosError, SideEffects, encode, tool_key
from aios_schemas.tools import ToolRegister, ToolRegistered, ToolsInspect

from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.service import load_settings
from ..runtime.worker import ResourceSpec, ServedResources, serve_resources
from .builtins import BUILTINS
from .handlers import ToolsHandlers
from .mcp_source import McpServer
from .registry import Defaults, Registry, Runner, Tool, ToolConfigError, check_settings, make_tool
from .sandbox import Pool
from .settings import ToolConfig, ToolsSettings

log = logging.getLogger(__name__)
LIST_SPEC = ResourceSpec(service="tools", resource="tools", read_only=frozenset({"tools.list"}))


def external_subject(bus: Bus, name: str) -> str:
    """Where an external worker (any language, plain NATS) answers calls of tool `name`."""
    return f"{bus.ns.root}.exec.tools.ext.{name}"


def sandboxed(
    pool: Pool, name: str, function: str, memory_mb: int | None, options: dict[str, JsonValue]
) -> Runner:
    async def run(arguments: dict[str, JsonValue], timeout_s: float) -> JsonValue:
        return await pool.run(
            name, function, arguments, timeout_s=timeout_s, memory_mb=memory_mb, options=options
        )

    return run


def external(bus: Bus, name: str) -> Runner:
    """A call to an external worker: request `{"tool", "arguments"}`, answer `{"output": ...}` or
    `{"error": {"code", "message"}}`, on `exec.tools.ext.<name>` (a queue group of workers)."""

    async def run(arguments: dict[str, JsonValue], timeout_s: float) -> JsonValue:
        body = json.dumps({"tool": name, "arguments": arguments}).encode()
        try:
            msg = await bus.nc.request(external_subject(bus, name), body, timeout=timeout_s)
        except nats.errors.NoRespondersError:
            raise AiosError("backend_unavailable", f"no worker serves tool {name!r} now") from None
        except nats.errors.TimeoutError:
            raise AiosError(
                "deadline_exceeded", f"tool {name!r} ran past its timeout of {timeout_s:g}s"
            ) from None
        try:
            answer = json.loads(msg.data)
            if not isinstance(answer, dict) or not ("output" in answer or "error" in answer):
                raise ValueError("neither output nor error")
        except ValueError as exc:
            raise AiosError(
                "backend_error", f"tool {name!r}: its worker answered no valid JSON: {exc}"
            ) from exc
        if "error" in answer:
            err = answer["error"] if isinstance(answer["error"], dict) else {}
            code = err.get("code", "backend_error")
            raise AiosError(
                code
                if code in ("invalid_request", "not_found", "conflict", "backend_error")
                else "backend_error",
                f"tool {name!r} failed: {err.get('message', '')}"[:2000],
            )
        output: JsonValue = answer["output"]
        return output

    return run


def local_tools(settings: ToolsSettings, pool: Pool, bus: Bus) -> list[Tool]:
    """Built-ins and the operator's own tools."""
    defaults = Defaults(settings.tools_timeout_s, settings.tools_max_concurrency, settings.tools_memory_mb)
    tools = []
    for name, (function, description, schema, out_schema, effects) in BUILTINS.items():
        cfg = settings.tool.get(name)
        if (cfg is not None and not cfg.enabled) or (name == "web_fetch" and not settings.web_fetch):
            continue
        options: dict[str, JsonValue] = {}
        if name == "web_fetch":
            options = {
                "hosts": list[JsonValue](settings.web_fetch_hosts),
                "loopback_only": settings.web_fetch_loopback_only,
            }
        memory = (cfg.memory_mb if cfg else None) or defaults.memory_mb
        tools.append(
            make_tool(
                name,
                source="builtin",
                description=description,
                input_schema=schema,
                output_schema=out_schema,
                defaults=Defaults(
                    defaults.timeout_s,
                    defaults.max_concurrency,
                    defaults.memory_mb,
                    cast(SideEffects, effects),
                ),
                config=cfg,
                run=sandboxed(pool, name, function, memory, {**options, **(cfg.options if cfg else {})}),
            )
        )
    for name, cfg in settings.tool.items():
        if name in BUILTINS or not cfg.enabled:
            continue
        run = _own_runner(name, cfg, pool, bus, defaults)
        tools.append(
            make_tool(
                name,
                source="external" if cfg.worker == "external" else "python",
                description="",
                input_schema=None,
                output_schema=None,
                defaults=defaults,
                config=cfg,
                run=run,
            )
        )
    return tools


def _own_runner(name: str, cfg: ToolConfig, pool: Pool, bus: Bus, defaults: Defaults) -> Runner:
    if cfg.worker == "external":
        return external(bus, name)
    if cfg.function is None:
        raise ToolConfigError(f'tool {name!r} needs a `function` (module:function) or worker = "external"')
    return sandboxed(pool, name, cfg.function, cfg.memory_mb or defaults.memory_mb, cfg.options)


class ToolsService:
    def __init__(
        self, bus: Bus, settings: ToolsSettings, registry: Registry, served: ServedResources
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.registry = registry
        self.served = served
        self.leases: dict[str, float] = {}  # external workers' tools: unix time each lease ends

    async def add(self, tool: Tool) -> None:
        self.registry.add(tool)
        # Flags first: the scheduler may read them as soon as the resource appears.
        limits = await self.bus.ensure_kv(self.bus.ns.limits_bucket)
        await limits.put(tool_key(tool.name), encode(tool.entry.model_copy(update={"ts": time.time()})))
        await self.served.add(
            ResourceSpec(
                service="tools",
                resource=f"tools.{tool.name}",
                slots=tool.entry.max_concurrency,
                requires_approval=tool.entry.requires_approval,  # the scheduler holds each call for it
                cancellable=True,  # a cancelled call's worker process is killed, not left running
                # A tool that changes the world runs at most once, even when its worker dies midway.
                at_most_once=tool.entry.side_effects != "none",
            )
        )

    async def register(self, req: ToolRegister) -> ToolRegistered:
        """An external worker's tool: added, or its lease renewed (`ctl.tools.register`)."""
        known = self.registry.tools.get(req.name)
        if known is not None and req.name not in self.leases:
            if known.entry.source == "external":  # the operator declared it: the config's definition
                return ToolRegistered(name=req.name, expires=None)
            raise AiosError("conflict", f"tool {req.name!r} exists and is not an external worker's")
        if known is None:
            try:
                tool = make_tool(
                    req.name,
                    source="external",
                    description=req.description,
                    input_schema=req.input_schema,
                    output_schema=req.output_schema,
                    defaults=Defaults(
                        req.timeout_s, req.max_concurrency, None, req.side_effects, req.requires_approval
                    ),
                    config=None,
                    run=external(self.bus, req.name),
                )
            except ToolConfigError as exc:
                raise AiosError("invalid_request", str(exc)) from exc
            await self.add(tool)
            log.info("external tool %s registered", req.name)
        self.leases[req.name] = time.time() + req.ttl_s
        return ToolRegistered(name=req.name, expires=self.leases[req.name])

    async def expire_forever(self) -> None:
        """Tools of external workers that stopped registering them go away."""
        while True:
            await asyncio.sleep(0.5)
            now = time.time()
            for name in [n for n, until in self.leases.items() if until < now]:
                del self.leases[name]
                self.registry.remove(name)
                await self.served.remove(f"tools.{name}")
                limits = await self.bus.ensure_kv(self.bus.ns.limits_bucket)
                with contextlib.suppress(nats.errors.Error):
                    await limits.delete(tool_key(name))
                log.info("external tool %s not registered again: removed", name)

    async def add_mcp(self, server: McpServer) -> None:
        """Register an MCP server's tools once it answers (retried until it does)."""
        defaults = Defaults(self.settings.tools_timeout_s, self.settings.tools_max_concurrency, None)
        delay = 0.5
        while True:
            try:
                tools = await server.tools(defaults)
                break
            except ToolConfigError:
                raise
            except Exception as exc:
                log.warning(
                    "MCP server %s not usable yet (%s); trying again in %.0fs", server.name, exc, delay
                )
                await server.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
        for tool in tools:
            await self.add(tool)
        log.info("MCP server %s (protocol %s): %d tools", server.name, server.protocol, len(tools))


async def start(bus: Bus, stack: AsyncExitStack, settings: ToolsSettings) -> HealthDetails:
    check_settings(dict(settings.tool), BUILTINS)  # a bad definition stops the start, loudly
    pool = Pool(spare=settings.tools_spare_workers, max_idle=settings.tools_idle_workers)
    stack.push_async_callback(pool.close)
    await pool.start()
    registry = Registry()
    handlers = ToolsHandlers(registry, settings.tools_max_output_bytes)
    served = await serve_resources(bus, stack, settings, [LIST_SPEC], handlers.handle)
    service = ToolsService(bus, settings, registry, served)
    for tool in local_tools(settings, pool, bus):
        await service.add(tool)
    await bus.serve(bus.ns.ctl("tools", "register"), ToolRegister, service.register, max_concurrency=16)
    await bus.serve(bus.ns.ctl("tools", "inspect"), ToolsInspect, handlers.inspect, max_concurrency=4)
    expiry = asyncio.create_task(keep_running("external tool leases", service.expire_forever))
    stack.push_async_callback(cancel_and_wait, expiry)
    servers = [McpServer(name, cfg) for name, cfg in settings.mcp.items()]
    registering = []
    for server in servers:
        stack.push_async_callback(server.close)
        task = asyncio.create_task(_logged(server.name, service.add_mcp(server)))
        stack.push_async_callback(cancel_and_wait, task)
        registering.append(task)
    if registering:  # ready with its MCP tools, unless a server is slow or down: then they come later
        await asyncio.wait(registering, timeout=settings.tools_mcp_start_wait_s)

    def details() -> dict[str, JsonValue]:
        mcp: dict[str, JsonValue] = {s.name: s.protocol for s in servers}
        return {**handlers.details(), "sandbox": pool.details(), "mcp": mcp}

    log.info("tools: %s", ", ".join(sorted(registry.tools)) or "none")
    return details


async def _logged(name: str, registering: Awaitable[None]) -> None:
    try:
        await registering
    except Exception:  # a bad tool definition of that server: its tools stay out, the rest serve
        log.exception("MCP server %s: its tools could not be registered", name)


def main() -> None:
    settings = load_settings("tools", ToolsSettings)
    main_for("tools", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
