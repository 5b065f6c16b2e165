"""The storage service through the kernel, on real servers: SDK -> JetStream -> scheduler -> storage
-> weed mini (S3) and DuckDB. CRUD, versions and rollback byte-exact, delete and move, search."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_sdk import Conflict, InvalidRequest, NotFound
from tests.conftest import S3
from tests.integration.files_kernel import files_kernel
from tests.kernel import Kernel


def make_file(path: Path, mib: int) -> str:
    """A file of `mib` MiB of varied bytes, written a block at a time; its SHA-256."""
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mib):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, s3_srv: S3) -> AsyncIterator[Kernel]:
    async with files_kernel(nats_url, tmp_path, s3_srv, part_size_bytes=5 * 1024 * 1024) as k:
        yield k


async def test_write_read_stat_list(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        info = await aios.files.write("notes/today.md", "hello world")
        assert (info.path, info.version, info.size) == ("notes/today.md", 1, 11)
        assert info.sha256 == hashlib.sha256(b"hello world").hexdigest() and info.author == "agent-1"
        assert await aios.files.read("notes/today.md") == b"hello world"
        assert await aios.files.read("./notes//today.md") == b"hello world"  # normalised
        st = await aios.files.stat("notes/today.md")
        assert st == info
        await aios.files.write("notes/b.bin", bytes(range(256)))
        await aios.files.write("other.txt", "x")
        listing = await aios.files.list("notes")
        assert [e.path for e in listing.entries] == ["notes/b.bin", "notes/today.md"]
        assert [e.path for e in (await aios.files.list()).entries] == [
            "notes/b.bin",
            "notes/today.md",
            "other.txt",
        ]
        page = await aios.files.list(limit=2)
        assert page.truncated and len(page.entries) == 2
        rest = await aios.files.list(after=page.entries[-1].path)
        assert [e.path for e in rest.entries] == ["other.txt"] and not rest.truncated
        with pytest.raises(NotFound):
            await aios.files.read("notes/missing.md")


async def test_versions_and_rollback_round_trip_byte_exact(kernel: Kernel) -> None:
    contents = [os.urandom(1000 + i) for i in range(4)]
    async with kernel.connect("agent-1") as aios:
        for i, c in enumerate(contents, start=1):
            assert (await aios.files.write("data.bin", c)).version == i
        for i, c in enumerate(contents, start=1):
            assert await aios.files.read("data.bin", version=i) == c
        hist = await aios.files.versions("data.bin")
        assert [v.version for v in hist] == [4, 3, 2, 1]
        assert [v.sha256 for v in hist] == [hashlib.sha256(c).hexdigest() for c in reversed(contents)]
        assert all(
            v.size == len(c) and v.author == "agent-1" for v, c in zip(hist, reversed(contents), strict=True)
        )
        back = await aios.files.rollback("data.bin", 2)
        assert (back.version, back.restored_from, back.sha256) == (
            5,
            2,
            hashlib.sha256(contents[1]).hexdigest(),
        )
        assert await aios.files.read("data.bin") == contents[1]
        assert await aios.files.read("data.bin", version=4) == contents[3]  # history kept


async def test_delete_is_a_version_and_rolls_back(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        await aios.files.write("a.txt", "one")
        gone = await aios.files.delete("a.txt")
        assert gone.deleted and gone.version == 2
        with pytest.raises(NotFound):
            await aios.files.read("a.txt")
        with pytest.raises(NotFound):
            await aios.files.delete("a.txt")
        assert (await aios.files.list()).entries == []
        assert [e.path for e in (await aios.files.list(include_deleted=True)).entries] == ["a.txt"]
        assert await aios.files.read("a.txt", version=1) == b"one"
        with pytest.raises(InvalidRequest):
            await aios.files.rollback("a.txt", 2)  # a deletion is not content to restore
        back = await aios.files.rollback("a.txt", 1)
        assert back.version == 3 and await aios.files.read("a.txt") == b"one"


async def test_move_keeps_both_histories(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        await aios.files.write("src.txt", "payload")
        await aios.files.write("dst.txt", "old")
        with pytest.raises(Conflict):
            await aios.files.move("src.txt", "dst.txt")
        moved = await aios.files.move("src.txt", "dir/dst.txt")
        assert (moved.path, moved.version) == ("dir/dst.txt", 1)
        assert await aios.files.read("dir/dst.txt") == b"payload"
        with pytest.raises(NotFound):
            await aios.files.read("src.txt")
        assert await aios.files.read("src.txt", version=1) == b"payload"
        over = await aios.files.move("dir/dst.txt", "dst.txt", overwrite=True)
        assert over.version == 2 and await aios.files.read("dst.txt") == b"payload"
        assert await aios.files.read("dst.txt", version=1) == b"old"


async def test_concurrent_writers_of_one_path_get_dense_versions(kernel: Kernel) -> None:
    """Two agents (one with a write grant) writing the same file at once: every write is a version
    of its own, numbered 1..n without gaps, each readable with its own bytes."""
    async with kernel.connect("agent-1") as one, kernel.connect("agent-2") as two:
        await one.files.share("shared.txt", "agent-2", mode="write")
        writes = [one.files.write("shared.txt", f"one {i}") for i in range(15)]
        writes += [two.files.write("@agent-1/shared.txt", f"two {i}") for i in range(15)]
        infos = await asyncio.gather(*writes)
        assert sorted(i.version for i in infos) == list(range(1, 31))
        for info, text in zip(
            infos, [f"one {i}" for i in range(15)] + [f"two {i}" for i in range(15)], strict=True
        ):
            assert await one.files.read("shared.txt", version=info.version) == text.encode()
            assert info.author == ("agent-1" if text.startswith("one") else "agent-2")


async def test_conditional_writes_and_hash_check(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        await aios.files.write("c.txt", "v1", if_version=0)
        with pytest.raises(Conflict):
            await aios.files.write("c.txt", "again", if_version=0)
        await aios.files.write("c.txt", "v2", if_version=1)
        with pytest.raises(Conflict):
            await aios.files.write("c.txt", "stale", if_version=1)
        # A hash that does not match the bytes: refused, nothing stored.
        from aios_schemas import FilesWrite

        bad = FilesWrite(path="c.txt", content=b"tampered", sha256="0" * 64)
        with pytest.raises(InvalidRequest):
            await aios.syscall(bad)
        assert await aios.files.read("c.txt") == b"v2"
        assert len(await aios.files.versions("c.txt")) == 2


async def test_search_finds_text_files(kernel: Kernel) -> None:
    async with kernel.connect("agent-1") as aios:
        await aios.files.write("docs/a.md", "The quick brown fox jumps over the lazy dog")
        await aios.files.write("docs/b.md", "A fox, a fox, and another FOX: three foxes")
        await aios.files.write("docs/c.md", "nothing to see")
        await aios.files.write("bin/x", b"\x00fox\xff")
        hits = await aios.files.search("fox")
        assert [h.info.path for h in hits] == ["docs/b.md", "docs/a.md"]
        assert "fox" in hits[0].snippet.lower()
        assert [h.info.path for h in await aios.files.search("quick fox")] == ["docs/a.md"]
        assert await aios.files.search("fox", prefix="bin") == []
        await aios.files.delete("docs/b.md")
        assert [h.info.path for h in await aios.files.search("fox")] == ["docs/a.md"]


async def test_semantic_search_ranks_by_meaning_within_what_the_caller_may_read(kernel: Kernel) -> None:
    """With the hashing embedder (shared words, deterministic): the closest text first; another
    agent's files never, until shared; long texts are found by any of their chunks."""
    async with kernel.connect("agent-1") as aios, kernel.connect("agent-2") as other:
        await aios.files.write("zoo/fox.md", "the red fox hunts mice in the snowy forest at night")
        await aios.files.write("zoo/fish.md", "tropical fish swim in warm coral reef water")
        await aios.files.write("long.md", "filler words only. " * 200 + "the red fox sleeps in a forest den")
        await other.files.write("secret.md", "the red fox hunts mice in the snowy forest at night")
        hits = await aios.files.search("red fox in the forest", mode="semantic", k=3)
        assert [h.info.path for h in hits][:2] == ["zoo/fox.md", "long.md"]
        assert hits[0].score > hits[-1].score and "fox" in hits[0].snippet
        assert "fox" in hits[1].snippet  # the chunk that matched, not the start of the file
        assert all(not h.info.path.startswith("@") for h in hits)
        assert [h.info.path for h in await aios.files.search("coral reef", mode="semantic", k=1)] == [
            "zoo/fish.md"
        ]
        await other.files.share("secret.md", "agent-1")
        shared = await aios.files.search("red fox hunts mice", mode="semantic", prefix="@agent-2")
        assert [h.info.path for h in shared] == ["@agent-2/secret.md"]
        await aios.files.delete("zoo/fox.md")
        after = await aios.files.search("red fox in the forest", mode="semantic", k=5)
        assert "zoo/fox.md" not in [h.info.path for h in after]


