"""`python -m aios_services.memory`: open the store, pick the embedder, serve `memory.*`."""

from __future__ import annotations

import logging
import os
from contextlib import AsyncExitStack

from pydantic import JsonValue

from aios_schemas import Syscall
from aios_schemas.memory import (
    MemoryEvicted,
    MemoryGetReply,
    MemoryInspect,
    MemoryInspectReply,
    MemoryListReply,
    MemorySearchReply,
)

from ..runtime import Bus, HealthDetails, main_for
from ..runtime.partitioned import Close, Partitioning, serve_partitioned
from ..runtime.partitions import check_layout, partition_path
from ..runtime.service import load_settings
from ..runtime.worker import Handler, ResourceSpec
from .embedders import BatchingEmbedder, Embedder, HashingEmbedder, HttpEmbedder, MiniLMEmbedder
from .handlers import Deps, MemoryHandlers
from .lruk import Quota
from .settings import MemorySettings
from .store import Blobs, Db, Space

log = logging.getLogger(__name__)
INSPECT_TIMEOUT_S = 30.0


async def make_embedder(settings: MemorySettings, stack: AsyncExitStack) -> Embedder:
    if settings.memory_embedder == "minilm":
        minilm = MiniLMEmbedder()
        await minilm.embed(["warm up"])  # fails now, clearly, if the model is not installed
        return BatchingEmbedder(minilm)
    if settings.memory_embedder == "http":
        if not settings.memory_embed_url or not settings.memory_embed_model:
            raise ValueError("the http embedder needs AIOS_MEMORY_EMBED_URL and AIOS_MEMORY_EMBED_MODEL")
        key = os.environ.get(settings.memory_embed_key_env) if settings.memory_embed_key_env else None
        http = HttpEmbedder(settings.memory_embed_url, settings.memory_embed_model, api_key=key)
        stack.push_async_callback(http.aclose)
        await http.probe()
        return BatchingEmbedder(http)
    return HashingEmbedder(settings.memory_hashing_dim)


async def start(bus: Bus, stack: AsyncExitStack, settings: MemorySettings) -> HealthDetails:
    embedder = await make_embedder(settings, stack)
    check_layout(settings.memory_db, settings.partitions)
    blobs = None
    if settings.s3_endpoint:
        blobs = Blobs(
            settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key, settings.memory_bucket
        )
        try:
            await blobs.ensure_bucket()
        except Exception as exc:  # S3 down: small values still work; large ones say so, retried later
            log.warning(
                "S3 at %s not usable yet (%s): large values will fail until it is", settings.s3_endpoint, exc
            )

    def quota(agent: str) -> Quota:
        q = settings.memory_quotas.get(agent)
        if q is not None:
            return Quota(q.records, q.bytes)
        return Quota(settings.memory_working_records, settings.memory_working_bytes)

    subject = bus.ns.service_event("memory", "evicted")

    async def publish(event: MemoryEvicted) -> None:
        await bus.publish(subject, event)

    # One store and one working set per partition of the agents' namespaces: a replica serves the
    # partitions it owns (runtime/partitions.py); with one partition, the one file `memory_db`.
    parts: dict[int, MemoryHandlers] = {}

    async def open_partition(k: int) -> tuple[Handler, Close]:
        db = Db(
            partition_path(settings.memory_db, k, settings.partitions), Space(embedder.name, embedder.dim)
        )
        try:
            await db.run(db.open)
        except BaseException:
            await db.aclose()
            raise
        handlers = MemoryHandlers(
            Deps(
                db=db,
                blobs=blobs,
                embedder=embedder,
                quota=quota,
                publish=publish,
                large_bytes=settings.memory_large_bytes,
                lru_k=settings.memory_lru_k,
            )
        )
        parts[k] = handlers

        async def close() -> None:
            parts.pop(k, None)
            await db.aclose()

        return handlers.handle, close

    resource, owners = await serve_partitioned(
        bus,
        stack,
        settings,
        ResourceSpec(
            service="memory",
            resource="memory",
            read_only=frozenset({"memory.get", "memory.list", "memory.search"}),
        ),
        Partitioning(key=namespace_of, open=open_partition),
    )

    async def inspect(req: MemoryInspect) -> MemoryInspectReply:
        """The operator's `aios memory`: a read-only call in an agent's namespace, run by the
        replica that owns it."""
        result = await resource.call(req.agent, req.payload, INSPECT_TIMEOUT_S)
        assert isinstance(result, MemoryListReply | MemoryGetReply | MemorySearchReply)
        return MemoryInspectReply(result=result)

    # One replica answers (queue group) and asks the owner of the agent's partition.
    await bus.serve(
        bus.ns.ctl("memory", "inspect"), MemoryInspect, inspect, queue="memory", max_concurrency=4
    )
    log.info(
        "memory: %s (%d partition(s)), embedder %s (%d dims), S3 %s",
        settings.memory_db,
        settings.partitions,
        embedder.name,
        embedder.dim,
        settings.s3_endpoint or "off",
    )

    def details() -> dict[str, JsonValue]:
        out: dict[str, JsonValue] = {
            "embedder": embedder.name,
            "dim": embedder.dim,
            "partitions": settings.partitions,
            "serving": list[JsonValue](sorted(owners.serving)),
            "members": list[JsonValue](owners.members),
            "forwarded": resource.forwarded,
        }
        for h in list(parts.values()):
            for name, value in h.details().items():
                if isinstance(value, int) and not isinstance(value, bool):
                    old = out.get(name, 0)
                    out[name] = (old if isinstance(old, int) else 0) + value
                elif isinstance(value, dict):
                    merged = out.setdefault(name, {})
                    assert isinstance(merged, dict)
                    for kind, n in value.items():
                        prev = merged.get(kind, 0)
                        merged[kind] = (prev if isinstance(prev, int) else 0) + (
                            n if isinstance(n, int) else 0
                        )
        return out

    return details


def namespace_of(call: Syscall) -> str:
    """Whose memory a call touches: the namespace it names, else its caller's."""
    ns = getattr(call.payload, "namespace", None)
    return ns if isinstance(ns, str) and ns else call.agent


def main() -> None:
    settings = load_settings("memory", MemorySettings)
    main_for("memory", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
