"""The memory service logged in as its own NATS user (svc-memory, `natsauth.service_permissions`), as
`aios up` runs it, beside a scheduler as svc-scheduler: an agent's memory calls work end to end, its
eviction events are published, and the service cannot reach what is not its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import Namespace
from aios_sdk import AIOS
from aios_services.cli.procs import service_probe
from aios_services.memory import main as memory_main
from aios_services.memory.settings import MemorySettings
from aios_services.runtime import run_service
from aios_services.runtime.natsauth import (
    Identity,
    kernel_inbox,
    with_credentials,
)
from aios_services.scheduler import main as sched_main
from aios_services.scheduler.settings import SchedulerSettings
from tests.servers import locked_bus


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[str, Namespace, dict[str, Identity]]]:
    async with locked_bus(tmp_path, ("scheduler", "memory")) as b:
        yield b


async def test_memory_as_svc_memory_on_a_locked_bus(
    bus: tuple[str, Namespace, dict[str, Identity]], tmp_path: Path
) -> None:
    url, ns, who = bus

    def as_(name: str) -> str:
        return with_credentials(url, who[name].user, who[name].password)

    sched = SchedulerSettings(nats_url=as_("scheduler"), namespace=ns.name)  # type: ignore[call-arg]
    mem = MemorySettings(  # type: ignore[call-arg]
        nats_url=as_("memory"),
        namespace=ns.name,
        memory_db=tmp_path / "memory.duckdb",
        memory_quotas={"agent-1": {"records": 2, "bytes": 10_000}},
    )
    stops = {"scheduler": asyncio.Event(), "memory": asyncio.Event()}
    tasks = [
        asyncio.create_task(
            run_service(
                "scheduler", sched, lambda b, s: sched_main.start(b, s, sched), stop=stops["scheduler"]
            )
        ),
        asyncio.create_task(
            run_service("memory", mem, lambda b, s: memory_main.start(b, s, mem), stop=stops["memory"])
        ),
    ]
    admin = await nats.connect(as_("admin"))
    try:
        for name in ("scheduler", "memory"):
            probe = service_probe(as_("admin"), ns, name)
            deadline = time.monotonic() + 30
            while not await probe():
                assert time.monotonic() < deadline and not any(t.done() for t in tasks), (
                    f"{name} did not start"
                )
                await asyncio.sleep(0.05)
        evicted: asyncio.Queue[bytes] = asyncio.Queue()

        async def on(msg: Msg) -> None:
            evicted.put_nowait(msg.data)

        await admin.subscribe(ns.service_event("memory", "evicted"), cb=on)
        await admin.flush()
        async with AIOS.connect(
            url=url, token=who["agent-1"].password, agent="agent-1", namespace=ns.name
        ) as aios:
            ids = [(await aios.memory.add(f"fact {i}")).record.id for i in range(3)]
            await asyncio.wait_for(evicted.get(), 10)  # the third add evicted the first
            assert (await aios.memory.get(ids[0])).record.text == "fact 0"
            assert {h.record.id for h in (await aios.memory.search("fact", k=5)).hits} == set(ids)

        # What svc-memory may not do: answer agents, speak for the scheduler, read results or contexts.
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        svc = NATS()
        await svc.connect(
            url,
            user=who["memory"].user,
            password=who["memory"].password,
            inbox_prefix=kernel_inbox("memory"),
            error_cb=on_error,
            allow_reconnect=False,
        )
        try:
            for subject in (
                f"{ns.root}.res.agent-1.x",
                f"{ns.root}.evt.syscall.done",
                f"$KV.{ns.results_bucket}.x",
                f"{ns.root}.exec.llm",
            ):
                before = len(errors)
                await svc.publish(subject, b"x")
                deadline = time.monotonic() + 5
                while not any("permissions violation" in e and subject.lower() in e for e in errors[before:]):
                    assert time.monotonic() < deadline, f"svc-memory may publish on {subject}"
                    await svc.flush()
                    await asyncio.sleep(0.02)
        finally:
            await svc.close()
    finally:
        await admin.close()
        for ev in stops.values():
            ev.set()
        await asyncio.wait(tasks, timeout=30)
