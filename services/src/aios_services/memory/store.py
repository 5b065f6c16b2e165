"""The long-term store: one DuckDB file (records, versions, vectors) and an S3 bucket (large values).

All DuckDB work runs on one thread (`Db.run`); writes are transactions committed before the syscall
is answered, concurrent ones grouped into one commit (`Db.write`). Versions: a record is its rows
with the same (namespace, id); the current one has `valid_to` NULL; an update closes it (`valid_to`
= now) and inserts the next. Vectors live in one table per embedding space
(`vec_<embedder>_<dim>_<hash>`, FLOAT[dim]), so vectors of two embedders never meet in one
comparison.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import duckdb
import urllib3
from minio import Minio
from minio.error import S3Error

from aios_schemas import AiosError
from aios_schemas.memory import MemoryRecord, Scalar

from ..runtime.storage import connect_duckdb
from .filters import Sql

T = TypeVar("T")
Tx = Callable[[duckdb.DuckDBPyConnection], T]  # the body of a write transaction (see Db.write)

_COLS = (
    "m.namespace, m.id, m.version, m.session, m.text, m.blob, m.metadata, m.tags,"
    " m.created, m.updated, m.valid_to, m.size"
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS memories (
    namespace VARCHAR NOT NULL,
    id VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    session VARCHAR,
    text VARCHAR NOT NULL,      -- the text; for a value in S3, its first bytes (keyword search)
    blob VARCHAR,               -- S3 key of the whole value when it is large
    metadata VARCHAR NOT NULL,  -- a JSON object of scalars
    tags VARCHAR[] NOT NULL,
    created DOUBLE NOT NULL,
    updated DOUBLE NOT NULL,    -- this version is valid from then...
    valid_to DOUBLE,            -- ...until then (NULL: current)
    size BIGINT NOT NULL,
    op VARCHAR NOT NULL         -- the syscall that wrote this version (a re-run finds it)
);
CREATE INDEX IF NOT EXISTS memories_key ON memories (namespace, id);
CREATE TABLE IF NOT EXISTS spaces (
    name VARCHAR NOT NULL, embedder VARCHAR NOT NULL, dim INTEGER NOT NULL, created DOUBLE NOT NULL
);
"""


# The JSON shapes `Db._add_many` passes its rows in (`from_json` unpacks them).
_KEY_TYPE = json.dumps([{"ns": "VARCHAR", "id": "VARCHAR"}])
_ROW_TYPE = json.dumps(
    [
        {
            "ns": "VARCHAR",
            "id": "VARCHAR",
            "session": "VARCHAR",
            "text": "VARCHAR",
            "blob": "VARCHAR",
            "metadata": "VARCHAR",
            "tags": ["VARCHAR"],
            "created": "DOUBLE",
            "updated": "DOUBLE",
            "size": "BIGINT",
            "op": "VARCHAR",
        }
    ]
)
_VEC_TYPE = json.dumps([{"ns": "VARCHAR", "id": "VARCHAR", "vec": ["FLOAT"]}])


class Stale(Exception):
    """The record changed between reading it and superseding it."""


@dataclass(frozen=True)
class Row:
    record: MemoryRecord  # text is the preview when `blob` is set
    blob: str | None


@dataclass(frozen=True)
class Space:
    """Where the vectors of one embedder live."""

    embedder: str
    dim: int

    @property
    def table(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "_", self.embedder.lower())[:40]
        digest = hashlib.sha256(f"{self.embedder}\0{self.dim}".encode()).hexdigest()[:8]
        return f"vec_{slug}_{self.dim}_{digest}"


def _row(t: tuple[object, ...]) -> Row:
    ns, id_, version, session, text, blob, meta, tags, created, updated, valid_to, size = t
    record = MemoryRecord(
        id=str(id_),
        version=int(version),  # type: ignore[call-overload]
        namespace=str(ns),
        session=None if session is None else str(session),
        text=str(text),
        metadata=json.loads(str(meta)),
        tags=list(tags),  # type: ignore[call-overload]
        created=float(created),  # type: ignore[arg-type]
        updated=float(updated),  # type: ignore[arg-type]
        valid_to=None if valid_to is None else float(valid_to),  # type: ignore[arg-type]
        size=int(size),  # type: ignore[call-overload]
    )
    return Row(record, None if blob is None else str(blob))


