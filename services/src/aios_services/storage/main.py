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

from pydantic import JsonValue

from aios_schemas import (
    AiosError,
    AnyResult,
    ExecReply,
    ExecRequest,
    FileContent,
    FileHit,
    FileHits,
    FileList,
    FilesCommit,
    FileShares,
    FilesInspect,
    FilesInspectReply,
    FilesReindex,
    FilesReindexReply,
    FilesSearch,
    FilesShare,
    FilesShares,
    FileVersions,
    Syscall,
    new_id,
    split_owner,
)

from ..memory.embedders import Embedder, HashingEmbedder, MiniLMEmbedder
from ..runtime import Bus, HealthDetails, cancel_and_wait, keep_running, main_for
from ..runtime.partitioned import Close, PartitionedResource, Partitioning, serve_partitioned
from ..runtime.partitions import check_layout, partition_of, partition_path
from ..runtime.service import load_settings
from ..runtime.worker import Handler, ResourceSpec
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
INSPECT_TIMEOUT_S = 30.0


def set_aside(db: Path, kept: Path) -> None:
    """Move the index (and its write-ahead log) out of the way: the next start rebuilds from S3."""
    for suffix in ("", ".wal"):
        src = db.with_name(db.name + suffix)
        if src.exists():
            src.rename(kept.with_name(kept.name + suffix))
    log.warning("storage index set aside at %s: it is rebuilt from S3 at the next start", kept)


def make_embedder(settings: StorageSettings) -> Embedder | None:
    if settings.files_embedder == "none":
        return None
    if settings.files_embedder == "minilm":
        return MiniLMEmbedder()
    return HashingEmbedder(settings.files_hashing_dim)


def files_owner(call: Syscall) -> str | int | None:
    """Whose files a call touches, which picks the partition that runs it: the owner its path
    names (`@owner/...`), else its caller; an upload's commit goes where the upload was started
    (its id begins with that partition); what was shared with the caller, and a search that names
    no owner, span every partition."""
    p = call.payload
    if isinstance(p, FilesCommit):
        return int(p.upload[:2], 16)
    if isinstance(p, FilesShares):
        return None
    if isinstance(p, FilesSearch):
        owner, _ = split_owner(p.prefix)
        return owner
    named = getattr(p, "path", None)
    if named is None:
        named = getattr(p, "prefix", "")
    owner, _ = split_owner(named if isinstance(named, str) else "")
    return owner or call.agent


def merge_files(call: Syscall, results: list[AnyResult]) -> AnyResult:
    """One answer from every partition's: the grants given and received, or the best hits."""
    p = call.payload
    if isinstance(p, FilesShares):
        shares = [r for r in results if isinstance(r, FileShares)]
        return FileShares(
            kind="files.shares",
            given=[g for r in shares for g in r.given],
            received=sorted((g for r in shares for g in r.received), key=lambda g: (g.owner, g.path)),
        )
    if isinstance(p, FilesSearch):
        hits = [h for r in results if isinstance(r, FileHits) for h in r.hits]

        def rank(h: FileHit) -> tuple[float, str, str]:  # as one partition orders them (meta.py)
            owner, path = split_owner(h.info.path)
            return (-h.score, owner or call.agent, path)

        hits.sort(key=rank)
        return FileHits(hits=hits[: p.k])
    raise AiosError("internal", f"{call.kind} is not answered by every partition")


async def complete_share(resource: PartitionedResource, req: ExecRequest, reply: ExecReply) -> ExecReply:
    """A grant's reply lists what the caller received too, which other partitions hold."""
    r = reply.result
    if not isinstance(req.syscall.payload, FilesShare) or r is None or not isinstance(r.result, FileShares):
        return reply
    ask = Syscall(id=new_id(), agent=req.syscall.agent, payload=FilesShares())
    every = await resource.everywhere(req.model_copy(update={"syscall": ask}))
    if every.result is None or not isinstance(every.result.result, FileShares):
        return reply  # the grant stands; what others shared is left as this partition knows it
    result = r.result.model_copy(update={"received": every.result.result.received})
    return reply.model_copy(update={"result": r.model_copy(update={"result": result})})


