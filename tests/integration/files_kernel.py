"""A kernel with the storage service on the session's weed mini (S3), for `files.*` tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from aios_services.runtime import ServiceSettings
from aios_services.runtime.service import Starter
from aios_services.storage import main as storage_main
from aios_services.storage.settings import StorageSettings
from tests.conftest import S3
from tests.kernel import ExtraService, Kernel, running_kernel


def storage_service(s3: S3, db: Path, bucket: str, **overrides: object) -> ExtraService:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        settings = StorageSettings(
            **common,  # type: ignore[arg-type]
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,  # type: ignore[arg-type]
            files_bucket=bucket,
            storage_db=db,
            **overrides,  # type: ignore[arg-type]
        )
        return settings, lambda bus, stack: storage_main.start(bus, stack, settings)

    return make


@asynccontextmanager
async def files_kernel(
    nats_url: str, root: Path, s3: S3, *, bucket: str | None = None, **overrides: object
) -> AsyncIterator[Kernel]:
    """Scheduler + storage (no llm), a fresh bucket and DuckDB file unless `bucket` is given."""
    bucket = bucket or f"t-{uuid.uuid4().hex[:12]}"
    extra = {"storage": storage_service(s3, root / "storage.duckdb", bucket, **overrides)}
    async with running_kernel(nats_url, root, {}, services=("scheduler",), extra=extra) as k:
        yield k
