"""The storage service's metadata in its DuckDB file: versions of every path, the newest of each,
shares, and uploads in progress. One process owns the file; every call runs on one thread.

Every change is one transaction, committed before the service answers: a version answered is a
version kept across a restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import duckdb

from ..runtime.storage import connect_duckdb

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    owner VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    object VARCHAR NOT NULL,        -- S3 key of the content ('' for a deletion)
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    created DOUBLE NOT NULL,
    deleted BOOLEAN NOT NULL,
    content_type VARCHAR,
    restored_from INTEGER,
    text VARCHAR,                   -- extracted text of small text files, for search
    syscall VARCHAR,                -- the syscall that made it: a call run again finds its version
    PRIMARY KEY (owner, path, version)
);
CREATE TABLE IF NOT EXISTS embeddings (
    sha256 VARCHAR NOT NULL,        -- content: versions with the same bytes share their vectors
    embedder VARCHAR NOT NULL,      -- vectors of two embedders are never compared
    chunk INTEGER NOT NULL,
    start INTEGER NOT NULL,         -- where the chunk starts in the text (characters)
    vec FLOAT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS shares (
    owner VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    prefix BOOLEAN NOT NULL,
    grantee VARCHAR NOT NULL,
    mode VARCHAR NOT NULL,
    created DOUBLE NOT NULL,
    PRIMARY KEY (owner, path, prefix, grantee)
);
CREATE TABLE IF NOT EXISTS uploads (
    id VARCHAR PRIMARY KEY,
    owner VARCHAR NOT NULL,
    path VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    object VARCHAR NOT NULL,        -- the content key the multipart upload writes
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    content_type VARCHAR,
    if_version INTEGER,
    expires DOUBLE NOT NULL,
    s3_upload VARCHAR NOT NULL,     -- the S3 multipart upload id
    part_size BIGINT NOT NULL,
    parts INTEGER NOT NULL
);
"""

_VERSION_COLS = (
    "owner, path, version, object, size, sha256, author, created, deleted, content_type, restored_from"
)


@dataclass(frozen=True)
class Version:
    owner: str
    path: str
    version: int
    object: str
    size: int
    sha256: str
    author: str
    created: float
    deleted: bool
    content_type: str | None = None
    restored_from: int | None = None


@dataclass(frozen=True)
class Share:
    owner: str
    path: str
    prefix: bool
    grantee: str
    mode: str
    created: float


@dataclass(frozen=True)
class Upload:
    id: str
    owner: str
    path: str
    author: str
    object: str
    size: int
    sha256: str
    content_type: str | None
    if_version: int | None
    expires: float
    s3_upload: str
    part_size: int
    parts: int


_UPLOAD_COLS = (
    "id, owner, path, author, object, size, sha256, content_type, if_version, expires,"
    " s3_upload, part_size, parts"
)


def _version(row: Sequence[object]) -> Version:
    return Version(*row)  # type: ignore[arg-type]


# The newest version of each path of some owners (no table of its own: one insert per version is
# the whole cost of a write; DuckDB aggregates a namespace's versions quickly).
_HEADS = "(SELECT owner, path, max(version) AS version FROM versions WHERE {owners} GROUP BY owner, path) h"
# A grant covers a path if it names it, or it is a prefix grant of a directory above it ('' = all).
_COVERS = "(s.path = {p} OR (s.prefix AND (s.path = '' OR starts_with({p}, s.path || '/'))))"


HEAD_CACHE = 100_000  # newest versions kept in memory (this process is the file's only writer)
RECENT_CALLS = 10_000  # syscalls whose versions are remembered, for a call sent again


@dataclass
class _Pending:
    rows: Sequence[tuple[Version, str | None]]
    syscall: str | None
    drop_upload: str | None
    done: asyncio.Future[None]


