"""The storage service under its own NATS user (`svc-storage`, as `aios up` runs it): files syscalls
work end to end with every process confined, and the service reaches nothing it does not own."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from aios_schemas import Namespace
from aios_sdk import AIOS
from aios_services.cli.procs import service_probe
from aios_services.runtime import run_service
from aios_services.runtime.natsauth import (
    Identity,
    kernel_inbox,
    with_credentials,
)
from aios_services.scheduler import main as sched_main
from aios_services.scheduler.settings import SchedulerSettings
from aios_services.storage import main as storage_main
from aios_services.storage.settings import StorageSettings
from tests.conftest import S3
from tests.servers import locked_bus


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[str, Namespace, dict[str, Identity]]]:
    async with locked_bus(tmp_path, ("scheduler", "storage"), admin="operator") as b:
        yield b


async def test_files_work_with_every_process_confined(
    bus: tuple[str, Namespace, dict[str, Identity]], s3_srv: S3, tmp_path: Path
) -> None:
    url, ns, who = bus

    def creds(name: str) -> str:
        return with_credentials(url, who[name].user, who[name].password)

    sched = SchedulerSettings(nats_url=creds("scheduler"), namespace=ns.name)  # type: ignore[call-arg]
    storage = StorageSettings(
        nats_url=creds("storage"),  # type: ignore[call-arg]
        namespace=ns.name,
        s3_endpoint=s3_srv.endpoint,
        s3_access_key=s3_srv.access_key,
        s3_secret_key=s3_srv.secret_key,  # type: ignore[arg-type]
        files_bucket=f"t-{uuid.uuid4().hex[:12]}",
        storage_db=tmp_path / "storage.duckdb",
    )
    stop = asyncio.Event()
    starters = {
        "scheduler": (sched, lambda b, s: sched_main.start(b, s, sched)),
        "storage": (storage, lambda b, s: storage_main.start(b, s, storage)),
    }
    tasks: list[asyncio.Task[None]] = []
    try:
        for name, (settings, starter) in starters.items():  # in order, as `aios up` starts them
            tasks.append(asyncio.create_task(run_service(name, settings, starter, stop=stop)))  # type: ignore[arg-type]
            probe = service_probe(creds("operator"), ns, name)
            deadline = time.monotonic() + 30
            while not await probe():
                assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
                assert time.monotonic() < deadline, f"{name} did not become healthy"
                await asyncio.sleep(0.05)
        async with AIOS.connect(
            url=url, token=who["agent-1"].password, agent="agent-1", namespace=ns.name
        ) as aios:
            await aios.files.write("a.txt", "confined")
            assert await aios.files.read("a.txt") == b"confined"
            big = b"B" * (400 * 1024)
            await aios.files.write("big.bin", big)  # presigned upload + commit
            assert await aios.files.read("big.bin") == big

        # What svc-storage may not touch: results, quotas, agents' syscalls and inboxes, llm work.
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        me = NATS()
        await me.connect(
            url,
            user=who["storage"].user,
            password=who["storage"].password,
            inbox_prefix=kernel_inbox("storage"),
            error_cb=on_error,
            allow_reconnect=False,
        )
        cases = [
            ("publish", f"$JS.API.STREAM.INFO.KV_{ns.results_bucket}"),
            ("publish", f"$KV.{ns.limits_bucket}.usage.agent-1"),
            ("publish", f"{ns.root}.res.agent-1.x"),
            ("publish", f"{ns.root}.stream.agent-1.x"),
            ("subscribe", f"{ns.root}.sys.>"),
            ("subscribe", f"{ns.root}.exec.llm"),
            ("subscribe", "_INBOX.agent-1.>"),
        ]
        for op, subject in cases:
            before = len(errors)
            if op == "publish":
                await me.publish(subject, b"x")
            else:
                await me.subscribe(subject)
            deadline = time.monotonic() + 5
            while not any("permissions violation" in e and subject.lower() in e for e in errors[before:]):
                assert time.monotonic() < deadline, (op, subject, errors[before:])
                await me.flush()
                await asyncio.sleep(0.02)
        await me.close()
    finally:
        stop.set()
        await asyncio.wait(tasks, timeout=30)
