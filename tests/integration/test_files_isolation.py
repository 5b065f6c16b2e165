"""Agents' files are their own: agent-b (mallory) tries every path trick and forged field to read,
list, search, overwrite, delete or roll back agent-a's (alice's) files, then what shares allow and
revoke. Each attempt is refused and changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import (
    FilesCommit,
    FilesRead,
    FilesUpload,
    Syscall,
    SyscallResult,
    decode_reply,
    encode,
    new_id,
)
from aios_sdk import AIOS, Forbidden, InvalidRequest, NotFound
from aios_sdk.config import without_credentials
from tests.conftest import S3
from tests.integration.files_kernel import files_kernel
from tests.kernel import Kernel
from tests.servers import auth_for

ALICE, MALLORY, CAROL = "agent-a", "agent-b", "agent-1"
SECRET = b"alice's secret plans"


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, s3_srv: S3) -> AsyncIterator[Kernel]:
    async with files_kernel(nats_url, tmp_path, s3_srv) as k:
        yield k


def _http(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "PUT")
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


async def http(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(_http, url, data)


async def alice_state(alice: AIOS) -> list[tuple[str, int, str]]:
    listing = await alice.files.list(include_deleted=True)
    return [(e.path, e.version, e.sha256) for e in listing.entries]


async def test_path_tricks_never_reach_another_namespace(kernel: Kernel) -> None:
    async with kernel.connect(ALICE) as alice, kernel.connect(MALLORY) as mallory:
        await alice.files.write("secret.txt", SECRET)
        await alice.files.write("dir/plan.md", "the plan: fox")
        before = await alice_state(alice)

        # Spellings that try to climb out of mallory's namespace: refused before the kernel.
        for path in (
            "../agent-a/secret.txt",
            "/agent-a/secret.txt",
            "a/../../agent-a/secret.txt",
            "..\\agent-a\\secret.txt",
            "\uff0e\uff0e/agent-a/secret.txt",
            "secret.txt\x00",
            "@agent-a/../agent-a/secret.txt",
            "@agent-a/\u202esecret.txt",
        ):
            with pytest.raises(InvalidRequest):
                await mallory.files.read(path)
            with pytest.raises(InvalidRequest):
                await mallory.files.write(path, b"pwned")
        # Names that look like alice's are mallory's own namespace: nothing there.
        for path in ("agent-a/secret.txt", "secret.txt", "v/agent-a/secret.txt"):
            with pytest.raises(NotFound):
                await mallory.files.read(path)
        # The same bad path sent raw (no SDK check): invalid_request from the kernel.
        from aios_schemas import FilesWrite

        raw = FilesWrite.model_construct(path="../agent-a/secret.txt", content=b"pwned", kind="files.write")
        with pytest.raises(InvalidRequest):
            await mallory.syscall(raw)

        # @owner without a grant: every operation is forbidden, the same for missing files.
        for path in ("@agent-a/secret.txt", "@agent-a/missing.txt"):
            for op in (
                mallory.files.read(path),
                mallory.files.stat(path),
                mallory.files.versions(path),
                mallory.files.write(path, b"pwned"),
                mallory.files.delete(path),
                mallory.files.rollback(path, 1),
                mallory.files.move(path, "loot.txt"),
            ):
                with pytest.raises(Forbidden):
                    await op
        with pytest.raises(Forbidden):
            await mallory.files.move("mine.txt", "@agent-a/secret.txt")
        with pytest.raises(Forbidden):
            await mallory.files.share("@agent-a/secret.txt", MALLORY)
        # Listing and search show nothing of alice's.
        assert (await mallory.files.list("@agent-a")).entries == []
        assert (await mallory.files.list("@agent-a/dir")).entries == []
        assert (await mallory.files.list(include_deleted=True)).entries == []
        assert await mallory.files.search("secret") == []
        assert await mallory.files.search("fox", prefix="@agent-a") == []
        assert await alice_state(alice) == before
        assert await alice.files.read("secret.txt") == SECRET


async def test_forged_fields_are_refused(kernel: Kernel) -> None:
    """A syscall body naming alice, or with an `owner`/`author` field, sent on mallory's own subject."""
    ns = kernel.ns
    nc = NATS()
    await nc.connect(
        without_credentials(kernel.nats_url),
        user=MALLORY,
        password=auth_for(kernel.nats_url).token(MALLORY),
        inbox_prefix=f"_INBOX.{MALLORY}",
    )
    try:
        async with kernel.connect(ALICE) as alice:
            await alice.files.write("secret.txt", SECRET)

        async def send(body: bytes, sid: str) -> SyscallResult:
            got: asyncio.Future[SyscallResult] = asyncio.get_running_loop().create_future()

            async def on_res(msg: Msg) -> None:
                if not got.done():
                    got.set_result(decode_reply(msg.data, msg.headers, SyscallResult))

            await nc.subscribe(ns.result(MALLORY, sid), cb=on_res)
            await nc.jetstream().publish(ns.sys("files.read", MALLORY), body, headers={"Nats-Msg-Id": sid})
            return await asyncio.wait_for(got, 10)

        as_alice = Syscall(
            id=new_id(), agent=ALICE, payload=FilesRead(path="secret.txt"), deadline=time.time() + 30
        )
        res = await send(encode(as_alice), as_alice.id)
        assert res.error is not None and res.error.code == "forbidden" and res.result is None

        for extra in ({"owner": ALICE}, {"author": ALICE}, {"agent": ALICE}):
            sid = new_id()
            body = {
                "id": sid,
                "agent": MALLORY,
                "payload": {"kind": "files.read", "path": "secret.txt", **extra},
                "deadline": time.time() + 30,
            }
            res = await send(json.dumps(body).encode(), sid)
            assert res.error is not None and res.error.code == "invalid_request"
    finally:
        await nc.close()