def _made(
    ns: str, id_: str, version: int, session: str | None, v: Version, created: float, now: float
) -> Row:
    """The row an insert of `v` makes."""
    record = MemoryRecord(
        id=id_,
        version=version,
        namespace=ns,
        session=session,
        text=v.text,
        metadata=v.metadata,
        tags=v.tags,
        created=created,
        updated=now,
        size=v.size,
    )
    return Row(record, v.blob)


def _vec(v: Sequence[float]) -> str:
    """A vector as a parameter: its JSON text, cast to FLOAT[dim] by DuckDB. (Binding a Python list
    of floats costs ~20 ms in duckdb 1.5's Python client; this ~0.5 ms.)"""
    return json.dumps([float(x) for x in v])


def _validity(as_of: float | None, history: bool = False) -> Sql:
    if history:
        return Sql("TRUE")
    if as_of is None:
        return Sql("m.valid_to IS NULL")
    return Sql("(m.updated <= ? AND (m.valid_to IS NULL OR m.valid_to > ?))", [as_of, as_of])


@dataclass(frozen=True)
class Version:
    """What a write stores (the text already split into preview and S3 key when large)."""

    text: str
    blob: str | None
    metadata: dict[str, Scalar]
    tags: list[str]
    size: int
    vector: list[float] | None


@dataclass(frozen=True)
class AddTx:
    """The body of an add (a new record's version 1): run alone, or beside the other adds of its
    commit in `Db._add_many`."""

    db: Db
    ns: str
    id: str
    session: str | None
    v: Version
    now: float
    op: str

    def __call__(self, c: duckdb.DuckDBPyConnection) -> tuple[Row, bool]:
        t = c.execute(
            f"SELECT {_COLS} FROM memories m WHERE m.namespace = ? AND m.id = ? ORDER BY m.version LIMIT 1",
            [self.ns, self.id],
        ).fetchone()
        if t is not None:
            return _row(t), False
        return self.db._insert(
            c, self.ns, self.id, 1, self.session, self.v, self.now, self.now, self.op
        ), True

    def row(self) -> Row:
        """What the insert makes."""
        return _made(self.ns, self.id, 1, self.session, self.v, self.now, self.now)


