"""The memory service SIGKILLed mid-load (a process of its own, as `aios up` runs it) and started
again on the same DuckDB file: every add that was sent is answered, each exactly once in the store,
and every record written before the kill is there after it (written before answering)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import SyscallEvent
from aios_services.cli.procs import service_probe
from tests.kernel import Kernel, running_kernel

N = 60


def start_memory(k: Kernel, instance: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """The memory service as its own process, as `aios up` runs it (`extra`: more AIOS_* settings)."""
    env = {
        **os.environ,
        "AIOS_NATS_URL": k.nats_url,
        "AIOS_NAMESPACE": k.ns.name,
        "AIOS_MEMORY_DB": str(k.root / "memory.duckdb"),
        "AIOS_INSTANCE": instance,
        "AIOS_SLOTS": "8",
        **extra,
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "aios_services.memory"], env=env, stdout=out, stderr=out
        )


async def wait_healthy(k: Kernel) -> None:
    probe = service_probe(k.nats_url, k.ns, "memory")
    deadline = time.monotonic() + 30
    while not await probe():
        assert time.monotonic() < deadline, "memory did not start"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_memory_killed_mid_load_loses_nothing(nats_url: str, tmp_path: Path, nc: NATS) -> None:
    done: set[str] = set()
    some_done = asyncio.Event()

    async def on_done(msg: Msg) -> None:
        done.add(SyscallEvent.model_validate_json(msg.data).id)
        if len(done) >= N // 4:
            some_done.set()

    async with running_kernel(nats_url, tmp_path, {}, services=("scheduler",)) as k:
        await nc.subscribe(k.ns.event("done"), cb=on_done)
        first = start_memory(k, "memory-a", tmp_path / "memory-a.log")
        second: subprocess.Popen[bytes] | None = None
        try:
            await wait_healthy(k)
            async with k.connect() as aios:
                calls = [
                    asyncio.create_task(aios.memory.add(f"fact {i}", metadata={"i": i})) for i in range(N)
                ]
                await asyncio.wait_for(some_done.wait(), 60)
                first.send_signal(signal.SIGKILL)  # mid-load: some answered, others in hand or queued
                first.wait()
                answered_before = {t.result().record.id for t in calls if t.done() and not t.exception()}
                # As the supervisor does: the same instance name, which takes its lease back at once.
                second = start_memory(k, "memory-a", tmp_path / "memory-b.log")
                replies = await asyncio.wait_for(asyncio.gather(*calls), 120)
                ids = [r.record.id for r in replies]
                assert len(set(ids)) == N
                assert answered_before <= set(ids) and answered_before
                listed = (await aios.memory.list(limit=1000, history=True)).records
                assert sorted(r.id for r in listed) == sorted(ids)  # each exactly once, one version
                assert sorted(r.metadata["i"] for r in listed) == list(range(N))
                for rid in sorted(answered_before)[:5]:
                    assert (await aios.memory.get(rid)).record.id == rid
        finally:
            for p in (first, second):
                if p is not None and p.poll() is None:
                    p.terminate()
                    p.wait(timeout=20)
