"""Two storage replicas share the agents' files by partition (the owner's): a grant from an agent of
one partition to an agent of another, a search over what was shared, a large upload committed where
it started; what every agent sees is the same while both serve, after one hands its partitions over,
and after the partition files are lost and rebuilt from S3 under another partition count."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from nats.aio.client import Client as NATS

from aios_services.runtime import run_service
from aios_services.runtime.partitions import partition_of
from aios_services.storage import main as storage_main
from aios_services.storage.settings import StorageSettings
from tests.conftest import S3
from tests.integration.files_kernel import files_kernel
from tests.integration.test_files_restart import snapshot
from tests.kernel import Kernel, until_split

PARTITIONS = 4


def replica(k: Kernel, s3: S3, db: Path, bucket: str, instance: str) -> StorageSettings:
    return StorageSettings(  # type: ignore[call-arg]
        nats_url=k.nats_url,
        namespace=k.ns.name,
        s3_endpoint=s3.endpoint,
        s3_access_key=s3.access_key,
        s3_secret_key=s3.secret_key,  # type: ignore[arg-type]
        files_bucket=bucket,
        storage_db=db,
        instance=instance,
        partitions=PARTITIONS,
        partition_ttl_s=2.0,
    )


async def test_storage_replicas_split_by_owner_and_agree(
    nats_url: str, tmp_path: Path, s3_srv: S3, nc: NATS
) -> None:
    assert partition_of("agent-1", PARTITIONS) != partition_of("agent-2", PARTITIONS)
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    db = tmp_path / "a" / "storage.duckdb"
    async with files_kernel(
        nats_url,
        tmp_path / "a",
        s3_srv,
        bucket=bucket,
        partitions=PARTITIONS,
        instance="storage-a",
        partition_ttl_s=2.0,
    ) as k:
        stop_b = asyncio.Event()
        b = replica(k, s3_srv, db, bucket, "storage-b")
        task = asyncio.create_task(
            run_service("storage", b, lambda bus, st: storage_main.start(bus, st, b), stop=stop_b)
        )
        try:
            split = await until_split(nc, k.ns, "storage", PARTITIONS, {"storage-a", "storage-b"})
            assert all(split.values())
            async with k.connect("agent-1") as one, k.connect("agent-2") as two:
                await one.files.write("notes/fox.md", "the red fox", content_type="text/markdown")
                await one.files.write("notes/fox.md", "the red fox, again")
                await one.files.rollback("notes/fox.md", 1)
                await one.files.write("old/name.txt", "moved fox")
                await one.files.move("old/name.txt", "new/name.txt")
                await one.files.write("big.bin", os.urandom(300 * 1024))  # an upload, then its commit
                given = await one.files.share("notes", "agent-2", prefix=True)
                assert [g.grantee for g in given.given] == ["agent-2"]
                await two.files.write("mine.md", "a blue fox")
                await two.files.share("mine.md", "agent-1")
                # Each sees the other's grant, held in the other's partition.
                received = (await one.files.shares()).received
                assert [(g.owner, g.path) for g in received] == [("agent-2", "mine.md")]
                hits = await two.files.search("fox")
                assert sorted(h.info.path for h in hits) == ["@agent-1/notes/fox.md", "mine.md"]
                assert await two.files.read_text("@agent-1/notes/fox.md") == "the red fox"
            both = await snapshot(k)
        finally:
            stop_b.set()
            await asyncio.wait_for(task, 30)
        await until_split(nc, k.ns, "storage", PARTITIONS, {"storage-a"})  # b's partitions moved to a
        assert await snapshot(k) == both
    for f in await asyncio.to_thread(lambda: list((tmp_path / "a").glob("storage.p*"))):
        f.unlink()  # every partition's index lost: S3 still has everything
    async with files_kernel(nats_url, tmp_path / "b", s3_srv, bucket=bucket) as k:  # one partition now
        assert await snapshot(k) == both