class Meta:
    """The metadata store. Methods are synchronous and run on the store's own thread through
    `run`; the handlers never touch the connection from the event loop.

    Two things make the hot path cheap without weakening it: the newest version of recently used
    paths is cached (the service is the DuckDB file's one writer, so the cache cannot go stale),
    and new versions are committed in groups (`record`): every caller still returns only after
    its rows are committed, but concurrent writes share one transaction and one WAL sync."""

    def __init__(self, path: Path, *, resend_window_s: float = 3600.0) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="storage-db")
        try:  # (e.g. the file is still locked by another process: no thread is left behind)
            self.con: duckdb.DuckDBPyConnection = self._pool.submit(self._open, path).result()
        except BaseException:
            self._pool.shutdown()
            raise
        self._heads: OrderedDict[tuple[str, str], Version | None] = OrderedDict()
        # Every path that has a version (about 100 bytes each): a write to a new path, the common
        # case, then needs no look-up at all.
        self._paths: set[tuple[str, str]] = set(self._pool.submit(self.all_paths).result())
        # Versions made by recent syscalls, also those of the process before (a call it ran may be
        # sent again after it died): looked up in memory, never in DuckDB on the hot path.
        self._calls: OrderedDict[tuple[str, str], Version] = OrderedDict()
        recent = self._pool.submit(self.recent_calls, time.time() - resend_window_s, RECENT_CALLS).result()
        for syscall, v in recent:
            self._calls.setdefault((syscall, v.author), v)
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    # --- cached and grouped (async) --------------------------------------------------------
    async def newest(self, owner: str, path: str) -> Version | None:
        key = (owner, path)
        if key not in self._paths:  # a new file: nothing to look up
            return None
        if key in self._heads:
            self._heads.move_to_end(key)
            return self._heads[key]
        v = await self.run(lambda: self.head(owner, path))
        self._remember_head(key, v)
        return v

    def _remember_head(self, key: tuple[str, str], v: Version | None) -> None:
        self._heads[key] = v
        self._heads.move_to_end(key)
        while len(self._heads) > HEAD_CACHE:
            self._heads.popitem(last=False)

    def made_by(self, syscall: str, author: str) -> Version | None:
        """The version a syscall of this process made, if it is still remembered."""
        return self._calls.get((syscall, author))

    async def record(
        self,
        rows: Sequence[tuple[Version, str | None]],
        syscall: str | None = None,
        *,
        drop_upload: str | None = None,
    ) -> None:
        """Commit new versions (and forget a finished upload), grouped with concurrent callers;
        returns once committed."""
        item = _Pending(rows, syscall, drop_upload, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await item.done
        for v, _ in rows:
            self._paths.add((v.owner, v.path))
            self._remember_head((v.owner, v.path), v)
        if syscall is not None and rows:
            first = next((v for v, _ in rows if not v.deleted), rows[0][0])
            self._calls[(syscall, first.author)] = first
            while len(self._calls) > RECENT_CALLS:
                self._calls.popitem(last=False)

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            outcomes = await self._commit_batch(batch)
            for item, failure in zip(batch, outcomes, strict=True):
                if item.done.done():
                    continue
                if failure is None:
                    item.done.set_result(None)
                else:
                    item.done.set_exception(failure)

    async def _commit_batch(self, batch: list[_Pending]) -> list[BaseException | None]:
        try:
            await self.run(lambda: self._commit(batch))
        except Exception as exc:
            if len(batch) == 1:
                return [exc]
            # One bad item must not fail the others: each on its own.
            return [await self._commit_one(item) for item in batch]
        return [None] * len(batch)

    async def _commit_one(self, item: _Pending) -> BaseException | None:
        try:
            await self.run(lambda: self._commit([item]))
        except Exception as exc:
            return exc
        return None

    def _commit(self, batch: Sequence[_Pending]) -> None:
        with self._tx():
            self._insert([(v, text, item.syscall) for item in batch for v, text in item.rows])
            drops = [item.drop_upload for item in batch if item.drop_upload is not None]
            if drops:
                self.con.execute("DELETE FROM uploads WHERE list_contains(?, id)", [drops])

    @staticmethod
    def _open(path: Path) -> duckdb.DuckDBPyConnection:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = connect_duckdb(path)
        con.execute(SCHEMA)
        return con

    async def run(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        # A group being committed is on the pool already: it runs before the close.
        self._pool.submit(self.con.close).result()
        self._pool.shutdown()

    # --- reads -----------------------------------------------------------------------------
    def head(self, owner: str, path: str) -> Version | None:
        row = self.con.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE owner = ? AND path = ?"
            " ORDER BY version DESC LIMIT 1",
            [owner, path],
        ).fetchone()
        return _version(row) if row else None

    def version(self, owner: str, path: str, version: int) -> Version | None:
        row = self.con.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE owner = ? AND path = ? AND version = ?",
            [owner, path, version],
        ).fetchone()
        return _version(row) if row else None

    def versions(self, owner: str, path: str, limit: int) -> list[Version]:
        rows = self.con.execute(
            f"SELECT {_VERSION_COLS} FROM versions WHERE owner = ? AND path = ?"
            " ORDER BY version DESC LIMIT ?",
            [owner, path, limit],
        ).fetchall()
        return [_version(r) for r in rows]

    def listing(
        self,
        owner: str,
        prefix: str,
        *,
        grantee: str | None,
        include_deleted: bool,
        after: str | None,
        limit: int,
    ) -> list[Version]:
        """Newest version of each path under `prefix` (a directory; '' all) of `owner`; with
        `grantee`, only paths a grant of `owner` to `grantee` covers."""
        where = ["h.owner = ?"]
        args: list[object] = [owner]
        if prefix:
            where.append("(h.path = ? OR starts_with(h.path, ?))")
            args += [prefix, prefix + "/"]
        if not include_deleted:
            where.append("NOT v.deleted")
        if after is not None:
            where.append("h.path > ?")
            args.append(after)
        if grantee is not None:
            where.append(
                "EXISTS (SELECT 1 FROM shares s WHERE s.owner = h.owner AND s.grantee = ? AND "
                + _COVERS.format(p="h.path")
                + ")"
            )
            args.append(grantee)
        cols = ", ".join("v." + c.strip() for c in _VERSION_COLS.split(","))
        rows = self.con.execute(
            f"SELECT {cols} FROM {_HEADS.format(owners='owner = ?')}"
            f" JOIN versions v USING (owner, path, version) WHERE {' AND '.join(where)}"
            " ORDER BY h.path LIMIT ?",
            [owner, *args, limit],
        ).fetchall()
        return [_version(r) for r in rows]

    def search(
        self, agent: str, owner: str | None, prefix: str, words: list[str], k: int
    ) -> list[tuple[Version, str, float]]:
        """Newest versions of text files `agent` may read (its own, or shared with it) holding
        every word (case-insensitive), best first: (version, text, score)."""
        where = ["NOT v.deleted", "v.text IS NOT NULL"]
        args: list[object] = []
        readable_owners = "owner = ? OR owner IN (SELECT owner FROM shares WHERE grantee = ?)"
        readable = (
            "(h.owner = ? OR EXISTS (SELECT 1 FROM shares s WHERE s.owner = h.owner AND s.grantee = ?"
            " AND " + _COVERS.format(p="h.path") + "))"
        )
        where.append(readable)
        args += [agent, agent]
        if owner is not None:
            where.append("h.owner = ?")
            args.append(owner)
        if prefix:
            where.append("(h.path = ? OR starts_with(h.path, ?))")
            args += [prefix, prefix + "/"]
        score = []
        for w in words:
            where.append("contains(lower(v.text), ?)")
            args.append(w)
        score_args: list[object] = []
        for w in words:  # occurrences of each word, per thousand characters
            score.append("(length(lower(v.text)) - length(replace(lower(v.text), ?, ''))) / ?")
            score_args += [w, len(w)]
        cols = ", ".join("v." + c.strip() for c in _VERSION_COLS.split(","))
        rows = self.con.execute(
            f"SELECT {cols}, v.text, ({' + '.join(score)}) * 1000.0 / (length(v.text) + 1000) AS score"
            f" FROM {_HEADS.format(owners=readable_owners)} JOIN versions v USING (owner, path, version)"
            f" WHERE {' AND '.join(where)} ORDER BY score DESC, h.owner, h.path LIMIT ?",
            [*score_args, agent, agent, *args, k],
        ).fetchall()
        return [(_version(r[:11]), str(r[11]), float(r[12])) for r in rows]

    def semantic(
        self, agent: str, owner: str | None, prefix: str, embedder: str, vec: list[float], k: int
    ) -> list[tuple[Version, str, float, int]]:
        """Newest text versions `agent` may read, closest to `vec` first (best chunk of each):
        (version, text, cosine similarity, start of that chunk)."""
        where = ["NOT v.deleted", "v.text IS NOT NULL"]
        args: list[object] = []
        readable = (
            "(h.owner = ? OR EXISTS (SELECT 1 FROM shares s WHERE s.owner = h.owner AND s.grantee = ?"
            " AND " + _COVERS.format(p="h.path") + "))"
        )
        where.append(readable)
        args += [agent, agent]
        if owner is not None:
            where.append("h.owner = ?")
            args.append(owner)
        if prefix:
            where.append("(h.path = ? OR starts_with(h.path, ?))")
            args += [prefix, prefix + "/"]
        readable_owners = "owner = ? OR owner IN (SELECT owner FROM shares WHERE grantee = ?)"
        cols = ", ".join("v." + c.strip() for c in _VERSION_COLS.split(","))
        rows = self.con.execute(
            f"SELECT {cols}, v.text, max_by(e.start, list_cosine_similarity(e.vec, ?::FLOAT[])),"
            " max(list_cosine_similarity(e.vec, ?::FLOAT[])) AS score"
            f" FROM {_HEADS.format(owners=readable_owners)} JOIN versions v USING (owner, path, version)"
            " JOIN embeddings e ON e.sha256 = v.sha256 AND e.embedder = ?"
            f" WHERE {' AND '.join(where)} GROUP BY ALL ORDER BY score DESC, v.owner, v.path LIMIT ?",
            [vec, vec, agent, agent, embedder, *args, k],
        ).fetchall()
        return [(_version(r[:11]), str(r[11]), float(r[13]), int(r[12])) for r in rows]

    def unembedded(self, embedder: str, limit: int) -> list[str]:
        """Content hashes of newest text versions without vectors of `embedder` yet."""
        rows = self.con.execute(
            f"SELECT DISTINCT v.sha256 FROM {_HEADS.format(owners='true')}"
            " JOIN versions v USING (owner, path, version) WHERE NOT v.deleted AND v.text IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.sha256 = v.sha256 AND e.embedder = ?)"
            " LIMIT ?",
            [embedder, limit],
        ).fetchall()
        return [str(r[0]) for r in rows]

    def text_by_hash(self, sha256: str) -> str | None:
        row = self.con.execute(
            "SELECT text FROM versions WHERE sha256 = ? AND text IS NOT NULL LIMIT 1", [sha256]
        ).fetchone()
        return None if row is None else str(row[0])

    def has_vectors(self, sha256: str, embedder: str) -> bool:
        row = self.con.execute(
            "SELECT 1 FROM embeddings WHERE sha256 = ? AND embedder = ? LIMIT 1", [sha256, embedder]
        ).fetchone()
        return row is not None

    def add_vectors(self, sha256: str, embedder: str, chunks: Sequence[tuple[int, list[float]]]) -> None:
        with self._tx():
            self.con.execute("DELETE FROM embeddings WHERE sha256 = ? AND embedder = ?", [sha256, embedder])
            if chunks:
                one = "(?, ?, ?, ?, ?)"
                args: list[object] = []
                for i, (start, vec) in enumerate(chunks):
                    args += [sha256, embedder, i, start, vec]
                self.con.execute(
                    f"INSERT INTO embeddings (sha256, embedder, chunk, start, vec) VALUES"
                    f" {', '.join([one] * len(chunks))}",
                    args,
                )

    def access(self, owner: str, path: str, grantee: str) -> str | None:
        """The best mode a grant of `owner` gives `grantee` on `path`: 'write', 'read' or None."""
        rows = self.con.execute(
            "SELECT mode FROM shares s WHERE s.owner = ? AND s.grantee = ? AND " + _COVERS.format(p="?"),
            [owner, grantee, path, path],
        ).fetchall()
        modes = {r[0] for r in rows}
        return "write" if "write" in modes else "read" if "read" in modes else None

    def shares(self, *, owner: str | None = None, grantee: str | None = None) -> list[Share]:
        col, val = ("owner", owner) if owner is not None else ("grantee", grantee)
        rows = self.con.execute(
            f"SELECT owner, path, prefix, grantee, mode, created FROM shares WHERE {col} = ?"
            " ORDER BY owner, path, grantee",
            [val],
        ).fetchall()
        return [Share(*r) for r in rows]

    def upload(self, id: str) -> Upload | None:
        row = self.con.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE id = ?",
            [id],
        ).fetchone()
        return Upload(*row) if row else None

    def expired_uploads(self, now: float) -> list[Upload]:
        rows = self.con.execute(
            f"SELECT {_UPLOAD_COLS} FROM uploads WHERE expires < ?",
            [now],
        ).fetchall()
        return [Upload(*r) for r in rows]

    def counts(self) -> tuple[int, int]:
        row = self.con.execute("SELECT count(DISTINCT (owner, path)), count(*) FROM versions").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    # --- writes (each one transaction) -----------------------------------------------------
    def all_paths(self) -> list[tuple[str, str]]:
        return [
            (str(o), str(p))
            for o, p in self.con.execute("SELECT DISTINCT owner, path FROM versions").fetchall()
        ]

    def recent_calls(self, since: float, limit: int) -> list[tuple[str, Version]]:
        """(syscall, the version it made) for the latest `limit` versions made since `since`, oldest
        first; for a move, its destination's version before its source's deletion."""
        rows = self.con.execute(
            f"SELECT syscall, {_VERSION_COLS} FROM versions WHERE syscall IS NOT NULL AND created >= ?"
            " ORDER BY created DESC, deleted DESC LIMIT ?",
            [since, limit],
        ).fetchall()
        return [(str(r[0]), _version(r[1:])) for r in reversed(rows)]

    def add_versions(self, rows: Sequence[tuple[Version, str | None]], syscall: str | None = None) -> None:
        """Record versions (with their extracted text) made by `syscall` and make each its path's
        newest, in one transaction (not grouped: for tools and tests)."""
        with self._tx():
            self._insert([(v, text, syscall) for v, text in rows])
        self._paths.update((v.owner, v.path) for v, _ in rows)

    def _insert(self, rows: Sequence[tuple[Version, str | None, str | None]]) -> None:
        """One statement for all rows (DuckDB pays per statement, not per row)."""
        if not rows:
            return
        one = f"({', '.join('?' * 13)})"
        args: list[object] = []
        for v, text, syscall in rows:
            args += [
                v.owner,
                v.path,
                v.version,
                v.object,
                v.size,
                v.sha256,
                v.author,
                v.created,
                v.deleted,
                v.content_type,
                v.restored_from,
                text,
                syscall,
            ]
        self.con.execute(
            f"INSERT INTO versions ({_VERSION_COLS}, text, syscall) VALUES {', '.join([one] * len(rows))}",
            args,
        )

    def restore(self, rows: Sequence[tuple[Version, str | None]], shares: Sequence[Share]) -> None:
        """Fill an empty store from what S3 holds (rebuild.scan), in one transaction."""
        with self._tx():
            for i in range(0, len(rows), 500):
                self._insert([(v, text, None) for v, text in rows[i : i + 500]])
            for s in shares:
                self.put_share(s)
        self._paths.update((v.owner, v.path) for v, _ in rows)

    def text_of(self, owner: str, path: str, version: int) -> str | None:
        row = self.con.execute(
            "SELECT text FROM versions WHERE owner = ? AND path = ? AND version = ?", [owner, path, version]
        ).fetchone()
        return None if row is None or row[0] is None else str(row[0])

    def put_share(self, s: Share) -> None:
        self.con.execute(
            "INSERT OR REPLACE INTO shares (owner, path, prefix, grantee, mode, created)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [s.owner, s.path, s.prefix, s.grantee, s.mode, s.created],
        )

    def drop_share(self, owner: str, path: str, prefix: bool, grantee: str) -> bool:
        row = self.con.execute(
            "DELETE FROM shares WHERE owner = ? AND path = ? AND prefix = ? AND grantee = ? RETURNING 1",
            [owner, path, prefix, grantee],
        ).fetchall()
        return bool(row)

    def put_upload(self, u: Upload) -> None:
        self.con.execute(
            f"INSERT INTO uploads ({_UPLOAD_COLS}) VALUES ({', '.join('?' * 13)})",
            [getattr(u, f.strip()) for f in _UPLOAD_COLS.split(",")],
        )

    def drop_upload(self, id: str) -> None:
        self.con.execute("DELETE FROM uploads WHERE id = ?", [id])

    def _tx(self) -> _Transaction:
        return _Transaction(self.con)


class _Transaction:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.con.execute("ROLLBACK" if exc_type is not None else "COMMIT")
