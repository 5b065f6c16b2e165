"""The storage service killed (SIGKILL) in the middle of a load of writes and started again: every
write is answered, each made exactly one version, and every byte is there (DuckDB replays its WAL;
a call that was running is sent again by the scheduler and finds the version it had made)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aios_schemas import FileInfo
from aios_services.cli.procs import service_probe
from tests.conftest import S3
from tests.integration.files_kernel import files_kernel
from tests.kernel import Kernel, running_kernel

N = 60


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path) -> AsyncIterator[Kernel]:
    async with running_kernel(nats_url, tmp_path, {}, services=("scheduler",)) as k:
        yield k


@contextmanager
def storage_process(
    kernel: Kernel, s3: S3, db: Path, bucket: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "AIOS_NATS_URL": kernel.nats_url,
        "AIOS_NAMESPACE": kernel.ns.name,
        "AIOS_S3_ENDPOINT": s3.endpoint,
        "AIOS_S3_ACCESS_KEY": s3.access_key,
        "AIOS_S3_SECRET_KEY": s3.secret_key,
        "AIOS_FILES_BUCKET": bucket,
        "AIOS_STORAGE_DB": str(db),
        "AIOS_INSTANCE": "storage",  # as `aios up` names it: a restart takes its lease back at once
    }
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aios_services.storage"],
            env=env,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def healthy(kernel: Kernel, proc: subprocess.Popen[bytes], log: Path) -> None:
    probe = service_probe(kernel.nats_url, kernel.ns, "storage")
    deadline = time.monotonic() + 30
    while not await probe():
        assert proc.poll() is None, f"storage exited; see {log}"
        assert time.monotonic() < deadline, "storage did not become healthy"
        await asyncio.sleep(0.05)


async def test_kill_mid_load_loses_nothing(kernel: Kernel, s3_srv: S3, tmp_path: Path) -> None:
    db, bucket, log = tmp_path / "storage.duckdb", f"t-{uuid.uuid4().hex[:12]}", tmp_path / "storage.log"
    contents = {f"load/{i:03d}.bin": os.urandom(2000 + i) for i in range(N)}
    with storage_process(kernel, s3_srv, db, bucket, log) as first:
        await healthy(kernel, first, log)
        async with kernel.connect("agent-1") as aios:
            quarter = asyncio.Event()
            done: list[FileInfo] = []

            async def write(path: str, data: bytes) -> FileInfo:
                info = await aios.files.write(path, data, timeout=120)
                done.append(info)
                if len(done) >= N // 4:
                    quarter.set()
                return info

            tasks = [asyncio.create_task(write(p, c)) for p, c in contents.items()]
            await asyncio.wait_for(quarter.wait(), 60)
            first.send_signal(signal.SIGKILL)  # mid-load: some calls are running, many queued
            first.wait()
            with storage_process(kernel, s3_srv, db, bucket, log) as second:
                await healthy(kernel, second, log)
                infos = await asyncio.wait_for(asyncio.gather(*tasks), 120)
                assert [i.path for i in infos] == list(contents)
                listing = await aios.files.list("load")
                assert [e.path for e in listing.entries] == sorted(contents)
                for path, data in contents.items():
                    assert [v.version for v in await aios.files.versions(path)] == [1]  # exactly once
                    assert await aios.files.read(path) == data


async def snapshot(kernel: Kernel) -> dict[str, object]:
    """Everything agents can see of their files: listings, every version's info and bytes, grants."""
    out: dict[str, object] = {}
    for agent in ("agent-1", "agent-2"):
        async with kernel.connect(agent) as aios:
            entries = (await aios.files.list(include_deleted=True)).entries
            out[agent] = entries
            for e in entries:
                versions = await aios.files.versions(e.path)
                out[f"{agent}:{e.path}"] = versions
                for v in versions:
                    if not v.deleted:
                        out[f"{agent}:{e.path}@{v.version}"] = hashlib.sha256(
                            await aios.files.read(e.path, version=v.version)
                        ).hexdigest()
            out[f"{agent}:shares"] = await aios.files.shares()
            out[f"{agent}:search"] = await aios.files.search("fox")
            out[f"{agent}:semantic"] = await aios.files.search("red fox", mode="semantic")
    return out


async def test_lost_index_is_rebuilt_from_s3(nats_url: str, tmp_path: Path, s3_srv: S3) -> None:
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    async with files_kernel(nats_url, tmp_path / "a", s3_srv, bucket=bucket) as k:
        async with k.connect("agent-1") as one, k.connect("agent-2") as two:
            await one.files.write("notes/fox.md", "the red fox", content_type="text/markdown")
            await one.files.write("notes/fox.md", "the red fox, again")
            await one.files.rollback("notes/fox.md", 1)
            await one.files.write("tmp.txt", "to be deleted")
            await one.files.delete("tmp.txt")
            await one.files.write("old/name.txt", "moved fox")
            await one.files.move("old/name.txt", "new/name.txt")
            await one.files.write("big.bin", os.urandom(300 * 1024))
            await one.files.share("notes", "agent-2", prefix=True)
            await two.files.write("mine.md", "a blue fox")
        before = await snapshot(k)
    (tmp_path / "a" / "storage.duckdb").unlink()  # the index is lost; S3 still has everything
    async with files_kernel(nats_url, tmp_path / "b", s3_srv, bucket=bucket) as k:
        after = await snapshot(k)
    assert after == before
