"""`python -m aios_services.storage`: open the metadata (DuckDB) and the bucket (S3), serve the
`files` resource's exec lane, and the operator's read-only inspection subject."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from contextlib import AsyncExitStack
from pathlib import Path

from aios_schemas import (
    FileContent,
    FileList,
    FilesInspect,
    FilesInspectReply,
    FilesReindex,
    FilesReindexReply,
    FileVersions,
    Syscall,
    new_id,
)

from ..memory.embedders import HashingEmbedder, MiniLMEmbedder
from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.service import load_settings
from ..runtime.worker import ResourceSpec, serve_resource
from .blobs import Blobs
from .handlers import StorageHandlers
from .meta import Meta
from .rebuild import scan
from .settings import StorageSettings
from .textindex import TextIndex

log = logging.getLogger(__name__)
SPEC = ResourceSpec(
    service="storage",
    resource="files",
    read_only=frozenset(
        {"files.read", "files.stat", "files.list", "files.versions", "files.shares", "files.search"}
    ),
)
INSPECT_OP = "inspect"  # ctl.storage.inspect: the operator's `aios files` (the kernel user only)
REINDEX_OP = "reindex"  # ctl.storage.reindex: `aios storage reindex` (the kernel user only)


def set_aside(db: Path, kept: Path) -> None:
    """Move the index (and its write-ahead log) out of the way: the next start rebuilds from S3."""
    for suffix in ("", ".wal"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            src.rename(kept.with_name(kept.name + suffix))
    log.warning("storage index set aside at %s: it is rebuilt from S3 at the next start", kept)


async def make_index(settings: StorageSettings, meta: Meta) -> TextIndex | None:
    if settings.files_embedder == "none":
        return None
    if settings.files_embedder == "minilm":
        minilm = MiniLMEmbedder()
        await minilm.embed(["warm up"])  # fails now, clearly, if the model is not installed
        return TextIndex(meta, minilm)
    return TextIndex(meta, HashingEmbedder(settings.files_hashing_dim))


async def start(bus: Bus, stack: AsyncExitStack, settings: StorageSettings) -> HealthDetails:
    reindex: list[Path] = []  # set by the operator's reindex: where the index goes once closed

    # Registered first, so it runs last: after the metadata is closed.
    def after_close() -> None:
        if reindex:
            set_aside(settings.storage_db, reindex[0])

    stack.callback(after_close)
    meta = Meta(settings.storage_db, resend_window_s=settings.resend_window_s)
    stack.callback(meta.close)
    blobs = Blobs(
        endpoint=settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key.get_secret_value(),
        region=settings.s3_region,
        bucket=settings.files_bucket,
        public_endpoint=settings.s3_public_endpoint,
        threads=min(settings.slots, 64),
    )
    stack.callback(blobs.close)
    await blobs.run(blobs.ensure_bucket)
    if (await meta.run(meta.counts))[1] == 0:  # no metadata: new, or lost (S3 has the truth)
        rows, shares = await blobs.run(lambda: scan(blobs, settings.search_text_max_bytes))
        if rows or shares:
            await meta.run(lambda: meta.restore(rows, shares))
            log.warning("storage index rebuilt from S3: %d versions, %d grants", len(rows), len(shares))
    index = await make_index(settings, meta)
    handlers = StorageHandlers(settings, meta, blobs, index)
    stack.push_async_callback(handlers.drain, settings.drain_timeout_s)  # before the stores close

    async def inspect(req: FilesInspect) -> FilesInspectReply:
        result = await handlers.handle(Syscall(id=new_id(), agent=req.agent, payload=req.payload))
        assert isinstance(result, FileList | FileContent | FileVersions)
        return FilesInspectReply(result=result)

    async def sweep_forever() -> None:
        while True:
            await handlers.sweep()
            await asyncio.sleep(settings.sweep_interval_s)

    async def reindex_request(req: FilesReindex) -> FilesReindexReply:
        """Set the index aside and stop (drained, like on SIGTERM); the supervisor restarts the
        service, which rebuilds the index from S3 at start. Files syscalls wait meanwhile."""
        if not reindex:
            db = settings.storage_db
            reindex.append(db.with_name(f"{db.name}.before-reindex-{time.strftime('%Y%m%d-%H%M%S')}"))
            # After this reply has gone out: the same graceful stop as an operator's SIGTERM.
            asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        return FilesReindexReply(instance=settings.instance, pid=os.getpid(), kept_at=str(reindex[0]))

    await bus.serve(bus.ns.ctl("storage", INSPECT_OP), FilesInspect, inspect, max_concurrency=4)
    await bus.serve(bus.ns.ctl("storage", REINDEX_OP), FilesReindex, reindex_request, max_concurrency=1)
    await serve_resource(bus, stack, settings, SPEC, handlers.handle)
    sweeper = asyncio.create_task(keep_running("upload sweep", sweep_forever))
    stack.push_async_callback(cancel_and_wait, sweeper)
    if index is not None:
        await index.catch_up()
        indexer = asyncio.create_task(keep_running("text index", index.run_forever))
        stack.push_async_callback(cancel_and_wait, indexer)

    return handlers.health


def main() -> None:
    settings = load_settings("storage", StorageSettings)
    main_for("storage", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
