"""A kernel with the memory service on a DuckDB file (and the session's weed mini for large values),
for `memory.*` tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from aios_services.memory import main as memory_main
from aios_services.memory.settings import MemorySettings
from aios_services.runtime import ServiceSettings
from aios_services.runtime.service import Starter
from tests.conftest import S3
from tests.kernel import ExtraService, Kernel, running_kernel


def memory_settings(
    common: Mapping[str, str], db: Path, s3: S3 | None, bucket: str, **overrides: object
) -> MemorySettings:
    s3_fields = (
        {"s3_endpoint": s3.endpoint, "s3_access_key": s3.access_key, "s3_secret_key": s3.secret_key}
        if s3
        else {}
    )
    return MemorySettings(
        **common,  # type: ignore[arg-type]
        **s3_fields,  # type: ignore[arg-type]
        memory_db=db,
        memory_bucket=bucket,
        **overrides,  # type: ignore[arg-type]
    )


def memory_service(db: Path, s3: S3 | None, bucket: str, **overrides: object) -> ExtraService:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        settings = memory_settings(common, db, s3, bucket, **overrides)
        return settings, lambda bus, stack: memory_main.start(bus, stack, settings)

    return make


@asynccontextmanager
async def memory_kernel(
    nats_url: str, root: Path, s3: S3 | None = None, *, bucket: str | None = None, **overrides: object
) -> AsyncIterator[Kernel]:
    """Scheduler + memory (no llm), a fresh DuckDB file and bucket."""
    bucket = bucket or f"t-{uuid.uuid4().hex[:12]}"
    extra = {"memory": memory_service(root / "memory.duckdb", s3, bucket, **overrides)}
    async with running_kernel(nats_url, root, {}, services=("scheduler",), extra=extra) as k:
        yield k