async def start(bus: Bus, stack: AsyncExitStack, settings: StorageSettings) -> HealthDetails:
    check_layout(settings.storage_db, settings.partitions)
    reindex: list[str] = []  # set by the operator's reindex: the files are set aside once closed
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
    embedder = make_embedder(settings)
    if isinstance(embedder, MiniLMEmbedder):
        await embedder.embed(["warm up"])  # fails now, clearly, if the model is not installed

    # One metadata file, text index and set of handlers per partition of the owners: a replica
    # serves the partitions it owns (runtime/partitions.py); one partition: the file `storage_db`.
    parts: dict[int, StorageHandlers] = {}
    count = settings.partitions

    async def open_partition(k: int) -> tuple[Handler, Close]:
        path = partition_path(settings.storage_db, k, count)
        meta = await asyncio.to_thread(Meta, path, resend_window_s=settings.resend_window_s)
        tasks: list[asyncio.Task[None]] = []
        try:
            if (await meta.run(meta.counts))[1] == 0:  # no metadata: new, or lost (S3 has the truth)
                rows, shares = await blobs.run(lambda: scan(blobs, settings.search_text_max_bytes))
                rows = [r for r in rows if partition_of(r[0].owner, count) == k]
                shares = [g for g in shares if partition_of(g.owner, count) == k]
                if rows or shares:
                    await meta.run(lambda: meta.restore(rows, shares))
                    log.warning(
                        "storage index of partition %d rebuilt from S3: %d versions, %d grants",
                        k,
                        len(rows),
                        len(shares),
                    )
            index = TextIndex(meta, embedder) if embedder is not None else None
            handlers = StorageHandlers(settings, meta, blobs, index, partition=k)

            async def sweep_forever() -> None:
                while True:
                    await handlers.sweep()
                    await asyncio.sleep(settings.sweep_interval_s)

            tasks.append(asyncio.create_task(keep_running("upload sweep", sweep_forever)))
            if index is not None:
                await index.catch_up()
                tasks.append(asyncio.create_task(keep_running("text index", index.run_forever)))
        except BaseException:
            for t in tasks:
                await cancel_and_wait(t)
            meta.close()
            raise
        parts[k] = handlers

        async def close() -> None:
            parts.pop(k, None)
            await handlers.drain(min(settings.drain_timeout_s, settings.partition_ttl_s / 2))
            for t in tasks:
                await cancel_and_wait(t)
            await asyncio.to_thread(meta.close)
            if reindex:
                set_aside(path, path.with_name(f"{path.name}.{reindex[0]}"))

        return handlers.handle, close

    resource, owners = await serve_partitioned(
        bus,
        stack,
        settings,
        SPEC,
        Partitioning(key=files_owner, open=open_partition, merge=merge_files, complete=complete_share),
    )

    async def inspect(req: FilesInspect) -> FilesInspectReply:
        result = await resource.call(req.agent, req.payload, INSPECT_TIMEOUT_S)
        assert isinstance(result, FileList | FileContent | FileVersions)
        return FilesInspectReply(result=result)

    async def reindex_request(req: FilesReindex) -> FilesReindexReply:
        """Set the index aside and stop (drained, like on SIGTERM); the supervisor restarts the
        service, which rebuilds the index from S3 at start. Files syscalls wait meanwhile. With
        partitions: those this replica serves (every replica is asked by `aios storage reindex`)."""
        if not reindex:
            reindex.append(f"before-reindex-{time.strftime('%Y%m%d-%H%M%S')}")
            # After this reply has gone out: the same graceful stop as an operator's SIGTERM.
            asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)
        db = settings.storage_db
        return FilesReindexReply(
            instance=settings.instance, pid=os.getpid(), kept_at=str(db.with_name(f"{db.name}.{reindex[0]}"))
        )

    await bus.serve(
        bus.ns.ctl("storage", INSPECT_OP), FilesInspect, inspect, queue="storage", max_concurrency=4
    )
    await bus.serve(bus.ns.ctl("storage", REINDEX_OP), FilesReindex, reindex_request, max_concurrency=1)

    def health() -> dict[str, JsonValue]:
        return {
            "bucket": blobs.bucket,
            "locks": sum(h.locks for h in list(parts.values())),
            "partitions": count,
            "serving": list[JsonValue](sorted(owners.serving)),
            "members": list[JsonValue](owners.members),
            "forwarded": resource.forwarded,
        }

    return health


def main() -> None:
    settings = load_settings("storage", StorageSettings)
    main_for("storage", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
