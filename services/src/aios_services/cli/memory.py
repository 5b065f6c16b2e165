"""`aios memory`: an operator looks at an agent's memory (list, one record with its history, search),
read-only, through the memory service (the one owner of its DuckDB file) on `ctl.memory.inspect`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_schemas import Namespace
from aios_schemas.memory import (
    MemoryGet,
    MemoryGetReply,
    MemoryInspect,
    MemoryInspectReply,
    MemoryList,
    MemoryListReply,
    MemoryRecord,
    MemorySearch,
    MemorySearchReply,
)

from .operator import ask, bad_input, request

Payload = TypeVar("Payload", MemoryList, MemoryGet, MemorySearch)

memory_app = typer.Typer(no_args_is_help=True, help="Inspect an agent's memory (read-only, as the operator).")
console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


async def inspect(url: str, ns: Namespace, req: MemoryInspect, timeout: float = 10.0) -> MemoryInspectReply:
    """The operator's read-only call, on `ctl.memory.inspect` (kernel credentials in `url`)."""
    return await request(url, ns.ctl("memory", "inspect"), req, MemoryInspectReply, timeout)


def _run(home: str | None, agent: str, kind: type[Payload], **fields: object) -> MemoryInspectReply:
    try:
        req = MemoryInspect(agent=agent, payload=kind.model_validate(fields))
    except ValidationError as exc:
        bad_input("memory", exc)
    return ask(home, "memory", "memory", "inspect", req, MemoryInspectReply)


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(title: str, rows: list[MemoryRecord], scores: list[float] | None = None) -> Table:
    table = Table(title=title)
    cols = ["id", "v", "session", "text", "metadata", "tags", "updated", "valid to", "tier"]
    for col in (["score"] if scores is not None else []) + cols:
        table.add_column(col, overflow="fold")
    for i, r in enumerate(rows):
        text = r.text if len(r.text) <= 80 else r.text[:77] + "..."
        cells = [
            r.id,
            str(r.version),
            r.session or "",
            escape(text),
            escape(str(r.metadata) if r.metadata else ""),
            escape(", ".join(r.tags)),
            _when(r.updated),
            _when(r.valid_to),
            r.tier,
        ]
        table.add_row(*([f"{scores[i]:.3f}"] if scores is not None else []), *cells)
    return table


@memory_app.command("ls")
def ls(
    agent: Annotated[str, typer.Argument(help="Agent whose memory to list.")],
    home: HomeOpt = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session/run.")] = None,
    history: Annotated[bool, typer.Option("--history", help="Also superseded versions.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """An agent's records, newest first."""
    got = _run(home, agent, MemoryList, session=session, history=history, limit=limit).result
    assert isinstance(got, MemoryListReply)
    if as_json:
        print(got.model_dump_json(indent=2))
        return
    console.print(_table(f"memory of {agent}", got.records))
    if got.next_offset is not None:
        console.print(f"(more: only the first {limit} are shown)")


@memory_app.command("get")
def get(
    agent: Annotated[str, typer.Argument(help="Agent that owns the record.")],
    record: Annotated[str, typer.Argument(help="Record id.")],
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One record with every superseded version."""
    got = _run(home, agent, MemoryGet, id=record, history=True).result
    assert isinstance(got, MemoryGetReply)
    if as_json:
        print(got.model_dump_json(indent=2))
        return
    console.print(_table(f"{agent}: {record}", [got.record, *got.history]))


@memory_app.command("search")
def search(
    agent: Annotated[str, typer.Argument(help="Agent whose memory to search.")],
    query: Annotated[str, typer.Argument(help="What to look for.")],
    home: HomeOpt = None,
    k: Annotated[int, typer.Option("--k", "-k", min=1, max=1000)] = 10,
    mode: Annotated[str, typer.Option("--mode", help="semantic or keyword.")] = "semantic",
    as_json: JsonOpt = False,
) -> None:
    """The best records for a query, with their scores."""
    how: Literal["semantic", "keyword"] = "keyword" if mode == "keyword" else "semantic"
    got = _run(home, agent, MemorySearch, query=query, k=k, mode=how).result
    assert isinstance(got, MemorySearchReply)
    if as_json:
        print(got.model_dump_json(indent=2))
        return
    title = f"{agent}: {query!r} ({got.mode}{', ' + got.embedder if got.embedder else ''})"
    console.print(_table(title, [h.record for h in got.hits], [h.score for h in got.hits]))
