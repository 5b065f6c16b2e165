"""The storage handlers called directly on real S3 (weed mini) and DuckDB, for what the syscall
path cannot reach quickly: expired uploads swept, a commit of nothing, sizes that lie."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_schemas import AiosError, FilesCommit, FilesUpload
from aios_services.storage.blobs import Blobs
from aios_services.storage.handlers import StorageHandlers, extract_text, snippet
from aios_services.storage.meta import Meta
from aios_services.storage.settings import StorageSettings
from aios_services.storage.textindex import chunks
from tests.conftest import S3


@pytest.fixture
async def handlers(s3_srv: S3, tmp_path: Path) -> AsyncIterator[StorageHandlers]:
    settings = StorageSettings(
        s3_endpoint=s3_srv.endpoint,
        s3_access_key=s3_srv.access_key,
        s3_secret_key=s3_srv.secret_key,  # type: ignore[arg-type]
        files_bucket=f"t-{uuid.uuid4().hex[:12]}",
        storage_db=tmp_path / "storage.duckdb",
        url_ttl_s=30,
        part_size_bytes=5 * 1024 * 1024,
    )
    meta = Meta(settings.storage_db)
    blobs = Blobs(
        endpoint=s3_srv.endpoint,
        access_key=s3_srv.access_key,
        secret_key=s3_srv.secret_key,
        region="us-east-1",
        bucket=settings.files_bucket,
    )
    await blobs.run(blobs.ensure_bucket)
    yield StorageHandlers(settings, meta, blobs)
    blobs.close()
    meta.close()


def put(url: str, data: bytes) -> None:
    urllib.request.urlopen(urllib.request.Request(url, data=data, method="PUT")).read()


async def test_expired_upload_is_swept(handlers: StorageHandlers) -> None:
    data = b"abc"
    ticket = await handlers.upload(
        "agent-1", FilesUpload(path="x", size=3, sha256=hashlib.sha256(data).hexdigest())
    )
    assert len(ticket.parts) == 1
    await asyncio.to_thread(put, ticket.parts[0], data)
    u = await handlers.meta.run(lambda: handlers.meta.upload(ticket.upload))
    assert u is not None and u.object == f"c/agent-1/{ticket.upload}"
    assert await handlers.blobs.run(lambda: handlers.blobs.uploaded_parts(u.object, u.s3_upload))
    assert await handlers.sweep() == 0  # not expired yet
    assert await handlers.sweep(now=ticket.expires + 61) == 1
    assert await handlers.blobs.run(lambda: handlers.blobs.uploaded_parts(u.object, u.s3_upload)) is None
    with pytest.raises(AiosError) as exc:
        await handlers.commit("agent-1", FilesCommit(upload=ticket.upload))
    assert exc.value.code == "not_found"


async def test_commit_checks_what_arrived(handlers: StorageHandlers) -> None:
    data = b"0123456789"
    sha = hashlib.sha256(data).hexdigest()
    nothing = await handlers.upload("agent-1", FilesUpload(path="a", size=10, sha256=sha))
    with pytest.raises(AiosError) as exc:  # nothing uploaded yet: send the missing parts, commit again
        await handlers.commit("agent-1", FilesCommit(upload=nothing.upload))
    assert exc.value.code == "conflict" and exc.value.details["missing"] == [1]
    short = await handlers.upload("agent-1", FilesUpload(path="b", size=10, sha256=sha))
    await asyncio.to_thread(put, short.parts[0], data[:5])
    with pytest.raises(AiosError) as exc:
        await handlers.commit("agent-1", FilesCommit(upload=short.upload))
    assert exc.value.code == "invalid_request" and exc.value.details["size"] == 5
    liar = await handlers.upload("agent-1", FilesUpload(path="c", size=10, sha256=sha))
    await asyncio.to_thread(put, liar.parts[0], b"9876543210")  # right size, other bytes
    with pytest.raises(AiosError) as exc:
        await handlers.commit("agent-1", FilesCommit(upload=liar.upload))
    assert exc.value.code == "invalid_request"
    assert await handlers.blobs.run(lambda: handlers.blobs.size(f"c/agent-1/{liar.upload}")) is None

    ok = await handlers.upload("agent-1", FilesUpload(path="c", size=10, sha256=sha, if_version=0))
    await asyncio.to_thread(put, ok.parts[0], data)
    done = await handlers.commit("agent-1", FilesCommit(upload=ok.upload))
    assert (done.info.path, done.info.version, done.info.sha256) == ("c", 1, sha)
    # Once committed, the part URL writes nothing any more: what was checked is what is kept.
    with pytest.raises(urllib.error.HTTPError):
        await asyncio.to_thread(put, ok.parts[0], b"tampered!!")
    v = await handlers.meta.run(lambda: handlers.meta.head("agent-1", "c"))
    assert v is not None and await handlers.blobs.run(lambda: handlers.blobs.get(v.object)) == data
    too_big = handlers.s.max_file_bytes + 1
    with pytest.raises(AiosError) as exc:
        await handlers.upload("agent-1", FilesUpload(path="d", size=too_big, sha256=sha))
    assert exc.value.code == "invalid_request"


async def test_many_parts_any_order(handlers: StorageHandlers) -> None:
    part = handlers.s.part_size_bytes
    data = bytes(range(256)) * ((2 * part + 1000) // 256 + 1)
    data = data[: 2 * part + 1000]
    ticket = await handlers.upload(
        "agent-1", FilesUpload(path="m", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    )
    assert (ticket.part_size, len(ticket.parts)) == (part, 3)
    for i in (2, 0, 1):  # any order
        await asyncio.to_thread(put, ticket.parts[i], data[i * part : (i + 1) * part])
    done = await handlers.commit("agent-1", FilesCommit(upload=ticket.upload))
    assert done.info.size == len(data)
    v = await handlers.meta.run(lambda: handlers.meta.head("agent-1", "m"))
    assert v is not None and await handlers.blobs.run(lambda: handlers.blobs.get(v.object)) == data


def test_text_helpers() -> None:
    assert extract_text(b"hello") == "hello"
    assert extract_text(b"\xff\xfe") is None and extract_text(b"a\x00b") is None
    text = "word " * 1000
    pieces = chunks(text, size=100, limit=5)
    assert len(pieces) == 5 and all(len(p) <= 100 for _, p in pieces)
    assert all(text[start:].lstrip().startswith(p[:10]) for start, p in pieces)
    assert chunks("") == []
    assert "needle" in snippet("x " * 500 + "the needle here " + "y " * 500, ["needle"])


def test_meta_survives_reopen(tmp_path: Path) -> None:
    from aios_services.storage.meta import Version

    meta = Meta(tmp_path / "m.duckdb")
    v = Version("a", "p", 1, "k", 1, "s", "a", time.time(), False)
    meta._pool.submit(lambda: meta.add_versions([(v, "t")], "sid-1")).result()
    meta.close()
    again = Meta(tmp_path / "m.duckdb")
    assert again.made_by("sid-1", "a") == v  # a call sent again after a restart finds its version
    assert again._pool.submit(lambda: again.head("a", "p")).result() == v
    again.close()


async def test_object_store_down_is_a_typed_error_and_records_nothing(handlers: StorageHandlers) -> None:
    """S3 unreachable: backend_unavailable (retryable), and no version is recorded."""
    from aios_schemas import FilesWrite
    from aios_services.cli.procs import free_port

    dead = Blobs(
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key="x",
        secret_key="y",
        region="us-east-1",
        bucket=handlers.blobs.bucket,
    )
    down = StorageHandlers(handlers.s, handlers.meta, dead)
    try:
        with pytest.raises(AiosError) as exc:
            await down.write("agent-1", FilesWrite(path="w.txt", content=b"x"))
        assert exc.value.code == "backend_unavailable" and exc.value.retryable
        assert await handlers.meta.newest("agent-1", "w.txt") is None
        info = (await handlers.write("agent-1", FilesWrite(path="w.txt", content=b"x"))).info
        assert info.version == 1  # with the store back, the write is the first version
    finally:
        dead.close()
