"""`files.*` payloads and replies: an agent's file system (the storage service), and the one rule
that turns a path an agent sends into a safe one.

Paths are relative to the caller's own namespace: `notes/today.md`. Another agent's file, shared with
the caller, is addressed as `@owner/path` (`@agent-b/notes/today.md`); only the `share` grants of
that owner decide whether the caller may read or write it. Every path is validated here, where the
payload is parsed, so a bad one fails as `invalid_request` before it reaches any service.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Bytes travel inline as base64 in JSON (base64url on output; standard and url alphabets accepted).
_STRICT = ConfigDict(extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

MAX_PATH_BYTES = 1024  # a whole path, UTF-8
MAX_SEGMENT_BYTES = 255  # one name between slashes (what common file systems allow)
MAX_DEPTH = 32
SHA256_PATTERN = r"^[0-9a-f]{64}$"
_AGENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # envelope.AGENT_PATTERN (no import cycle)
# Unicode categories never allowed in a name: controls, invisible formatting (zero-width joiners,
# bidi overrides that make `txt.exe` read as `exe.txt`), surrogates, private use, unassigned, and
# line/paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Characters drawn like a slash or backslash that compatibility normalisation keeps as they are
# (fraction slash, division slash, big solidus, set minus, small reverse solidus...).
_SLASH_LOOKALIKES = frozenset("\u2044\u2215\u29f8\u29f9\u2216\ufe68")


class PathError(ValueError):
    """A path that cannot be made safe: `invalid_request` (pydantic reports it as a field error)."""


def normalise_path(raw: str, *, allow_empty: bool = False) -> str:
    """The one safe spelling of a path, or PathError.

    NFC-normalised; `.` and empty segments dropped (`a//./b` is `a/b`). Refused: absolute paths, `..`,
    backslashes, control and invisible characters, spaces other than U+0020, names that read as `.`
    or `..` or hold a slash once compatibility-normalised (fullwidth dots U+FF0E, fullwidth solidus
    U+FF0F), names with leading or trailing whitespace, `@` starting a name (it marks an owner), and
    anything over the length bounds. An optional `@owner/` prefix names another agent's namespace
    and is kept as `@owner/rest`."""
    if not isinstance(raw, str):
        raise PathError("a path is a string")
    if len(raw) > 4 * MAX_PATH_BYTES:
        raise PathError(f"path longer than {MAX_PATH_BYTES} bytes")
    text = unicodedata.normalize("NFC", raw)
    for ch in text:
        cat = unicodedata.category(ch)
        if cat in _REFUSED_CATEGORIES:
            raise PathError(f"path contains a control or invisible character (U+{ord(ch):04X})")
        if cat == "Zs" and ch != " ":
            raise PathError(f"path contains an unusual space (U+{ord(ch):04X})")
    if "\\" in text:
        raise PathError("path contains a backslash (the separator is /)")
    if any(ch in _SLASH_LOOKALIKES for ch in text):
        raise PathError("path contains a character drawn like a slash")
    owner = None
    if text.startswith("@"):
        owner, _, text = text[1:].partition("/")
        if not _AGENT.match(owner):
            raise PathError(f"@{owner[:64]}: not an agent name")
    if text.startswith("/"):
        raise PathError("absolute paths are not allowed: paths are relative to a namespace")
    segments = [s for s in text.split("/") if s not in ("", ".")]
    for seg in segments:
        if seg == "..":
            raise PathError("'..' is not allowed in a path")
        folded = unicodedata.normalize("NFKC", seg)
        if folded.strip(" ") in (".", "..") or "/" in folded or "\\" in folded:
            raise PathError(f"name {seg[:64]!r} reads as a separator or a relative step")
        if seg != seg.strip():
            raise PathError(f"name {seg[:64]!r} starts or ends with whitespace")
        if seg.startswith("@"):
            raise PathError(f"name {seg[:64]!r} starts with '@', which marks an owner (@owner/path)")
        if len(seg.encode()) > MAX_SEGMENT_BYTES:
            raise PathError(f"a name is longer than {MAX_SEGMENT_BYTES} bytes")
    if len(segments) > MAX_DEPTH:
        raise PathError(f"path deeper than {MAX_DEPTH} levels")
    if not segments and not allow_empty:
        raise PathError("empty path")
    path = "/".join(segments)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise PathError(f"path longer than {MAX_PATH_BYTES} bytes")
    return f"@{owner}/{path}" if owner is not None else path


def split_owner(path: str) -> tuple[str | None, str]:
    """`@owner/rest` -> (owner, rest); a plain path -> (None, path). Takes a normalised path."""
    if path.startswith("@"):
        owner, _, rest = path[1:].partition("/")
        return owner, rest
    return None, path


def _file_path(v: str) -> str:
    return normalise_path(v)


def _prefix_path(v: str) -> str:
    return normalise_path(v, allow_empty=True)


FilePath = Annotated[
    str,
    Field(min_length=1, max_length=4 * MAX_PATH_BYTES),
    AfterValidator(_file_path),
]
PrefixPath = Annotated[str, Field(max_length=4 * MAX_PATH_BYTES), AfterValidator(_prefix_path)]
Sha256 = Annotated[str, Field(pattern=SHA256_PATTERN, description="Lower-case hex SHA-256.")]
ShareMode = Literal["read", "write"]

_PATH = (
    "Relative path in the caller's namespace (`dir/name.txt`), or `@owner/path` for another agent's"
    " file shared with the caller. Normalised (NFC, `.` and `//` dropped); `..`, absolute paths,"
    " control/invisible characters and over-long names are refused."
)


# --- payloads ------------------------------------------------------------------------------------


class FilesWrite(BaseModel):
    """Payload of `files.write`: store `content` as the newest version of `path` (small files; a large
    one goes through `files.upload` + `files.commit`)."""

    model_config = _STRICT
    kind: Literal["files.write"] = Field("files.write", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    content: bytes = Field(description="The file's bytes (base64 in JSON). Bounded by the bus size.")
    sha256: Sha256 | None = Field(
        None, description="SHA-256 the caller computed: if the bytes received differ, nothing is stored."
    )
    content_type: str | None = Field(None, max_length=200, description="MIME type, if known.")
    if_version: int | None = Field(
        None,
        ge=0,
        description="Write only if the newest version is this one (0: only if the file does not exist"
        " or is deleted); else `conflict`.",
    )


class FilesRead(BaseModel):
    """Payload of `files.read`: the bytes of a version (the newest by default)."""

    model_config = _STRICT
    kind: Literal["files.read"] = Field("files.read", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    version: int | None = Field(None, ge=1, description="Version number; None: the newest.")
    url: bool = Field(
        False,
        description="Answer with a short-lived presigned GET URL instead of inline bytes (always the"
        " case for files larger than the service's inline limit).",
    )


class FilesStat(BaseModel):
    """Payload of `files.stat`: what is known about a version (the newest by default)."""

    model_config = _STRICT
    kind: Literal["files.stat"] = Field("files.stat", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    version: int | None = Field(None, ge=1, description="Version number; None: the newest.")


class FilesList(BaseModel):
    """Payload of `files.list`: the files under a directory prefix, newest version of each."""

    model_config = _STRICT
    kind: Literal["files.list"] = Field("files.list", description="Syscall kind.")
    prefix: PrefixPath = Field(
        "",
        description="Directory to list ('' the caller's whole namespace; `@owner/` or `@owner/dir`"
        " the files of another agent shared with the caller).",
    )
    include_deleted: bool = Field(False, description="Also list files whose newest version is a deletion.")
    limit: int = Field(1000, ge=1, le=10000, description="At most this many entries.")
    after: str | None = Field(
        None, max_length=4 * MAX_PATH_BYTES, description="Start after this path (paging: the last one seen)."
    )


class FilesDelete(BaseModel):
    """Payload of `files.delete`: record a deletion as the newest version (roll back to undo it)."""

    model_config = _STRICT
    kind: Literal["files.delete"] = Field("files.delete", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    if_version: int | None = Field(None, ge=1, description="Delete only if the newest version is this one.")


class FilesMove(BaseModel):
    """Payload of `files.move`: the content of `path` becomes the newest version of `to`, and `path`
    is deleted (both ends keep their history). Within one namespace."""

    model_config = _STRICT
    kind: Literal["files.move"] = Field("files.move", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    to: FilePath = Field(description="Destination path, in the same namespace as `path`.")
    overwrite: bool = Field(False, description="Replace an existing `to` (else `conflict`).")


class FilesVersions(BaseModel):
    """Payload of `files.versions`: the history of a path, newest first."""

    model_config = _STRICT
    kind: Literal["files.versions"] = Field("files.versions", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    limit: int = Field(100, ge=1, le=10000, description="At most this many versions.")


class FilesRollback(BaseModel):
    """Payload of `files.rollback`: make an earlier version's content the newest version again."""

    model_config = _STRICT
    kind: Literal["files.rollback"] = Field("files.rollback", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    version: int = Field(ge=1, description="The version whose content to restore.")


class FilesShare(BaseModel):
    """Payload of `files.share`: grant (or revoke) another agent read or read-write access to one
    of the caller's files, or to everything under a directory. The grantee then addresses it as
    `@<owner>/<path>`. Only the owner shares."""

    model_config = _STRICT
    kind: Literal["files.share"] = Field("files.share", description="Syscall kind.")
    path: PrefixPath = Field(
        description="A path of the caller's own namespace (no `@owner/`); '' with prefix=true: all."
    )
    grantee: str = Field(pattern=_AGENT.pattern, description="Agent that gets (or loses) access.")
    mode: ShareMode = Field("read", description="read, or write (read, write, delete, move, rollback).")
    prefix: bool = Field(False, description="Grant `path` and everything under `path/`.")
    revoke: bool = Field(False, description="Remove this grant instead of adding it.")


class FilesShares(BaseModel):
    """Payload of `files.shares`: the grants the caller gave, and those it received."""

    model_config = _STRICT
    kind: Literal["files.shares"] = Field("files.shares", description="Syscall kind.")


class FilesSearch(BaseModel):
    """Payload of `files.search`: text files matching a query, among what the caller may read."""

    model_config = _STRICT
    kind: Literal["files.search"] = Field("files.search", description="Syscall kind.")
    query: str = Field(
        min_length=1,
        max_length=500,
        description="keyword: words to find (all of them, any case); semantic: text to find the"
        " closest files to.",
    )
    mode: Literal["keyword", "semantic"] = Field(
        "keyword",
        description="keyword (every word present) or semantic (cosine similarity of text embeddings,"
        " made by the storage service's embedder).",
    )
    prefix: PrefixPath = Field("", description="Search only under this directory ('' everywhere).")
    k: int = Field(20, ge=1, le=200, description="At most this many hits, best first.")


class FilesUpload(BaseModel):
    """Payload of `files.upload`: ask for presigned part URLs (an S3 multipart upload) to send a large
    file straight to the object store; `files.commit` then checks it and makes it a version."""

    model_config = _STRICT
    kind: Literal["files.upload"] = Field("files.upload", description="Syscall kind.")
    path: FilePath = Field(description=_PATH)
    size: int = Field(ge=0, description="Exact size in bytes of what will be uploaded.")
    sha256: Sha256 = Field(description="SHA-256 of what will be uploaded (checked at commit).")
    content_type: str | None = Field(None, max_length=200, description="MIME type, if known.")
    if_version: int | None = Field(None, ge=0, description="As for files.write, checked at commit.")


class FilesCommit(BaseModel):
    """Payload of `files.commit`: the upload is done; verify it and record it as the newest version."""

    model_config = _STRICT
    kind: Literal["files.commit"] = Field("files.commit", description="Syscall kind.")
    upload: str = Field(pattern=r"^[0-9a-f]{32}$", description="Upload id from files.upload.")


# --- replies -------------------------------------------------------------------------------------


class FileInfo(BaseModel):
    """One version of one file."""

    model_config = _STRICT
    path: str = Field(description="Path as the caller addresses it (`@owner/...` if not its own).")
    version: int = Field(ge=1, description="Version number, from 1.")
    size: int = Field(ge=0, description="Bytes (0 for a deletion).")
    sha256: str = Field(description="SHA-256 of the content ('' for a deletion).")
    author: str = Field(description="Agent that made this version.")
    created: float = Field(description="Unix time the version was recorded.")
    deleted: bool = Field(False, description="This version is a deletion (a tombstone).")
    content_type: str | None = Field(None, description="MIME type given at write.")
    restored_from: int | None = Field(None, description="For a rollback: the version it restored.")


class FileWritten(BaseModel):
    """Result of every call that makes a version: the version it made."""

    model_config = _STRICT
    kind: Literal["files.write", "files.delete", "files.move", "files.rollback", "files.commit"] = Field(
        description="Syscall kind this answers."
    )
    info: FileInfo = Field(description="The new version.")


class FileContent(BaseModel):
    """Result of `files.read`: inline bytes, or a presigned URL for large files."""

    model_config = _STRICT
    kind: Literal["files.read"] = Field("files.read", description="Syscall kind this answers.")
    info: FileInfo = Field(description="The version read.")
    content: bytes | None = Field(None, description="The bytes (base64 in JSON), when inline.")
    url: str | None = Field(None, description="Presigned GET URL of the bytes, when not inline.")
    url_expires: float | None = Field(None, description="Unix time the URL stops working.")


class FileStat(BaseModel):
    model_config = _STRICT
    kind: Literal["files.stat"] = Field("files.stat", description="Syscall kind this answers.")
    info: FileInfo = Field(description="The version.")


class FileList(BaseModel):
    model_config = _STRICT
    kind: Literal["files.list"] = Field("files.list", description="Syscall kind this answers.")
    entries: list[FileInfo] = Field(description="Newest version of each file, by path.")
    truncated: bool = Field(False, description="More entries exist (ask again with `after`).")


class FileVersions(BaseModel):
    model_config = _STRICT
    kind: Literal["files.versions"] = Field("files.versions", description="Syscall kind this answers.")
    versions: list[FileInfo] = Field(description="Versions, newest first.")


class Grant(BaseModel):
    model_config = _STRICT
    owner: str = Field(description="Agent whose files are shared.")
    path: str = Field(description="Shared path (in the owner's namespace).")
    prefix: bool = Field(description="Covers everything under `path/` too.")
    grantee: str = Field(description="Agent that may access them.")
    mode: ShareMode = Field(description="read or write.")
    created: float = Field(description="Unix time of the grant.")


class FileShares(BaseModel):
    model_config = _STRICT
    kind: Literal["files.share", "files.shares"] = Field(description="Syscall kind this answers.")
    given: list[Grant] = Field(description="Grants the caller gave.")
    received: list[Grant] = Field(description="Grants the caller received.")


class FileHit(BaseModel):
    model_config = _STRICT
    info: FileInfo = Field(description="The file (newest version).")
    score: float = Field(description="Relevance, higher is better (semantic: cosine similarity).")
    snippet: str = Field(description="Text around the first match (semantic: of the closest chunk).")


class FileHits(BaseModel):
    model_config = _STRICT
    kind: Literal["files.search"] = Field("files.search", description="Syscall kind this answers.")
    hits: list[FileHit] = Field(description="Best first.")


class FileUploadTicket(BaseModel):
    """Where to send a large file: one presigned PUT URL per part (an S3 multipart upload). Part i
    (from 0) is bytes [i * part_size, (i + 1) * part_size) of the file; parts may go in any order,
    in parallel, and again after a failure, until `expires`."""

    model_config = _STRICT
    kind: Literal["files.upload"] = Field("files.upload", description="Syscall kind this answers.")
    upload: str = Field(description="Upload id, for files.commit.")
    part_size: int = Field(ge=1, description="Bytes of every part but the last.")
    parts: list[str] = Field(min_length=1, description="Presigned PUT URL of each part, in order.")
    expires: float = Field(description="Unix time the URLs (and the upload) expire.")


class FilesInspect(BaseModel):
    """Operator -> storage (`ctl.storage.inspect`, kernel credentials only): run a read-only
    `files.*` call as `agent`, for `aios files`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str = Field(pattern=_AGENT.pattern, description="Agent whose files to look at.")
    payload: FilesList | FilesRead | FilesVersions = Field(discriminator="kind", description="The call.")


class FilesReindex(BaseModel):
    """Operator -> storage (`ctl.storage.reindex`, kernel credentials only): rebuild the metadata
    index from S3. The service sets its DuckDB file aside, stops, and is restarted by its
    supervisor; at start an empty index is rebuilt from S3 (the source of truth). Syscalls meanwhile
    wait in the scheduler: nothing is lost."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesReindexReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    instance: str = Field(description="The storage replica that will restart.")
    pid: int = Field(description="Its process id (a new one answers once it is back).")
    kept_at: str = Field(description="Where the current index file is set aside.")


class FilesInspectReply(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    result: FileList | FileContent | FileVersions = Field(discriminator="kind", description="Its result.")


FilesPayload = (
    FilesWrite
    | FilesRead
    | FilesStat
    | FilesList
    | FilesDelete
    | FilesMove
    | FilesVersions
    | FilesRollback
    | FilesShare
    | FilesShares
    | FilesSearch
    | FilesUpload
    | FilesCommit
)
FilesKind = Literal[
    "files.write",
    "files.read",
    "files.stat",
    "files.list",
    "files.delete",
    "files.move",
    "files.versions",
    "files.rollback",
    "files.share",
    "files.shares",
    "files.search",
    "files.upload",
    "files.commit",
]
FilesResult = (
    FileWritten | FileContent | FileStat | FileList | FileVersions | FileShares | FileHits | FileUploadTicket
)