async def test_uploads_and_urls_are_confined(kernel: Kernel) -> None:
    async with kernel.connect(ALICE) as alice, kernel.connect(MALLORY) as mallory:
        big = b"A" * (300 * 1024)
        await alice.files.write("big.bin", big)
        # Mallory cannot commit alice's upload, even knowing its id.
        ticket = await alice.syscall(FilesUpload(path="x.bin", size=3, sha256="0" * 64))
        assert ticket.kind == "files.upload"
        with pytest.raises(NotFound):
            await mallory.syscall(FilesCommit(upload=ticket.upload))
        # A presigned URL is for one object: edited to another key, S3 refuses it.
        got = await alice.syscall(FilesRead(path="big.bin", url=True))
        assert got.kind == "files.read" and got.url
        assert await http(got.url) == (200, big)
        other = got.url.replace(f"/{ALICE}/", f"/{MALLORY}/")
        assert other != got.url and (await http(other))[0] == 403
        # Upload URLs name a fresh content key of the target's namespace, nothing else.
        assert all(f"/c/{ALICE}/{ticket.upload}?" in url for url in ticket.parts)
        # An upload whose bytes do not match its announced hash is not stored.
        mine = await mallory.syscall(FilesUpload(path="m.bin", size=3, sha256="0" * 64))
        assert mine.kind == "files.upload"
        assert (await http(mine.parts[0], b"abc"))[0] == 200
        with pytest.raises(InvalidRequest):
            await mallory.syscall(FilesCommit(upload=mine.upload))
        with pytest.raises(NotFound):
            await mallory.files.stat("m.bin")


async def test_share_read_write_prefix_and_revoke(kernel: Kernel) -> None:
    async with kernel.connect(ALICE) as alice, kernel.connect(MALLORY) as bob, kernel.connect(CAROL) as carol:
        await alice.files.write("shared/doc.md", "shared fox notes")
        await alice.files.write("shared-secret.txt", SECRET)  # beside the prefix, not under it
        await alice.files.write("private/x.md", "private fox")
        given = await alice.files.share("shared", MALLORY, prefix=True)
        assert [(g.path, g.prefix, g.grantee, g.mode) for g in given.given] == [
            ("shared", True, MALLORY, "read")
        ]
        assert [(g.owner, g.path) for g in (await bob.files.shares()).received] == [(ALICE, "shared")]

        assert await bob.files.read("@agent-a/shared/doc.md") == b"shared fox notes"
        assert [e.path for e in (await bob.files.list("@agent-a")).entries] == ["@agent-a/shared/doc.md"]
        hits = await bob.files.search("fox")
        assert [h.info.path for h in hits] == ["@agent-a/shared/doc.md"]
        with pytest.raises(Forbidden):
            await bob.files.read("@agent-a/shared-secret.txt")
        with pytest.raises(Forbidden):
            await bob.files.read("@agent-a/private/x.md")
        with pytest.raises(Forbidden):  # read is not write
            await bob.files.write("@agent-a/shared/doc.md", "defaced")
        with pytest.raises(Forbidden):  # nor is it for carol
            await carol.files.read("@agent-a/shared/doc.md")
        assert await carol.files.search("fox") == []

        # Write access: bob edits alice's file; the version names him as author; alice sees it.
        await alice.files.share("shared/doc.md", MALLORY, mode="write")
        edited = await bob.files.write("@agent-a/shared/doc.md", "edited by bob")
        assert (edited.path, edited.version, edited.author) == ("@agent-a/shared/doc.md", 2, MALLORY)
        mine = await alice.files.stat("shared/doc.md")
        assert (mine.path, mine.version, mine.author) == ("shared/doc.md", 2, MALLORY)
        assert await alice.files.read("shared/doc.md") == b"edited by bob"
        with pytest.raises(InvalidRequest):  # a move stays in one namespace
            await bob.files.move("@agent-a/shared/doc.md", "stolen.md")
        await bob.files.rollback("@agent-a/shared/doc.md", 1)
        assert await alice.files.read("shared/doc.md") == b"shared fox notes"

        # Revoke: both grants gone, access gone at once.
        await alice.files.revoke("shared/doc.md", MALLORY)
        with pytest.raises(Forbidden):
            await bob.files.write("@agent-a/shared/doc.md", "again")
        assert await bob.files.read("@agent-a/shared/doc.md") == b"shared fox notes"  # prefix read left
        left = await alice.files.revoke("shared", MALLORY, prefix=True)
        assert left.given == []
        with pytest.raises(Forbidden):
            await bob.files.read("@agent-a/shared/doc.md")
        assert (await bob.files.list("@agent-a")).entries == []
        assert await bob.files.search("fox") == []
        with pytest.raises(NotFound):
            await alice.files.revoke("shared", MALLORY, prefix=True)