class Db:
    """The DuckDB file, used from one thread."""

    def __init__(self, path: Path, space: Space) -> None:
        self.path = path
        self.space = space
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-duckdb")
        self.con: duckdb.DuckDBPyConnection | None = None
        self._pending: list[tuple[Tx[object], asyncio.Future[object]]] = []
        self._flushing = False
        self._flusher: asyncio.Future[None] | None = None

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = connect_duckdb(self.path)
        con.execute(_SCHEMA)
        sp = self.space
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {sp.table} (namespace VARCHAR NOT NULL, id VARCHAR NOT NULL,"
            f" version INTEGER NOT NULL, vec FLOAT[{int(sp.dim)}] NOT NULL)"
        )
        known = con.execute("SELECT 1 FROM spaces WHERE name = ?", [sp.table]).fetchone()
        if known is None:
            con.execute("INSERT INTO spaces VALUES (?, ?, ?, epoch(now()))", [sp.table, sp.embedder, sp.dim])
        self.con = con

    def _close(self) -> None:
        if self.con is not None:
            self.con.execute("CHECKPOINT")
            self.con.close()
            self.con = None

    async def aclose(self) -> None:
        await self.run(self._close)
        self._pool.shutdown(wait=False)

    @property
    def _vec_param(self) -> str:
        return f"CAST(?::VARCHAR AS FLOAT[{int(self.space.dim)}])"

    @property
    def c(self) -> duckdb.DuckDBPyConnection:
        if self.con is None:
            raise AiosError("backend_unavailable", "the memory store is closed")
        return self.con

    async def write(self, tx: Tx[T]) -> T:
        """Run a write transaction body, committed before this returns. Group commit: bodies that
        arrive while a commit is under way run together in the next transaction, so concurrent
        writers share one WAL sync instead of queueing for one each. A body that raises AiosError
        or Stale has written nothing (each checks before it writes), so the others still commit."""
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.append((tx, fut))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.ensure_future(self._flush())
        return await fut  # type: ignore[return-value]

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    outcomes = await self.run(self._commit, [tx for tx, _ in batch])
                except BaseException as exc:  # the store is gone: every caller hears it
                    outcomes = [(False, exc)] * len(batch)
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    if not fut.done():
                        fut.set_result(value) if ok else fut.set_exception(value)  # type: ignore[arg-type]
        finally:
            self._flushing = False

    def _commit(self, txs: list[Tx[object]]) -> list[tuple[bool, object]]:
        c = self.c
        c.execute("BEGIN TRANSACTION")
        outcomes: list[tuple[bool, object]] = []
        try:
            i = 0
            while i < len(txs):
                j = i
                while j < len(txs) and isinstance(txs[j], AddTx):
                    j += 1
                if j - i > 1:  # new records side by side: three statements for all of them
                    outcomes += self._add_many(c, txs[i:j])  # type: ignore[arg-type]
                    i = j
                    continue
                try:
                    outcomes.append((True, txs[i](c)))
                except (AiosError, Stale) as exc:
                    outcomes.append((False, exc))
                i += 1
        except Exception:  # a database error: none of the batch stands; each alone in its own
            c.execute("ROLLBACK")
            return [self._alone(tx) for tx in txs] if len(txs) > 1 else [(False, sys.exc_info()[1])]
        c.execute("COMMIT")
        return outcomes

    def _alone(self, tx: Tx[object]) -> tuple[bool, object]:
        try:
            return self._commit([tx])[0]
        except Exception as exc:
            return (False, exc)

    # --- reads ------------------------------------------------------------------------------
    def current(self, ns: str, id_: str) -> Row | None:
        t = self.c.execute(
            f"SELECT {_COLS} FROM memories m WHERE m.namespace = ? AND m.id = ? AND m.valid_to IS NULL",
            [ns, id_],
        ).fetchone()
        return None if t is None else _row(t)

    def history(self, ns: str, id_: str) -> list[Row]:
        rows = self.c.execute(
            f"SELECT {_COLS} FROM memories m WHERE m.namespace = ? AND m.id = ? AND m.valid_to IS NOT NULL"
            " ORDER BY m.version DESC",
            [ns, id_],
        ).fetchall()
        return [_row(t) for t in rows]

    def _where(self, ns: str, session: str | None, cond: Sql | None, validity: Sql) -> Sql:
        parts = ["m.namespace = ?", validity.text]
        params: list[object] = [ns, *validity.params]
        if session is not None:
            parts.append("m.session = ?")
            params.append(session)
        if cond is not None:
            parts.append(cond.text)
            params += cond.params
        return Sql(" AND ".join(parts), params)

    def list_rows(
        self,
        ns: str,
        session: str | None,
        cond: Sql | None,
        as_of: float | None,
        history: bool,
        limit: int,
        offset: int,
    ) -> list[Row]:
        w = self._where(ns, session, cond, _validity(as_of, history))
        rows = self.c.execute(
            f"SELECT {_COLS} FROM memories m WHERE {w.text}"
            " ORDER BY m.updated DESC, m.id DESC, m.version DESC LIMIT ? OFFSET ?",
            [*w.params, limit, offset],
        ).fetchall()
        return [_row(t) for t in rows]

    def keyword(
        self,
        ns: str,
        session: str | None,
        cond: Sql | None,
        as_of: float | None,
        words: Sequence[str],
        k: int,
    ) -> list[tuple[Row, float]]:
        """Records by the share of the query's words they contain (whole words, any case)."""
        w = self._where(ns, session, cond, _validity(as_of))
        # Words are \w+ tokens (letters, digits, _): nothing in them means anything to RE2.
        hits = " + ".join("CAST(regexp_matches(m.text, ?, 'i') AS INTEGER)" for _ in words)
        patterns = [rf"\b{word}\b" for word in words]
        rows = self.c.execute(
            f"SELECT * FROM (SELECT {_COLS}, ({hits}) / {len(words)}.0 AS score FROM memories m"
            f" WHERE {w.text}) WHERE score > 0 ORDER BY score DESC, updated DESC LIMIT ?",
            [*patterns, *w.params, k],
        ).fetchall()
        return [(_row(t[:-1]), float(t[-1])) for t in rows]

    def semantic(
        self, ns: str, session: str | None, cond: Sql | None, as_of: float | None, query: list[float], k: int
    ) -> list[tuple[Row, float]]:
        w = self._where(ns, session, cond, _validity(as_of))
        dim = int(self.space.dim)
        # The namespace's vectors scored first, then joined to the records that pass the filters:
        # half the time of scoring after the join (DuckDB 1.5 plans that join worse), same rows.
        rows = self.c.execute(
            "WITH s AS (SELECT v.id, v.version,"
            f" array_cosine_similarity(v.vec, CAST(?::VARCHAR AS FLOAT[{dim}])) AS score"
            f" FROM {self.space.table} v WHERE v.namespace = ?)"
            f" SELECT {_COLS}, s.score FROM s JOIN memories m ON m.namespace = ? AND m.id = s.id"
            f" AND m.version = s.version WHERE {w.text} ORDER BY s.score DESC, m.updated DESC LIMIT ?",
            [_vec(query), ns, ns, *w.params, k],
        ).fetchall()
        return [(_row(t[:-1]), float(t[-1])) for t in rows]

    def missing_vectors(self, ns: str, limit: int) -> list[Row]:
        """Versions of `ns` with no vector in the current space (written while another embedder was
        configured, or while the embedder failed)."""
        rows = self.c.execute(
            f"SELECT {_COLS} FROM memories m ANTI JOIN {self.space.table} v"
            " ON v.namespace = m.namespace AND v.id = m.id AND v.version = m.version"
            " WHERE m.namespace = ? LIMIT ?",
            [ns, limit],
        ).fetchall()
        return [_row(t) for t in rows]

    def put_vectors(self, rows: Sequence[tuple[str, str, int, list[float]]]) -> Tx[None]:
        table = self.space.table

        def tx(c: duckdb.DuckDBPyConnection) -> None:
            # A vector is stored once (two backfills may race) and only for a version that still
            # exists (it may have been deleted while it was being embedded).
            c.executemany(
                f"INSERT INTO {table} SELECT ?, ?, ?, {self._vec_param} WHERE NOT EXISTS"
                f" (SELECT 1 FROM {table} WHERE namespace = ? AND id = ? AND version = ?) AND EXISTS"
                " (SELECT 1 FROM memories WHERE namespace = ? AND id = ? AND version = ?)",
                [(ns, id_, ver, _vec(v), ns, id_, ver, ns, id_, ver) for ns, id_, ver, v in rows],
            )

        return tx

    def stats(self) -> dict[str, int]:
        t = self.c.execute(
            "SELECT count(*), count(DISTINCT namespace), coalesce(sum(size), 0) FROM memories"
            " WHERE valid_to IS NULL"
        ).fetchone()
        assert t is not None
        return {"records": int(t[0]), "namespaces": int(t[1]), "bytes": int(t[2])}

    # --- writes -----------------------------------------------------------------------------
    def add(self, ns: str, id_: str, session: str | None, v: Version, now: float, op: str) -> AddTx:
        """Insert version 1; if the record exists already (a re-run of the same add), return it and
        False."""
        return AddTx(self, ns, id_, session, v, now, op)

    def _add_many(self, c: duckdb.DuckDBPyConnection, adds: Sequence[AddTx]) -> list[tuple[bool, object]]:
        """Adds committed together, as one look-up and one insert per table instead of three
        statements each (a statement costs ~0.5 ms in DuckDB, whatever its rows): the rows go in as
        one JSON parameter, unpacked by `from_json` (as the recorder does)."""
        keys = json.dumps([{"ns": a.ns, "id": a.id} for a in adds])
        found: dict[tuple[str, str], Row] = {}
        for t in c.execute(
            f"SELECT {_COLS} FROM memories m JOIN (SELECT unnest(from_json(?::JSON, '{_KEY_TYPE}')) AS k)"
            " ON m.namespace = k.ns AND m.id = k.id ORDER BY m.version DESC",
            [keys],
        ).fetchall():
            row = _row(t)
            found[(row.record.namespace, row.record.id)] = row  # the lowest version last: it stays
        fresh: list[AddTx] = []
        outcomes: list[tuple[bool, object]] = []
        made: dict[tuple[str, str], Row] = {}
        for a in adds:
            key = (a.ns, a.id)
            if key in found:
                outcomes.append((True, (found[key], False)))
            elif key in made:  # the same add twice in one commit (a re-run beside the first)
                outcomes.append((True, (made[key], False)))
            else:
                made[key] = a.row()
                fresh.append(a)
                outcomes.append((True, (made[key], True)))
        if fresh:
            rows = [
                {
                    "ns": a.ns,
                    "id": a.id,
                    "session": a.session,
                    "text": a.v.text,
                    "blob": a.v.blob,
                    "metadata": json.dumps(a.v.metadata),
                    "tags": a.v.tags,
                    "created": a.now,
                    "updated": a.now,
                    "size": a.v.size,
                    "op": a.op,
                }
                for a in fresh
            ]
            c.execute(
                "INSERT INTO memories SELECT r.ns, r.id, 1, r.session, r.text, r.blob, r.metadata, r.tags,"
                " r.created, r.updated, NULL, r.size, r.op"
                f" FROM (SELECT unnest(from_json(?::JSON, '{_ROW_TYPE}')) AS r)",
                [json.dumps(rows)],
            )
            vectors = [{"ns": a.ns, "id": a.id, "vec": a.v.vector} for a in fresh if a.v.vector is not None]
            if vectors:
                c.execute(
                    f"INSERT INTO {self.space.table} SELECT r.ns, r.id, 1,"
                    f" CAST(r.vec AS FLOAT[{int(self.space.dim)}])"
                    f" FROM (SELECT unnest(from_json(?::JSON, '{_VEC_TYPE}')) AS r)",
                    [json.dumps(vectors)],
                )
        return outcomes

    def _insert(
        self,
        c: duckdb.DuckDBPyConnection,
        ns: str,
        id_: str,
        version: int,
        session: str | None,
        v: Version,
        created: float,
        now: float,
        op: str,
    ) -> Row:
        c.execute(
            "INSERT INTO memories VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
            [
                ns,
                id_,
                version,
                session,
                v.text,
                v.blob,
                json.dumps(v.metadata),
                v.tags,
                created,
                now,
                v.size,
                op,
            ],
        )
        if v.vector is not None:
            c.execute(
                f"INSERT INTO {self.space.table} VALUES (?, ?, ?, {self._vec_param})",
                [ns, id_, version, _vec(v.vector)],
            )
        return _made(ns, id_, version, session, v, created, now)

    def supersede(
        self, ns: str, id_: str, v: Version, now: float, op: str, expect: int, copy_vector: bool
    ) -> Tx[tuple[Row, Row]]:
        """Close version `expect` (the current one) at `now` and insert the next; a re-run of the
        same update (`op`) returns what it did the first time. Stale if the record changed since the
        caller read version `expect`; not_found if it is gone. With `copy_vector` the new version
        keeps the old one's vector (same text)."""

        def tx(c: duckdb.DuckDBPyConnection) -> tuple[Row, Row]:
            done = c.execute(
                f"SELECT {_COLS} FROM memories m WHERE m.namespace = ? AND m.id = ? AND m.op = ?",
                [ns, id_, op],
            ).fetchone()
            if done is not None and _row(done).record.version > 1:
                new = _row(done)
                old = c.execute(
                    f"SELECT {_COLS} FROM memories m WHERE m.namespace = ? AND m.id = ? AND m.version = ?",
                    [ns, id_, new.record.version - 1],
                ).fetchone()
                assert old is not None
                return new, _row(old)
            cur = self.current(ns, id_)
            if cur is None:
                raise AiosError("not_found", f"no memory record {id_!r}", details={"id": id_})
            if cur.record.version != expect:
                raise Stale(id_)
            at = max(now, cur.record.updated + 1e-6)
            c.execute(
                "UPDATE memories SET valid_to = ? WHERE namespace = ? AND id = ? AND version = ?",
                [at, ns, id_, expect],
            )
            new_row = self._insert(c, ns, id_, expect + 1, cur.record.session, v, cur.record.created, at, op)
            if copy_vector:
                c.execute(
                    f"INSERT INTO {self.space.table} SELECT namespace, id, ?, vec FROM {self.space.table}"
                    " WHERE namespace = ? AND id = ? AND version = ?",
                    [expect + 1, ns, id_, expect],
                )
            return new_row, Row(cur.record.model_copy(update={"valid_to": at}), cur.blob)

        return tx

    def delete(self, ns: str, id_: str) -> Tx[tuple[int, list[str]]]:
        """Remove every version; returns how many and the S3 keys to remove after the commit."""

        def tx(c: duckdb.DuckDBPyConnection) -> tuple[int, list[str]]:
            rows = c.execute("SELECT blob FROM memories WHERE namespace = ? AND id = ?", [ns, id_]).fetchall()
            if not rows:
                raise AiosError("not_found", f"no memory record {id_!r}")
            c.execute("DELETE FROM memories WHERE namespace = ? AND id = ?", [ns, id_])
            c.execute(f"DELETE FROM {self.space.table} WHERE namespace = ? AND id = ?", [ns, id_])
            for (table,) in c.execute(
                "SELECT name FROM spaces WHERE name <> ?", [self.space.table]
            ).fetchall():
                if re.fullmatch(r"vec_[a-z0-9_]+", str(table)):  # our own names; never a caller's
                    c.execute(f"DELETE FROM {table} WHERE namespace = ? AND id = ?", [ns, id_])
            return len(rows), [str(b) for (b,) in rows if b is not None]

        return tx


