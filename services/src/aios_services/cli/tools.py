"""`aios tools`: the operator sees every tool the tools service offers, with its source, limits and
side effects (`ctl.tools.inspect`; agents see theirs through `tools.list`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_schemas import ToolsListReply
from aios_schemas.tools import ToolsInspect

from .operator import ask

console = Console()


def tools_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Only these tools (globs: 'github__*').")] = None,
    home: Annotated[
        str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Every tool: source, timeout, concurrency, memory limit, side effects, approval."""
    reply = ask(home, "tools", "tools", "inspect", ToolsInspect(names=names or None), ToolsListReply)
    if as_json:
        print(json.dumps([e.model_dump(mode="json") for e in reply.entries], indent=2))
        return
    table = Table(title="tools")
    for col in (
        "name",
        "source",
        "timeout s",
        "at once",
        "memory MB",
        "side effects",
        "approval",
        "description",
    ):
        table.add_column(col, overflow="fold")
    for e in reply.entries:
        table.add_row(
            escape(e.name),
            e.source,
            f"{e.timeout_s:g}",
            str(e.max_concurrency),
            str(e.memory_mb or ""),
            e.side_effects,
            "yes" if e.requires_approval else "",
            escape(e.description[:80]),
        )
    console.print(table)
