"""`files.*` syscalls: one handler per kind, for the caller the scheduler authenticated.

Who may do what: an agent owns the namespace named after it. A path without `@owner/` is the
caller's own; `@owner/path` is another agent's, reachable only through that owner's grants (read, or
write: read, write, delete, move, rollback). Only owners share. Nothing in a payload can name the
caller: it is `call.agent`, set by the kernel.

Large files (DESIGN: never one NATS message, never whole in memory): `files.upload` starts an S3
multipart upload to a fresh content key and answers one presigned PUT URL per part (64 MiB by
default, at most 200 parts), valid `url_ttl_s`; the client streams each part straight to S3 (in any
order, in parallel, again after a failure); `files.commit` checks every part's size, completes the
upload, reads the object back as a stream (1 MiB at a time) to check size and SHA-256, and only then
records a version pointing at it. Once completed, the object cannot be written again (the part URLs
die with the upload id), so what was checked is what is kept, with no copy. A read larger than
`inline_max_bytes` answers a presigned GET URL with an expiry. Chosen over chunked transfer through
NATS because the bytes then never cross the bus nor the service, and S3 already does resumable,
authenticated, parallel transfer; the service only signs, checks and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from pydantic import JsonValue

from aios_schemas import (
    AiosError,
    AnyResult,
    FileContent,
    FileHit,
    FileHits,
    FileInfo,
    FileList,
    FilesCommit,
    FilesDelete,
    FileShares,
    FilesList,
    FilesMove,
    FilesRead,
    FilesRollback,
    FilesSearch,
    FilesShare,
    FilesShares,
    FilesStat,
    FileStat,
    FilesUpload,
    FilesVersions,
    FilesWrite,
    FileUploadTicket,
    FileVersions,
    FileWritten,
    Grant,
    Syscall,
    split_owner,
)

from .blobs import Blobs
from .meta import Meta, Share, Upload, Version
from .settings import StorageSettings
from .textindex import CHUNK_CHARS, TextIndex

log = logging.getLogger(__name__)
Mode = Literal["read", "write"]
MAX_PARTS = 200  # presigned part URLs in one ticket: the reply must fit the bus (1 MB)


def extract_text(data: bytes) -> str | None:
    """The text of a file worth indexing: valid UTF-8 with no NUL byte (else a binary file)."""
    if b"\x00" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def snippet(text: str, words: list[str], width: int = 160) -> str:
    low = text.lower()
    at = min((i for i in (low.find(w) for w in words) if i >= 0), default=0)
    start = max(0, at - width // 3)
    return " ".join(text[start : start + width].split())


class _PathLock:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


@dataclass(frozen=True)
class Target:
    """A path resolved for a caller: whose namespace, where in it, and how the caller names it."""

    owner: str
    path: str
    caller: str

    @property
    def shown(self) -> str:
        return self.path if self.owner == self.caller else f"@{self.owner}/{self.path}"


class StorageHandlers:
    def __init__(
        self,
        settings: StorageSettings,
        meta: Meta,
        blobs: Blobs,
        index: TextIndex | None = None,
        *,
        partition: int = 0,
    ) -> None:
        self.s = settings
        self.partition = partition  # of the owners' data this instance holds (runtime/partitions.py)
        self.meta = meta
        self.blobs = blobs
        self.index = index
        self._locks: dict[tuple[str, str], _PathLock] = {}
        self._running = 0
        self._idle = asyncio.Event()

    # --- dispatch ---------------------------------------------------------------------------
    async def handle(self, call: Syscall) -> AnyResult:
        self._running += 1
        try:
            return await self._handle(call)
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def drain(self, timeout: float) -> None:
        """Let running calls finish (a graceful stop) before the stores close under them."""
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), deadline - time.monotonic())

    async def _handle(self, call: Syscall) -> AnyResult:
        p = call.payload
        agent, sid = call.agent, call.id
        if isinstance(p, FilesWrite | FilesDelete | FilesMove | FilesRollback | FilesCommit):
            # Run before (the service died after recording it, before its reply was kept): the
            # version it made, not a second one.
            done = self.meta.made_by(sid, agent)
            if done is not None:
                return FileWritten(kind=p.kind, info=self.info(done, agent))
        if isinstance(p, FilesWrite):
            return await self.write(agent, p, sid)
        if isinstance(p, FilesRead):
            return await self.read(agent, p)
        if isinstance(p, FilesStat):
            return await self.stat(agent, p)
        if isinstance(p, FilesList):
            return await self.list(agent, p)
        if isinstance(p, FilesDelete):
            return await self.delete(agent, p, sid)
        if isinstance(p, FilesMove):
            return await self.move(agent, p, sid)
        if isinstance(p, FilesVersions):
            return await self.versions(agent, p)
        if isinstance(p, FilesRollback):
            return await self.rollback(agent, p, sid)
        if isinstance(p, FilesShare):
            return await self.share(agent, p)
        if isinstance(p, FilesShares):
            return await self.shares(agent)
        if isinstance(p, FilesSearch):
            return await self.search(agent, p)
        if isinstance(p, FilesUpload):
            return await self.upload(agent, p)
        if isinstance(p, FilesCommit):
            return await self.commit(agent, p, sid)
        raise AiosError("invalid_request", f"the storage service does not run {call.kind}")

    # --- access -----------------------------------------------------------------------------
    async def resolve(self, caller: str, path: str, need: Mode) -> Target:
        """The target of `path` for `caller`, or `forbidden` when it is another agent's and no grant
        of that agent gives `need` (the same answer whether the file exists or not)."""
        owner, rel = split_owner(path)
        t = Target(owner or caller, rel, caller)
        if t.owner == caller:
            return t
        mode = await self.meta.run(lambda: self.meta.access(t.owner, t.path, caller))
        if mode is None or (need == "write" and mode != "write"):
            raise AiosError(
                "forbidden",
                f"{caller} may not {need} @{t.owner}/{t.path}",
                details={"owner": t.owner, "need": need},
            )
        return t

    @asynccontextmanager
    async def _locked(self, *targets: Target) -> AsyncIterator[None]:
        """Changes to one path run one at a time (version numbers stay dense and ordered)."""
        keys = sorted({(t.owner, t.path) for t in targets})
        entries = []
        for k in keys:
            entry = self._locks.setdefault(k, _PathLock())
            entry.users += 1
            entries.append(entry)
        held: list[_PathLock] = []
        try:
            for entry in entries:
                await entry.lock.acquire()
                held.append(entry)
            yield
        finally:
            for entry in held:
                entry.lock.release()
            for k, entry in zip(keys, entries, strict=True):
                entry.users -= 1
                if entry.users == 0:
                    self._locks.pop(k, None)

    def info(self, v: Version, caller: str) -> FileInfo:
        return FileInfo(
            path=Target(v.owner, v.path, caller).shown,
            version=v.version,
            size=v.size,
            sha256=v.sha256,
            author=v.author,
            created=v.created,
            deleted=v.deleted,
            content_type=v.content_type,
            restored_from=v.restored_from,
        )

    async def _existing(self, t: Target, version: int | None) -> Version:
        """The version asked for (the newest by default), `not_found` if none or if the newest is a
        deletion."""
        if version is None:
            v = await self.meta.newest(t.owner, t.path)
            if v is not None and v.deleted:
                raise AiosError(
                    "not_found",
                    f"{t.shown} was deleted",
                    details={"path": t.shown, "deleted_version": v.version},
                )
        else:
            v = await self.meta.run(lambda: self.meta.version(t.owner, t.path, version))
        if v is None:
            what = t.shown if version is None else f"{t.shown} version {version}"
            raise AiosError("not_found", f"no file {what}", details={"path": t.shown})
        return v

    # --- new versions -----------------------------------------------------------------------
    def _meta_headers(self, v: Version, ref: str | None = None) -> dict[str, str]:
        """What the S3 object of a version says about it, for a rebuild of the index from S3."""
        headers = {
            "aios-owner": v.owner,
            "aios-path": quote(v.path, safe=""),
            "aios-version": str(v.version),
            "aios-sha256": v.sha256,
            "aios-size": str(v.size),
            "aios-author": v.author,
            "aios-created": repr(v.created),
            "aios-deleted": "1" if v.deleted else "0",
        }
        if ref is not None:
            headers["aios-ref"] = ref
        if v.restored_from is not None:
            headers["aios-restored-from"] = str(v.restored_from)
        if v.content_type is not None:
            headers["aios-content-type"] = quote(v.content_type, safe="")
        return headers

    def _new_key(self, owner: str) -> str:
        return f"v/{owner}/{uuid.uuid4().hex}"

    async def _next(self, t: Target, if_version: int | None) -> int:
        head = await self.meta.newest(t.owner, t.path)
        current = 0 if head is None else head.version
        if if_version is not None:
            live = 0 if head is None or head.deleted else head.version
            if if_version != live:
                raise AiosError(
                    "conflict",
                    f"{t.shown} is at version {live}, not {if_version}",
                    details={"path": t.shown, "version": live},
                )
        return current + 1

    async def _pointer(self, t: Target, v: Version, ref: str) -> Version:
        """Record version `v` whose content is object `ref` (or a deletion when '') as a small S3
        object of its own; returns it with its content key."""
        key = self._new_key(t.owner)
        headers = self._meta_headers(v, ref)
        await self.blobs.run(lambda: self.blobs.put(key, b"", headers))
        return dataclasses.replace(v, object=ref)

    async def write(self, agent: str, p: FilesWrite, sid: str | None = None) -> FileWritten:
        t = await self.resolve(agent, p.path, "write")
        data = p.content
        digest = hashlib.sha256(data).hexdigest()
        if p.sha256 is not None and p.sha256 != digest:
            raise AiosError(
                "invalid_request",
                f"content of {t.shown} does not match its sha256: nothing stored",
                details={"expected": p.sha256, "received": digest, "size": len(data)},
            )
        text = extract_text(data) if len(data) <= self.s.search_text_max_bytes else None
        async with self._locked(t):
            n = await self._next(t, p.if_version)
            key = self._new_key(t.owner)
            v = Version(t.owner, t.path, n, key, len(data), digest, agent, time.time(), False, p.content_type)
            headers = self._meta_headers(v)
            await self.blobs.run(lambda: self.blobs.put(key, data, headers, p.content_type))
            await self.meta.record([(v, text)], sid)
        self._index(v, text)
        return FileWritten(kind="files.write", info=self.info(v, agent))

    async def delete(self, agent: str, p: FilesDelete, sid: str | None = None) -> FileWritten:
        t = await self.resolve(agent, p.path, "write")
        async with self._locked(t):
            await self._existing(t, None)
            n = await self._next(t, p.if_version)
            v = await self._pointer(t, Version(t.owner, t.path, n, "", 0, "", agent, time.time(), True), "")
            await self.meta.record([(v, None)], sid)
        return FileWritten(kind="files.delete", info=self.info(v, agent))

    async def rollback(self, agent: str, p: FilesRollback, sid: str | None = None) -> FileWritten:
        t = await self.resolve(agent, p.path, "write")
        async with self._locked(t):
            old = await self._existing(t, p.version)
            if old.deleted:
                raise AiosError(
                    "invalid_request",
                    f"version {p.version} of {t.shown} is a deletion: delete the file instead",
                    details={"path": t.shown, "version": p.version},
                )
            n = await self._next(t, None)
            new = Version(
                t.owner,
                t.path,
                n,
                "",
                old.size,
                old.sha256,
                agent,
                time.time(),
                False,
                old.content_type,
                old.version,
            )
            v = await self._pointer(t, new, old.object)
            text = await self.meta.run(lambda: self.meta.text_of(t.owner, t.path, old.version))
            await self.meta.record([(v, text)], sid)
        self._index(v, text)
        return FileWritten(kind="files.rollback", info=self.info(v, agent))

    async def move(self, agent: str, p: FilesMove, sid: str | None = None) -> FileWritten:
        src = await self.resolve(agent, p.path, "write")
        dst = await self.resolve(agent, p.to, "write")
        if src.owner != dst.owner:
            raise AiosError("invalid_request", "a move stays within one namespace", details={"to": p.to})
        if src.path == dst.path:
            raise AiosError("invalid_request", f"{src.shown} is already there")
        async with self._locked(src, dst):
            old = await self._existing(src, None)
            there = await self.meta.newest(dst.owner, dst.path)
            if there is not None and not there.deleted and not p.overwrite:
                raise AiosError(
                    "conflict", f"{dst.shown} exists (overwrite=true replaces it)", details={"to": dst.shown}
                )
            now = time.time()
            text = await self.meta.run(lambda: self.meta.text_of(src.owner, src.path, old.version))
            n_dst = await self._next(dst, None)
            moved = Version(
                dst.owner, dst.path, n_dst, "", old.size, old.sha256, agent, now, False, old.content_type
            )
            moved = await self._pointer(dst, moved, old.object)
            n_src = await self._next(src, None)
            gone = await self._pointer(
                src, Version(src.owner, src.path, n_src, "", 0, "", agent, now, True), ""
            )
            await self.meta.record([(moved, text), (gone, None)], sid)
        self._index(moved, text)
        return FileWritten(kind="files.move", info=self.info(moved, agent))

    # --- large files --------------------------------------------------------------------------
    async def upload(self, agent: str, p: FilesUpload) -> FileUploadTicket:
        t = await self.resolve(agent, p.path, "write")
        if p.size > self.s.max_file_bytes:
            raise AiosError(
                "invalid_request",
                f"{p.size} bytes is over the largest file of {self.s.max_file_bytes} bytes",
                details={"size": p.size, "limit": self.s.max_file_bytes},
            )
        part_size = max(self.s.part_size_bytes, -(-p.size // MAX_PARTS))
        parts = max(1, -(-p.size // part_size))
        # Begins with this partition, so that its commit is routed here (storage/main.py).
        upload_id = f"{self.partition:02x}{uuid.uuid4().hex[2:]}"
        # A content key of the target's namespace that no version names yet; only the multipart
        # upload writes it, and once completed nothing can (its part URLs die with the upload).
        key = f"c/{t.owner}/{upload_id}"
        expires = time.time() + self.s.url_ttl_s
        ttl = self.s.url_ttl_s
        s3_upload = await self.blobs.run(lambda: self.blobs.start_multipart(key, p.content_type))
        u = Upload(
            upload_id,
            t.owner,
            t.path,
            agent,
            key,
            p.size,
            p.sha256,
            p.content_type,
            p.if_version,
            expires,
            s3_upload,
            part_size,
            parts,
        )
        await self.meta.run(lambda: self.meta.put_upload(u))
        urls = await self.blobs.run(
            lambda: [self.blobs.part_url(key, s3_upload, i, ttl) for i in range(1, parts + 1)]
        )
        return FileUploadTicket(upload=upload_id, part_size=part_size, parts=urls, expires=expires)

    async def commit(self, agent: str, p: FilesCommit, sid: str | None = None) -> FileWritten:
        u = await self.meta.run(lambda: self.meta.upload(p.upload))
        if u is None or u.author != agent:  # another agent's upload id is as unknown as a made-up one
            raise AiosError("not_found", f"no upload {p.upload}", details={"upload": p.upload})
        t = await self.resolve(agent, u.path if u.owner == agent else f"@{u.owner}/{u.path}", "write")
        await self._complete(u)
        keep = u.size if u.size <= self.s.search_text_max_bytes else 0
        # The bytes S3 now holds, read back as a stream: what the version records is what was stored.
        got = await self.blobs.run(lambda: self.blobs.digest(u.object, keep))
        if (got.size, got.sha256) != (u.size, u.sha256):
            await self._drop_upload(u)
            raise AiosError(
                "invalid_request",
                f"uploaded content of {t.shown} does not match its size/sha256: nothing stored",
                details={"expected": u.sha256, "received": got.sha256, "size": got.size},
            )
        text = extract_text(got.head) if keep else None
        async with self._locked(t):
            try:
                n = await self._next(t, u.if_version)
            except AiosError:
                await self._drop_upload(u)
                raise
            v = Version(t.owner, t.path, n, "", u.size, u.sha256, agent, time.time(), False, u.content_type)
            v = await self._pointer(t, v, u.object)
            await self.meta.record([(v, text)], sid, drop_upload=u.id)
        self._index(v, text)
        return FileWritten(kind="files.commit", info=self.info(v, agent))

    async def _complete(self, u: Upload) -> None:
        """Complete the multipart upload of `u` if every part arrived with the right size."""
        parts = await self.blobs.run(lambda: self.blobs.uploaded_parts(u.object, u.s3_upload))
        if parts is None:  # completed by a commit that died before recording it, or aborted
            if await self.blobs.run(lambda: self.blobs.size(u.object)) is None:
                await self.meta.run(lambda: self.meta.drop_upload(u.id))
                raise AiosError("not_found", f"upload {u.id} is no more", details={"upload": u.id})
            return
        got = {number: size for number, _, size in parts}
        missing = [i for i in range(1, u.parts + 1) if i not in got]
        if missing:
            raise AiosError(
                "conflict",
                f"upload {u.id}: {len(missing)} of {u.parts} parts not received yet",
                details={"upload": u.id, "missing": list[JsonValue](missing[:100])},
            )
        last = u.size - (u.parts - 1) * u.part_size
        wrong = [i for i in range(1, u.parts + 1) if got[i] != (last if i == u.parts else u.part_size)]
        if wrong or len(got) != u.parts:
            await self._drop_upload(u)
            raise AiosError(
                "invalid_request",
                f"upload {u.id}: parts {wrong or sorted(set(got) - set(range(1, u.parts + 1)))} have the"
                " wrong size or should not exist: nothing stored",
                details={"upload": u.id, "size": sum(got.values()), "expected": u.size},
            )
        await self.blobs.run(lambda: self.blobs.complete_multipart(u.object, u.s3_upload, parts))

    def _index(self, v: Version, text: str | None) -> None:
        if self.index is not None and text:
            self.index.submit(v.sha256, text)

    async def _drop_upload(self, u: Upload) -> None:
        """Forget an upload: its parts, its content if completed, its record."""
        try:
            await self.blobs.run(lambda: self.blobs.abort_multipart(u.object, u.s3_upload))
        except Exception as exc:
            log.warning("could not abort upload %s: %s", u.id, exc)
        await self._remove_quietly(u.object)
        await self.meta.run(lambda: self.meta.drop_upload(u.id))

    async def _remove_quietly(self, key: str) -> None:
        try:
            await self.blobs.run(lambda: self.blobs.remove(key))
        except Exception as exc:  # a leftover staging object is swept later, not a failed call
            log.warning("could not remove %s: %s", key, exc)

    async def sweep(self, now: float | None = None) -> int:
        """Forget uploads whose URL has expired (a minute ago: a PUT may still be finishing) without
        a commit, and their staging objects."""
        before = (time.time() if now is None else now) - 60
        expired = await self.meta.run(lambda: self.meta.expired_uploads(before))
        for u in expired:
            await self._drop_upload(u)
        return len(expired)

    # --- reads --------------------------------------------------------------------------------
    async def read(self, agent: str, p: FilesRead) -> FileContent:
        t = await self.resolve(agent, p.path, "read")
        v = await self._existing(t, p.version)
        if v.deleted:
            raise AiosError(
                "not_found", f"version {v.version} of {t.shown} is a deletion", details={"path": t.shown}
            )
        if p.url or v.size > self.s.inline_max_bytes:
            ttl = self.s.url_ttl_s
            url = await self.blobs.run(lambda: self.blobs.get_url(v.object, ttl))
            return FileContent(info=self.info(v, agent), url=url, url_expires=time.time() + ttl)
        data = await self.blobs.run(lambda: self.blobs.get(v.object))
        if hashlib.sha256(data).hexdigest() != v.sha256:  # S3 is the truth; a mismatch is damage
            raise AiosError("internal", f"stored content of {t.shown} v{v.version} fails its checksum")
        return FileContent(info=self.info(v, agent), content=data)

    async def stat(self, agent: str, p: FilesStat) -> FileStat:
        t = await self.resolve(agent, p.path, "read")
        return FileStat(info=self.info(await self._existing(t, p.version), agent))

    async def versions(self, agent: str, p: FilesVersions) -> FileVersions:
        t = await self.resolve(agent, p.path, "read")
        rows = await self.meta.run(lambda: self.meta.versions(t.owner, t.path, p.limit))
        if not rows:
            raise AiosError("not_found", f"no file {t.shown}", details={"path": t.shown})
        return FileVersions(versions=[self.info(v, agent) for v in rows])

    async def list(self, agent: str, p: FilesList) -> FileList:
        owner, prefix = split_owner(p.prefix)
        owner = owner or agent
        after = None
        if p.after is not None:
            a_owner, after = split_owner(p.after)
            if (a_owner or agent) != owner:
                raise AiosError("invalid_request", "`after` must be a path of the listed namespace")
        grantee = None if owner == agent else agent
        rows = await self.meta.run(
            lambda: self.meta.listing(
                owner,
                prefix,
                grantee=grantee,
                include_deleted=p.include_deleted,
                after=after,
                limit=p.limit + 1,
            )
        )
        return FileList(entries=[self.info(v, agent) for v in rows[: p.limit]], truncated=len(rows) > p.limit)

    async def search(self, agent: str, p: FilesSearch) -> FileHits:
        owner, prefix = split_owner(p.prefix)
        if p.mode == "semantic":
            return await self._semantic(agent, owner, prefix, p)
        words = [w for w in dict.fromkeys(p.query.lower().split()) if w][:16]
        if not words:
            raise AiosError("invalid_request", "the query has no words")
        rows = await self.meta.run(lambda: self.meta.search(agent, owner, prefix, words, p.k))
        return FileHits(
            hits=[
                FileHit(info=self.info(v, agent), score=score, snippet=snippet(text, words))
                for v, text, score in rows
            ]
        )

    async def _semantic(self, agent: str, owner: str | None, prefix: str, p: FilesSearch) -> FileHits:
        index = self.index
        if index is None:
            raise AiosError("invalid_request", "semantic search is off in this storage service (no embedder)")
        await index.settled(timeout=5.0)  # the caller's earlier writes are searchable
        vec = await index.embed_query(p.query)
        rows = await self.meta.run(lambda: self.meta.semantic(agent, owner, prefix, index.name, vec, p.k))
        words = [w for w in p.query.lower().split() if len(w) > 2] or p.query.lower().split()
        return FileHits(
            hits=[  # the snippet: around the query's words in the chunk that matched best
                FileHit(
                    info=self.info(v, agent),
                    score=score,
                    snippet=snippet(text[start : start + CHUNK_CHARS], words),
                )
                for v, text, score, start in rows
            ]
        )

    # --- shares -------------------------------------------------------------------------------
    async def share(self, agent: str, p: FilesShare) -> FileShares:
        owner, path = split_owner(p.path)
        if owner not in (None, agent):
            raise AiosError("forbidden", "only the owner of a file shares it", details={"owner": owner})
        if p.grantee == agent:
            raise AiosError("invalid_request", "an agent cannot share with itself")
        if not path and not p.prefix:
            raise AiosError("invalid_request", "an empty path is shared only as a prefix (everything)")
        if p.revoke:
            dropped = await self.meta.run(lambda: self.meta.drop_share(agent, path, p.prefix, p.grantee))
            if not dropped:
                raise AiosError("not_found", f"{p.grantee} has no such grant on {path or '(all)'}")
        else:
            s = Share(agent, path, p.prefix, p.grantee, p.mode, time.time())
            await self.meta.run(lambda: self.meta.put_share(s))
        result = await self.shares(agent, kind="files.share")
        # The grants also live on S3, so a rebuilt index has them.
        doc = json.dumps([g.model_dump(mode="json") for g in result.given]).encode()
        await self.blobs.run(lambda: self.blobs.put(f"shares/{agent}.json", doc, {}, "application/json"))
        return result

    async def shares(self, agent: str, kind: str = "files.shares") -> FileShares:
        given = await self.meta.run(lambda: self.meta.shares(owner=agent))
        received = await self.meta.run(lambda: self.meta.shares(grantee=agent))
        return FileShares(
            kind="files.share" if kind == "files.share" else "files.shares",
            given=[_grant(s) for s in given],
            received=[_grant(s) for s in received],
        )

    @property
    def locks(self) -> int:
        return len(self._locks)

    def health(self) -> dict[str, JsonValue]:
        return {"locks": self.locks, "bucket": self.blobs.bucket}


def _grant(s: Share) -> Grant:
    return Grant(
        owner=s.owner,
        path=s.path,
        prefix=s.prefix,
        grantee=s.grantee,
        mode="write" if s.mode == "write" else "read",
        created=s.created,
    )
