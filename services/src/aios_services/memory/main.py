"""`python -m aios_services.memory`: open the store, pick the embedder, serve `memory.*`."""

from __future__ import annotations

import logging
import os
from contextlib import AsyncExitStack

from aios_schemas import Syscall, new_id
from aios_schemas.memory import (
    MemoryEvicted,
    MemoryGetReply,
    MemoryInspect,
    MemoryInspectReply,
    MemoryListReply,
    MemorySearchReply,
)

from ..runtime import Bus, HealthDetails, main_for
from ..runtime.service import load_settings
from ..runtime.worker import ResourceSpec, serve_resource
from .embedders import BatchingEmbedder, Embedder, HashingEmbedder, HttpEmbedder, MiniLMEmbedder
from .handlers import Deps, MemoryHandlers
from .lruk import Quota
from .settings import MemorySettings
from .store import Blobs, Db, Space

log = logging.getLogger(__name__)


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
    db = Db(settings.memory_db, Space(embedder.name, embedder.dim))
    await db.run(db.open)

    async def close() -> None:
        # Last: the worker has withdrawn from the catalogue; stop taking calls and finish those in
        # hand before the store closes under them (the service runtime drains only after this).
        await bus.drain(settings.drain_timeout_s)
        await db.aclose()

    stack.push_async_callback(close)
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

    async def inspect(req: MemoryInspect) -> MemoryInspectReply:
        """The operator's `aios memory`: a read-only call in an agent's namespace."""
        result = await handlers.handle(Syscall(id=new_id(), agent=req.agent, payload=req.payload))
        assert isinstance(result, MemoryListReply | MemoryGetReply | MemorySearchReply)
        return MemoryInspectReply(result=result)

    await bus.serve(bus.ns.ctl("memory", "inspect"), MemoryInspect, inspect, max_concurrency=4)
    await serve_resource(
        bus,
        stack,
        settings,
        ResourceSpec(
            service="memory",
            resource="memory",
            read_only=frozenset({"memory.get", "memory.list", "memory.search"}),
        ),
        handlers.handle,
    )
    log.info(
        "memory: %s, embedder %s (%d dims), S3 %s",
        settings.memory_db,
        embedder.name,
        embedder.dim,
        settings.s3_endpoint or "off",
    )
    return handlers.details


def main() -> None:
    settings = load_settings("memory", MemorySettings)
    main_for("memory", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