class Blobs:
    """Large values in S3 (bucket `aios-memory`), through the minio SDK, off the event loop. An object
    store that is down fails the calls that need it (backend_unavailable) within seconds, not the
    service: small values never touch it."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, bucket: str) -> None:
        url = urlparse(endpoint)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=2.0, read=30.0),
            retries=urllib3.Retry(total=2, backoff_factor=0.1, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        self.client = Minio(
            url.netloc,
            access_key=access_key,
            secret_key=secret_key,
            secure=url.scheme == "https",
            http_client=http,
        )
        self.bucket = bucket
        self._bucket_ok = False

    async def ensure_bucket(self) -> None:
        def ensure() -> None:
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:  # another replica made it meanwhile
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise

        if not self._bucket_ok:
            await asyncio.to_thread(ensure)
            self._bucket_ok = True

    async def put(self, key: str, data: bytes) -> None:
        await self.ensure_bucket()
        await asyncio.to_thread(
            self.client.put_object, self.bucket, key, io.BytesIO(data), len(data), "text/plain; charset=utf-8"
        )

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            resp = self.client.get_object(self.bucket, key)
            try:
                return resp.read()
            finally:
                resp.close()
                resp.release_conn()

        return await asyncio.to_thread(read)

    async def delete(self, keys: Sequence[str]) -> None:
        def remove() -> None:
            for key in keys:
                self.client.remove_object(self.bucket, key)

        await asyncio.to_thread(remove)
