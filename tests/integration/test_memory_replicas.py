"""Two memory replicas (processes of their own, as `aios up --replicas` runs them) share the agents'
memory by partition: each serves the partitions it owns and forwards the others' calls; one is
SIGKILLed mid-load and the other takes its partitions (same files), losing no call and no record;
the killed one comes back and takes its share again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from aios_sdk import AIOS
from aios_services.runtime.partitions import partition_of
from tests.integration.test_memory_restart import start_memory, wait_healthy
from tests.kernel import Kernel, running_kernel, until_split

PARTITIONS = 4
AGENTS = ("agent-1", "agent-2", "agent-3", "agent-a", "agent-b", "agent-free", "agent-q1", "local")


def start_replica(k: Kernel, instance: str, log: Path) -> subprocess.Popen[bytes]:
    return start_memory(
        k, instance, log, AIOS_PARTITIONS=str(PARTITIONS), AIOS_PARTITION_TTL_S="2", AIOS_SLOTS="16"
    )


async def add_some(clients: dict[str, AIOS], tag: str, n: int) -> list[asyncio.Task[object]]:
    return [
        asyncio.create_task(c.memory.add(f"{agent} {tag} {i}", metadata={"tag": tag, "i": i}))
        for agent, c in clients.items()
        for i in range(n)
    ]


@pytest.mark.timeout(240)
async def test_memory_replicas_split_partitions_and_survive_a_kill(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    assert len({partition_of(a, PARTITIONS) for a in AGENTS}) > 1  # the agents span partitions
    async with running_kernel(nats_url, tmp_path, {}, services=("scheduler",)) as k:
        procs = {
            "memory-a": start_replica(k, "memory-a", tmp_path / "memory-a.log"),
            "memory-b": start_replica(k, "memory-b", tmp_path / "memory-b.log"),
        }
        try:
            await wait_healthy(k)
            split = await until_split(nc, k.ns, "memory", PARTITIONS, {"memory-a", "memory-b"})
            assert all(split.values())
            async with AsyncExitStack() as opened:
                clients = {a: await opened.enter_async_context(k.connect(a)) for a in AGENTS}
                # Both serve, each call lands where its agent's partition is served.
                first = await asyncio.wait_for(asyncio.gather(*await add_some(clients, "one", 3)), 60)
                assert len(first) == 3 * len(AGENTS)
                found = await asyncio.to_thread(lambda: list(tmp_path.glob("memory.p*-of-04.duckdb")))
                files = sorted(p.name for p in found)
                assert files == [f"memory.p{i:02d}-of-04.duckdb" for i in range(PARTITIONS)]

                # A replica killed mid-load: every call is answered, its partitions move.
                calls = await add_some(clients, "two", 10)
                await asyncio.sleep(0.05)
                killed_at = time.monotonic()
                procs["memory-a"].send_signal(signal.SIGKILL)
                procs["memory-a"].wait()
                second = await asyncio.wait_for(asyncio.gather(*calls), 120)
                assert len(second) == 10 * len(AGENTS)
                await until_split(nc, k.ns, "memory", PARTITIONS, {"memory-b"})
                print(f"memory-b served every partition {time.monotonic() - killed_at:.1f}s after the kill")

                # Every record, exactly once, whoever wrote it.
                for agent, c in clients.items():
                    listed = (await c.memory.list(limit=1000, history=True)).records
                    tags = sorted((str(r.metadata["tag"]), int(str(r.metadata["i"]))) for r in listed)
                    want = sorted([("one", i) for i in range(3)] + [("two", i) for i in range(10)])
                    assert tags == want, agent

                # It comes back (the supervisor restarts it) and takes its share again.
                procs["memory-a"] = start_replica(k, "memory-a", tmp_path / "memory-a.log")
                await until_split(nc, k.ns, "memory", PARTITIONS, {"memory-a", "memory-b"})
                for agent, c in clients.items():
                    hits = (await c.memory.search("two", k=20, mode="keyword")).hits
                    assert len(hits) == 10, agent
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    p.wait(timeout=20)
