"""The registry: every tool with its schemas, limits and side effects, how it runs, and the checks
around a run (who may call it, its arguments before, its output after)."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from pydantic import JsonValue

from aios_schemas import AiosError, FunctionDef, SideEffects, ToolDef, ToolEntry
from aios_schemas.tools import ToolSource

from .settings import ToolConfig

# Runs a tool: (arguments, timeout in seconds) -> its JSON output, or raises AiosError.
Runner = Callable[[dict[str, JsonValue], float], Awaitable[JsonValue]]


class ToolConfigError(ValueError):
    """A tool's definition is unusable (bad schema, missing field): the service refuses to start."""


def compile_schema(schema: dict[str, Any], what: str) -> Validator:
    """A validator for `schema` (its `$schema` draft, else 2020-12), the schema checked first."""
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ToolConfigError(f"{what} is not a valid JSON Schema: {exc.message}") from exc
    return cls(schema)


def _first_error(validator: Validator, value: Any) -> tuple[str, str] | None:
    """The JSON path and message of the most relevant error, or None if `value` is valid."""
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.path), list(map(str, e.path))))
    if not errors:
        return None
    err = errors[0]
    return err.json_path, err.message


@dataclass(frozen=True)
class Tool:
    entry: ToolEntry
    run: Runner
    agents: tuple[str, ...] | None  # globs of agents that may see and call it; None: all
    inputs: Validator
    outputs: Validator | None

    @property
    def name(self) -> str:
        return self.entry.name

    def allows(self, agent: str) -> bool:
        return self.agents is None or any(fnmatch.fnmatchcase(agent, p) for p in self.agents)

    def check_arguments(self, arguments: dict[str, JsonValue]) -> None:
        err = _first_error(self.inputs, arguments)
        if err is not None:
            path, message = err
            raise AiosError(
                "invalid_request",
                f"arguments of tool {self.name!r}: {path}: {message}",
                details={"tool": self.name, "path": path},
            )

    def check_output(self, output: JsonValue) -> None:
        if self.outputs is None:
            return
        err = _first_error(self.outputs, output)
        if err is not None:
            path, message = err
            raise AiosError(
                "backend_error",
                f"tool {self.name!r} returned output its output schema refuses: {path}: {message}",
                details={"tool": self.name, "path": path},
            )

    def definition(self) -> ToolDef:
        e = self.entry
        return ToolDef(
            function=FunctionDef(name=e.name, description=e.description or None, parameters=e.input_schema)
        )


@dataclass(frozen=True)
class Defaults:
    timeout_s: float
    max_concurrency: int
    memory_mb: int | None
    side_effects: SideEffects = "none"
    requires_approval: bool = False


def make_tool(
    name: str,
    *,
    source: ToolSource,
    description: str,
    input_schema: dict[str, JsonValue] | None,
    output_schema: dict[str, JsonValue] | None,
    defaults: Defaults,
    config: ToolConfig | None,
    run: Runner,
) -> Tool:
    """A tool from what its source says of it, with the operator's `config` over it (it always wins)."""
    c = config or ToolConfig()
    schema = c.input_schema if c.input_schema is not None else input_schema
    if schema is None:
        raise ToolConfigError(f"tool {name!r} needs an input_schema")
    out_schema = c.output_schema if c.output_schema is not None else output_schema
    inputs = compile_schema(schema, f"the input_schema of tool {name!r}")
    outputs = compile_schema(out_schema, f"the output_schema of tool {name!r}") if out_schema else None
    entry = ToolEntry(
        name=name,
        description=c.description if c.description is not None else description,
        input_schema=schema,
        output_schema=out_schema,
        source=source,
        timeout_s=c.timeout_s or defaults.timeout_s,
        max_concurrency=c.max_concurrency or defaults.max_concurrency,
        side_effects=c.side_effects or defaults.side_effects,
        requires_approval=c.requires_approval
        if c.requires_approval is not None
        else defaults.requires_approval,
        memory_mb=c.memory_mb or defaults.memory_mb,
    )
    agents = tuple(c.agents) if c.agents is not None else None
    return Tool(entry=entry, run=run, agents=agents, inputs=inputs, outputs=outputs)


class Registry:
    def __init__(self) -> None:
        self.tools: dict[str, Tool] = {}

    def add(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ToolConfigError(f"two tools are named {tool.name!r}")
        self.tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self.tools.pop(name, None)

    def get(self, name: str, agent: str) -> Tool:
        tool = self.tools.get(name)
        if tool is None or not tool.allows(agent):  # one the agent may not see does not exist for it
            raise AiosError(
                "not_found", f"unknown tool {name!r}", details={"tools": list[JsonValue](self.names(agent))}
            )
        return tool

    def names(self, agent: str) -> list[str]:
        return sorted(n for n, t in self.tools.items() if t.allows(agent))

    def visible(
        self, agent: str, names: Iterable[str] | None = None, side_effects: Iterable[str] | None = None
    ) -> list[Tool]:
        return self._select(self.names(agent), names, side_effects)

    def every(self, names: Iterable[str] | None = None) -> list[Tool]:
        """Every tool, whoever may call it (the operator's view)."""
        return self._select(sorted(self.tools), names, None)

    def _select(
        self, candidates: list[str], names: Iterable[str] | None, side_effects: Iterable[str] | None
    ) -> list[Tool]:
        patterns = list(names) if names is not None else None
        effects = set(side_effects) if side_effects is not None else None
        out = []
        for name in candidates:
            tool = self.tools[name]
            if patterns is not None and not any(fnmatch.fnmatchcase(name, p) for p in patterns):
                continue
            if effects is not None and tool.entry.side_effects not in effects:
                continue
            out.append(tool)
        return out

    def entries(self) -> list[ToolEntry]:
        now = time.time()
        return [t.entry.model_copy(update={"ts": now}) for t in self.tools.values()]


def check_settings(tools: dict[str, ToolConfig], builtins: Iterable[str]) -> None:
    """What can be checked of the operator's tools without running anything (`aios up` does it before
    it starts the stack): their schemas, and that a new tool says how it runs and what it takes."""
    known = set(builtins)
    for name, c in tools.items():
        if not c.enabled:
            continue
        if name not in known:
            if c.worker == "subprocess" and c.function is None:
                raise ToolConfigError(
                    f'tool {name!r} needs a `function` (module:function) or worker = "external"'
                )
            if c.input_schema is None:
                raise ToolConfigError(f"tool {name!r} needs an input_schema")
        if c.input_schema is not None:
            compile_schema(c.input_schema, f"the input_schema of tool {name!r}")
        if c.output_schema is not None:
            compile_schema(c.output_schema, f"the output_schema of tool {name!r}")