async def test_large_file_streams_through_presigned_urls(kernel: Kernel, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = make_file(src, 20)
    async with kernel.connect("agent-1") as aios:
        info = await aios.files.write_file("big/data.bin", src)
        assert (info.size, info.sha256) == (20 << 20, digest)
        out = tmp_path / "out.bin"
        got = await aios.files.read_file("big/data.bin", out)
        assert got.sha256 == digest
        assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
        # An in-memory write over the inline limit takes the same path.
        mid = os.urandom(600 * 1024)
        await aios.files.write("big/mid.bin", mid)
        assert await aios.files.read("big/mid.bin") == mid


async def test_operator_inspects_read_only(kernel: Kernel) -> None:
    """`aios files` asks the storage service (the DuckDB file's one owner) on ctl.storage.inspect."""
    from pydantic import ValidationError

    from aios_schemas import (
        FileContent,
        FileList,
        FilesInspect,
        FilesList,
        FilesRead,
        FilesVersions,
        FileVersions,
    )
    from aios_services.cli.files import inspect

    async with kernel.connect("agent-1") as aios:
        await aios.files.write("notes/a.md", "one")
        await aios.files.write("notes/a.md", "two")
    listing = (
        await inspect(kernel.nats_url, kernel.ns, FilesInspect(agent="agent-1", payload=FilesList()))
    ).result
    assert isinstance(listing, FileList) and [e.path for e in listing.entries] == ["notes/a.md"]
    got = (
        await inspect(
            kernel.nats_url,
            kernel.ns,
            FilesInspect(agent="agent-1", payload=FilesRead(path="notes/a.md", version=1)),
        )
    ).result
    assert isinstance(got, FileContent) and got.content == b"one"
    hist = (
        await inspect(
            kernel.nats_url,
            kernel.ns,
            FilesInspect(agent="agent-1", payload=FilesVersions(path="notes/a.md")),
        )
    ).result
    assert isinstance(hist, FileVersions) and [v.version for v in hist.versions] == [2, 1]
    with pytest.raises(ValidationError):  # read-only: no write can go through it
        FilesInspect.model_validate(
            {"agent": "agent-1", "payload": {"kind": "files.write", "path": "x", "content": ""}}
        )
