"""`aios files`: an operator looks at an agent's files (list, versions, content), read-only, through
the storage service (the one owner of its DuckDB file) on `ctl.storage.inspect`."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aios_schemas import (
    FileContent,
    FileInfo,
    FileList,
    FilesInspect,
    FilesInspectReply,
    FilesList,
    FilesRead,
    FilesVersions,
    FileVersions,
    Namespace,
)

from .operator import ask, bad_input, request

Payload = TypeVar("Payload", FilesList, FilesRead, FilesVersions)

files_app = typer.Typer(no_args_is_help=True, help="Inspect an agent's files (read-only, as the operator).")
console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]


async def inspect(url: str, ns: Namespace, req: FilesInspect, timeout: float = 10.0) -> FilesInspectReply:
    """The operator's read-only call, on `ctl.storage.inspect` (kernel credentials in `url`)."""
    return await request(url, ns.ctl("storage", "inspect"), req, FilesInspectReply, timeout)


def _run(home: str | None, agent: str, kind: type[Payload], **fields: object) -> FilesInspectReply:
    try:
        req = FilesInspect(agent=agent, payload=kind.model_validate(fields))
    except ValidationError as exc:
        bad_input("files", exc)
    return ask(home, "files", "storage", "inspect", req, FilesInspectReply)


def _table(title: str, rows: list[FileInfo]) -> Table:
    table = Table(title=title)
    for col in ("path", "version", "size", "sha256", "author", "time", "deleted"):
        table.add_column(col, overflow="fold")
    for e in rows:
        when = datetime.fromtimestamp(e.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            escape(e.path),
            str(e.version),
            str(e.size),
            e.sha256[:12],
            e.author,
            when,
            "yes" if e.deleted else "",
        )
    return table


@files_app.command("ls")
def ls(
    agent: Annotated[str, typer.Argument(help="Agent whose files to list.")],
    prefix: Annotated[str, typer.Argument(help="Directory ('' everything).")] = "",
    home: HomeOpt = None,
    deleted: Annotated[bool, typer.Option("--deleted", help="Also files deleted last.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List an agent's files under a directory: newest version of each."""
    got = _run(home, agent, FilesList, prefix=prefix, include_deleted=deleted, limit=10000).result
    assert isinstance(got, FileList)
    if as_json:
        print(got.model_dump_json(indent=2))
        return
    console.print(_table(f"{agent}: {prefix or '/'}", got.entries))
    if got.truncated:
        console.print("(more: only the first 10000 are shown)")


@files_app.command("versions")
def versions(
    agent: Annotated[str, typer.Argument(help="Agent that owns the file.")],
    path: Annotated[str, typer.Argument(help="Path in the agent's namespace.")],
    home: HomeOpt = None,
) -> None:
    """The versions of one file, newest first."""
    got = _run(home, agent, FilesVersions, path=path, limit=10000).result
    assert isinstance(got, FileVersions)
    console.print(_table(f"{agent}: {path}", got.versions))


@files_app.command("cat")
def cat(
    agent: Annotated[str, typer.Argument(help="Agent that owns the file.")],
    path: Annotated[str, typer.Argument(help="Path in the agent's namespace.")],
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Version (default newest).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Write a file's bytes (newest version, or --version) to stdout."""
    got = _run(home, agent, FilesRead, path=path, version=version).result
    assert isinstance(got, FileContent)
    out = sys.stdout.buffer
    if got.content is not None:
        out.write(got.content)
    elif got.url is not None:
        with urllib.request.urlopen(got.url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, 1024 * 1024)
    out.flush()
