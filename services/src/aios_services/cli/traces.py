"""`aios trace` and `aios stats`: what the recorder stored, for the operator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from aios_schemas.traces import SpanRecord, TraceQuery, TraceReply, UsageQuery, UsageReply

from .operator import ask

console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")[:-3]


def _tree(spans: list[SpanRecord]) -> list[Tree]:
    """Spans as trees (parent -> children), roots first by start time."""
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SpanRecord]] = {}
    for s in spans:
        children.setdefault(s.parent_id if s.parent_id in ids else None, []).append(s)

    def node(s: SpanRecord) -> Tree:
        t = Tree(f"{s.name}  [dim]{s.service}[/dim]  {(s.end - s.start) * 1000:.2f} ms")
        for c in sorted(children.get(s.span_id, []), key=lambda c: c.start):
            t.add(node(c))
        return t

    return [node(s) for s in sorted(children.get(None, []), key=lambda s: s.start)]


def trace_cmd(
    syscall_id: Annotated[
        str | None, typer.Argument(help="A syscall id (the gateway's completion id too).")
    ] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="An agent's recent syscalls instead.")] = None,
    limit: Annotated[int, typer.Option(help="How many (with --agent).")] = 20,
    archive: Annotated[bool, typer.Option(help="Read the Parquet archives on S3.")] = False,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """One syscall's history (events and its trace's spans), or an agent's recent syscalls."""
    if (syscall_id is None) == (agent is None):
        console.print("give a syscall id, or --agent NAME")
        raise typer.Exit(2)
    sid = syscall_id.removeprefix("chatcmpl-") if syscall_id else None
    q = TraceQuery(id=sid, agent=agent, limit=limit, archive=archive)
    reply = ask(home, "trace", "recorder", "trace", q, TraceReply)
    if as_json:
        print(reply.model_dump_json(indent=2))
        return
    if not reply.events and not reply.spans:
        console.print("nothing recorded for that")
        raise typer.Exit(1)
    table = Table(title="events")
    for col in ("time", "syscall", "state", "agent", "kind", "resource", "details"):
        table.add_column(col, overflow="fold")
    for e in reply.events:
        table.add_row(_when(e.ts), e.id, e.state, e.agent, e.kind, e.resource or "", json.dumps(e.details))
    console.print(table)
    for tree in _tree(reply.spans):
        console.print(tree)


def stats_cmd(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    since: Annotated[float | None, typer.Option(help="Seconds back (default: everything recorded).")] = None,
    home: HomeOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Per agent and resource: calls, errors, tokens, latency p50/p99, cost (when priced)."""
    import time

    q = UsageQuery(agent=agent, since=None if since is None else time.time() - since)
    reply = ask(home, "stats", "recorder", "stats", q, UsageReply)
    if as_json:
        print(reply.model_dump_json(indent=2))
        return
    table = Table(title="usage")
    for col in ("agent", "resource", "calls", "errors", "tokens", "p50 ms", "p99 ms", "cost"):
        table.add_column(col)
    for r in reply.rows:
        table.add_row(
            r.agent,
            r.resource,
            str(r.calls),
            str(r.errors),
            str(r.tokens),
            "" if r.latency_p50_ms is None else f"{r.latency_p50_ms:.1f}",
            "" if r.latency_p99_ms is None else f"{r.latency_p99_ms:.1f}",
            "" if r.cost is None else f"{r.cost:.4f}",
        )
    console.print(table)
