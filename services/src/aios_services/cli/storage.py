"""`aios storage reindex`: the operator rebuilds the storage service's metadata index from S3 (the
source of truth), e.g. after the DuckDB file was damaged. The service sets its index aside, stops,
is restarted by the supervisor, and rebuilds at start; files syscalls wait in the scheduler."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import nats
import typer
from rich.console import Console

from aios_schemas import (
    AiosError,
    FilesReindex,
    FilesReindexReply,
    Health,
    HealthQuery,
    Namespace,
    decode_reply,
    encode,
)
from aios_sdk.config import server_urls

from .operator import run_against_stack

storage_app = typer.Typer(no_args_is_help=True, help="Operate the storage service.")
console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]


async def reindex(url: str, ns: Namespace, wait_s: float) -> tuple[FilesReindexReply, Health]:
    nc = await nats.connect(server_urls(url), connect_timeout=2)
    try:
        msg = await nc.request(ns.ctl("storage", "reindex"), encode(FilesReindex()), timeout=10)
        asked = decode_reply(msg.data, msg.headers, FilesReindexReply)
        deadline = time.monotonic() + wait_s
        while True:  # until a new storage process answers (it rebuilt its index before serving)
            try:
                msg = await nc.request(ns.ctl("storage", "health"), encode(HealthQuery()), timeout=1)
                health = decode_reply(msg.data, msg.headers, Health)
                if health.pid != asked.pid:
                    return asked, health
            except (nats.errors.Error, AiosError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the storage service did not come back within {wait_s:.0f}s")
            await asyncio.sleep(0.25)
    finally:
        await nc.close()


@storage_app.command("reindex")
def reindex_cmd(
    home: HomeOpt = None,
    wait: Annotated[float, typer.Option(min=1, help="Seconds to wait for the service to be back.")] = 120.0,
) -> None:
    """Rebuild the files index from S3 (the old index file is kept beside it)."""
    asked, health = run_against_stack(home, "storage", "storage", lambda url, ns: reindex(url, ns, wait))
    console.print(
        f"storage index rebuilt from S3 (pid {asked.pid} -> {health.pid}); old index: {asked.kept_at}"
    )
