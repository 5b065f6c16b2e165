"""`aios.files`: the agent's file system (the storage service), typed.

Paths are relative to the agent's own namespace (`notes/today.md`); a file another agent shared is
`@owner/path`. Every write makes a version; `read` takes a version; `rollback` restores one;
`delete` is a version too (roll it back to undo).

Small content travels inline in the syscall. Larger content never crosses the bus: `write` /
`write_file` ask for an upload (`files.upload`: one presigned URL per part), send the parts straight
to the object store (from disk, a block at a time, a few parts at once), then `files.commit` has the
service check size and SHA-256;
`read` / `read_file` fetch large files from a presigned GET URL, `read_file` streaming to disk and
checking the SHA-256 before the file appears.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from aios_schemas import (
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
)
from aios_schemas.wire import validation_error

from .errors import BackendError, BackendUnavailable, typed

if TYPE_CHECKING:
    from .client import AIOS

# Content up to this size goes inline in the syscall (base64 makes it a third larger: well under
# the bus's 1 MB max_payload); larger content goes through a presigned upload.
INLINE_MAX = 256 * 1024
_BLOCK = 1024 * 1024  # what streaming holds at once
_PARALLEL_PARTS = 4  # parts of one upload in flight at once
_PART_ATTEMPTS = 3
P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")
PathLike = str | os.PathLike[str]


def _payload(cls: type[P], **fields: object) -> P:
    """Validated here, so a bad path fails at the call with InvalidRequest, not in the kernel."""
    try:
        return cls.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise typed(validation_error(exc, f"{cls.model_fields['kind'].default} payload")) from exc


def _sha256_of_file(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def _http(what: str, fn: Callable[[], T]) -> T:
    try:
        return fn()
    except urllib.error.HTTPError as exc:
        raise BackendError(f"object store refused the {what}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BackendUnavailable(f"cannot reach the object store for the {what}: {exc}") from exc


def _blocks(f: IO[bytes], length: int) -> Iterator[bytes]:
    """`length` bytes of a file from where it is, in blocks of _BLOCK (http.client would send a file
    object 8 KiB at a time)."""
    while length > 0 and (block := f.read(min(_BLOCK, length))):
        length -= len(block)
        yield block


def _put_part(url: str, body: bytes | Path, start: int, length: int) -> None:
    """PUT bytes [start, start + length) of `body` (bytes in memory, or a file read as it goes)."""

    def send(data: bytes | Iterator[bytes]) -> None:
        req = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Length": str(length)})
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()

    if isinstance(body, bytes):
        send(body[start : start + length])
        return
    with open(body, "rb") as f:
        f.seek(start)
        send(_blocks(f, length))


def _download(url: str, dest: Path, info: FileInfo) -> None:
    """Stream `url` into `dest` (through a temporary file beside it), checking size and SHA-256."""
    h = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while block := resp.read(_BLOCK):
                h.update(block)
                size += len(block)
                out.write(block)
        if (size, h.hexdigest()) != (info.size, info.sha256):
            raise BackendError(
                f"downloaded {info.path} v{info.version} does not match its size/sha256",
                details={"size": size, "expected_size": info.size},
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fetch(url: str, info: FileInfo) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        data: bytes = resp.read()
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise BackendError(f"downloaded {info.path} v{info.version} does not match its sha256")
    return data


class FilesApi:
    """`aios.files.*`. Each call is a syscall through the kernel (scheduled, authenticated as this
    agent); errors raise the SDK's typed exceptions (NotFound, Forbidden, Conflict, InvalidRequest)."""

    def __init__(self, client: AIOS) -> None:
        self._c = client

    async def _call(self, payload: BaseModel, reply: type[R], timeout: float | None) -> R:
        result = await self._c.syscall(payload, timeout=timeout)  # type: ignore[arg-type]
        assert isinstance(result, reply), type(result)
        return result

    # --- writing ------------------------------------------------------------------------------
    async def write(
        self,
        path: str,
        data: bytes | str,
        *,
        content_type: str | None = None,
        if_version: int | None = None,
        timeout: float | None = None,
    ) -> FileInfo:
        """Store `data` (str is UTF-8) as the newest version of `path`; returns that version.
        `if_version`: only if the newest version is this one (0: only if absent), else Conflict."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        digest = hashlib.sha256(raw).hexdigest()
        if len(raw) > INLINE_MAX:
            return await self._upload(path, len(raw), digest, raw, content_type, if_version, timeout)
        payload = _payload(
            FilesWrite,
            path=path,
            content=raw,
            sha256=digest,
            content_type=content_type,
            if_version=if_version,
        )
        return (await self._call(payload, FileWritten, timeout)).info

    async def write_file(
        self,
        path: str,
        local: PathLike,
        *,
        content_type: str | None = None,
        if_version: int | None = None,
        timeout: float | None = None,
    ) -> FileInfo:
        """Store the local file `local` as the newest version of `path`, streamed from disk (memory
        stays bounded whatever its size)."""
        src = Path(local)
        size, digest = await asyncio.to_thread(_sha256_of_file, src)
        if size <= INLINE_MAX:
            return await self.write(
                path,
                await asyncio.to_thread(src.read_bytes),
                content_type=content_type,
                if_version=if_version,
            )
        return await self._upload(path, size, digest, src, content_type, if_version, timeout)

    async def _upload(
        self,
        path: str,
        size: int,
        digest: str,
        body: bytes | Path,
        content_type: str | None,
        if_version: int | None,
        timeout: float | None,
    ) -> FileInfo:
        ask = _payload(
            FilesUpload, path=path, size=size, sha256=digest, content_type=content_type, if_version=if_version
        )
        ticket = await self._call(ask, FileUploadTicket, timeout)
        # Parts go straight to the object store, a few at a time, each read from disk as it is sent.
        sem = asyncio.Semaphore(_PARALLEL_PARTS)

        async def send(i: int, url: str) -> None:
            start = i * ticket.part_size
            length = min(ticket.part_size, size - start)
            async with sem:
                for attempt in range(_PART_ATTEMPTS):  # a part can be sent again until the URL expires
                    try:
                        await asyncio.to_thread(_http, "upload", lambda: _put_part(url, body, start, length))
                        return
                    except (BackendUnavailable, BackendError):
                        if attempt == _PART_ATTEMPTS - 1:
                            raise
                        await asyncio.sleep(0.2 * 2**attempt)

        await asyncio.gather(*(send(i, url) for i, url in enumerate(ticket.parts)))
        done = await self._call(_payload(FilesCommit, upload=ticket.upload), FileWritten, timeout)
        return done.info

    async def delete(
        self, path: str, *, if_version: int | None = None, timeout: float | None = None
    ) -> FileInfo:
        """Delete `path` (a new version that records the deletion; roll back to undo)."""
        payload = _payload(FilesDelete, path=path, if_version=if_version)
        return (await self._call(payload, FileWritten, timeout)).info

    async def move(
        self, path: str, to: str, *, overwrite: bool = False, timeout: float | None = None
    ) -> FileInfo:
        """Move `path` to `to` (same namespace); returns the new version at `to`."""
        payload = _payload(FilesMove, path=path, to=to, overwrite=overwrite)
        return (await self._call(payload, FileWritten, timeout)).info

    async def rollback(self, path: str, version: int, *, timeout: float | None = None) -> FileInfo:
        """Make `version`'s content the newest version of `path` again."""
        payload = _payload(FilesRollback, path=path, version=version)
        return (await self._call(payload, FileWritten, timeout)).info

    # --- reading ------------------------------------------------------------------------------
    async def read(self, path: str, *, version: int | None = None, timeout: float | None = None) -> bytes:
        """The bytes of `path` (the newest version, or `version`). Large files are fetched from a
        presigned URL and held in memory: use `read_file` to stream them to disk."""
        got = await self._call(_payload(FilesRead, path=path, version=version), FileContent, timeout)
        if got.content is not None:
            return got.content
        if got.url is None:
            raise BackendError(f"files.read of {path} returned neither content nor a URL")
        url = got.url
        return await asyncio.to_thread(_http, "download", lambda: _fetch(url, got.info))

    async def read_text(self, path: str, *, version: int | None = None, timeout: float | None = None) -> str:
        return (await self.read(path, version=version, timeout=timeout)).decode()

    async def read_file(
        self, path: str, local: PathLike, *, version: int | None = None, timeout: float | None = None
    ) -> FileInfo:
        """Save `path` (or `version`) to the local file `local`, streamed (memory stays bounded);
        the file appears only once its size and SHA-256 are checked."""
        dest = Path(local)
        got = await self._call(
            _payload(FilesRead, path=path, version=version, url=True), FileContent, timeout
        )
        if got.url is None:
            raise BackendError(f"files.read of {path} returned no URL")
        url = got.url
        await asyncio.to_thread(_http, "download", lambda: _download(url, dest, got.info))
        return got.info

    async def stat(self, path: str, *, version: int | None = None, timeout: float | None = None) -> FileInfo:
        return (await self._call(_payload(FilesStat, path=path, version=version), FileStat, timeout)).info

    async def list(
        self,
        prefix: str = "",
        *,
        include_deleted: bool = False,
        limit: int = 1000,
        after: str | None = None,
        timeout: float | None = None,
    ) -> FileList:
        """Files under the directory `prefix` ('' all of this agent's; `@owner/dir` what another
        agent shared), newest version of each, by path; `truncated` says ask again with `after`."""
        payload = _payload(
            FilesList, prefix=prefix, include_deleted=include_deleted, limit=limit, after=after
        )
        return await self._call(payload, FileList, timeout)

    async def versions(
        self, path: str, *, limit: int = 100, timeout: float | None = None
    ) -> builtins.list[FileInfo]:
        """The versions of `path`, newest first (size, sha256, author, time; deletions included)."""
        payload = _payload(FilesVersions, path=path, limit=limit)
        return (await self._call(payload, FileVersions, timeout)).versions

    async def search(
        self,
        query: str,
        *,
        prefix: str = "",
        k: int = 20,
        mode: Literal["keyword", "semantic"] = "keyword",
        timeout: float | None = None,
    ) -> builtins.list[FileHit]:
        """Text files among this agent's and those shared with it: holding every word of `query`
        (keyword), or closest in meaning to it (semantic, through the storage service's embedder)."""
        payload = _payload(FilesSearch, query=query, prefix=prefix, k=k, mode=mode)
        return (await self._call(payload, FileHits, timeout)).hits

    # --- sharing ------------------------------------------------------------------------------
    async def share(
        self,
        path: str,
        grantee: str,
        *,
        mode: Literal["read", "write"] = "read",
        prefix: bool = False,
        timeout: float | None = None,
    ) -> FileShares:
        """Let `grantee` read (or read and write) `path`, or everything under it with prefix=True;
        it addresses them as `@<this agent>/<path>`."""
        payload = _payload(FilesShare, path=path, grantee=grantee, mode=mode, prefix=prefix)
        return await self._call(payload, FileShares, timeout)

    async def revoke(
        self, path: str, grantee: str, *, prefix: bool = False, timeout: float | None = None
    ) -> FileShares:
        """Take back a grant made by `share` (same path and prefix)."""
        payload = _payload(FilesShare, path=path, grantee=grantee, prefix=prefix, revoke=True)
        return await self._call(payload, FileShares, timeout)

    async def shares(self, *, timeout: float | None = None) -> FileShares:
        """The grants this agent gave and those it received."""
        return await self._call(_payload(FilesShares), FileShares, timeout)


__all__ = ["INLINE_MAX", "FilesApi"]
