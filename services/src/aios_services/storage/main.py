"""`python -m aios_services.storage`: open the metadata (DuckDB) and the bucket (S3), serve the
`files` resource's exec lane, and the operator's read-only inspection subject."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack

from pydantic import BaseModel, ConfigDict, Field

from aios_schemas import AnyResult, FilesList, FilesRead, FilesVersions, Syscall, new_id
from aios_schemas.envelope import AGENT_PATTERN

from ..runtime import Bus, HealthDetails, keep_running, main_for
from ..runtime.service import load_settings
from ..runtime.worker import ResourceSpec, serve_resource
from .blobs import Blobs
from .handlers import StorageHandlers
from .meta import Meta
from .settings import StorageSettings

SPEC = ResourceSpec(service="storage", resource="files")
INSPECT_OP = "inspect"  # ctl.storage.inspect: the operator's `aios files` (the kernel user only)


class InspectRequest(BaseModel):
    """Operator -> storage: run a read-only `files.*` call as `agent` (for `aios files`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str = Field(pattern=AGENT_PATTERN, description="Agent whose files to look at.")
    payload: FilesList | FilesRead | FilesVersions = Field(discriminator="kind", description="The call.")


class InspectReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    result: AnyResult = Field(discriminator="kind", description="What the call returned.")


async def start(bus: Bus, stack: AsyncExitStack, settings: StorageSettings) -> HealthDetails:
    meta = Meta(settings.storage_db)
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
    handlers = StorageHandlers(settings, meta, blobs)

    async def inspect(req: InspectRequest) -> InspectReply:
        call = Syscall(id=new_id(), agent=req.agent, payload=req.payload)
        return InspectReply(result=await handlers.handle(call))

    async def sweep_forever() -> None:
        while True:
            await handlers.sweep()
            await asyncio.sleep(settings.sweep_interval_s)

    await bus.serve(bus.ns.ctl("storage", INSPECT_OP), InspectRequest, inspect, max_concurrency=4)
    await serve_resource(bus, stack, settings, SPEC, handlers.handle)
    sweeper = asyncio.create_task(keep_running("upload sweep", sweep_forever))
    stack.push_async_callback(_stop, sweeper)

    return handlers.health


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def main() -> None:
    settings = load_settings("storage", StorageSettings)
    main_for("storage", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
