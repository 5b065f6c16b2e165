"""The `memory.*` syscalls: one handler per kind, over the working set (RAM, LRU-K per agent) and
the long-term store (DuckDB, S3).

Who: `call.agent` is the authenticated caller; every query is bound to the namespace it may use (its
own; a shared one only through a grant, `Deps.may`), never to anything else the payload says. A
record of another namespace is `not_found`, the same answer as one that never existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import JsonValue

from aios_schemas import AiosError, Syscall
from aios_schemas.memory import (
    MemoryAdd,
    MemoryAddReply,
    MemoryDelete,
    MemoryDeleteReply,
    MemoryEvicted,
    MemoryGet,
    MemoryGetReply,
    MemoryHit,
    MemoryList,
    MemoryListReply,
    MemoryRecord,
    MemoryReply,
    MemorySearch,
    MemorySearchReply,
    MemoryUpdate,
    MemoryUpdateReply,
    Scalar,
)

from .embedders import Embedder, EmbedderError
from .filters import Sql, compile_filter
from .lruk import LruK, Quota
from .store import Blobs, Db, Row, Stale, Version

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
_BACKFILL_BATCH = 256


def owner_only(agent: str, namespace: str) -> bool:
    """Until the access service grants shared namespaces, an agent reaches its own only."""
    return agent == namespace


@dataclass
class Deps:
    db: Db
    blobs: Blobs | None
    embedder: Embedder
    quota: Callable[[str], Quota]  # an agent's working-set quota
    publish: Callable[[MemoryEvicted], Awaitable[None]]  # eviction events
    large_bytes: int = 32 * 1024
    lru_k: int = 2
    may: Callable[[str, str], bool] = owner_only  # may `agent` use `namespace`?


@dataclass
class Counters:
    evicted: int = 0
    eviction_events: int = 0
    backfilled: int = 0
    embed_failures: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def record_size(text: str, metadata: dict[str, Scalar]) -> int:
    return len(text.encode()) + len(json.dumps(metadata))


class MemoryHandlers:
    def __init__(self, deps: Deps) -> None:
        self.d = deps
        self.working: dict[str, LruK[str, MemoryRecord]] = {}
        self.counters = Counters()
        self._complete: set[str] = set()  # namespaces known to have a vector for every version
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self._backfilling: dict[str, asyncio.Lock] = {}

    # --- plumbing ---------------------------------------------------------------------------
    async def handle(self, call: Syscall) -> MemoryReply:
        p = call.payload
        if not isinstance(p, MemoryAdd | MemoryGet | MemoryUpdate | MemoryDelete | MemoryList | MemorySearch):
            raise AiosError("invalid_request", f"the memory service does not run {call.kind}")
        ns = p.namespace or call.agent
        if not self.d.may(call.agent, ns):
            raise AiosError(
                "forbidden",
                f"namespace {ns!r} is not yours; shared namespaces need an access grant",
                details={"namespace": ns},
            )
        self.counters.by_kind[p.kind] = self.counters.by_kind.get(p.kind, 0) + 1
        if isinstance(p, MemoryAdd):
            return await self.add(ns, call.id, p)
        if isinstance(p, MemoryGet):
            return await self.get(ns, p)
        if isinstance(p, MemoryUpdate):
            return await self.update(ns, call.id, p)
        if isinstance(p, MemoryDelete):
            return await self.delete(ns, p)
        if isinstance(p, MemoryList):
            return await self.list_records(ns, p)
        return await self.search(ns, p)

    def details(self) -> dict[str, JsonValue]:
        c = self.counters
        return {
            "embedder": self.d.embedder.name,
            "dim": self.d.embedder.dim,
            "working_namespaces": len(self.working),
            "working_records": sum(len(w) for w in self.working.values()),
            "working_bytes": sum(w.bytes for w in self.working.values()),
            "evicted": c.evicted,
            "eviction_events": c.eviction_events,
            "backfilled_vectors": c.backfilled,
            "embed_failures": c.embed_failures,
            "calls": dict[str, JsonValue](c.by_kind),
        }

    def _ws(self, ns: str) -> LruK[str, MemoryRecord]:
        ws = self.working.get(ns)
        if ws is None:
            ws = self.working[ns] = LruK(self.d.quota(ns), k=self.d.lru_k)
        return ws

    async def _admit(self, ns: str, record: MemoryRecord) -> MemoryRecord:
        """Put the current version of a record in its agent's working set, evicting over quota."""
        ws = self._ws(ns)
        record = record.model_copy(update={"tier": "working"})
        evicted = ws.put(record.id, record, record.size)
        if evicted:
            self.counters.evicted += len(evicted)
            self.counters.eviction_events += 1
            event = MemoryEvicted(
                namespace=ns,
                ids=evicted,
                working_records=len(ws),
                working_bytes=ws.bytes,
                quota_records=ws.quota.records,
                quota_bytes=ws.quota.bytes,
                ts=time.time(),
            )
            try:
                await self.d.publish(event)
            except Exception as exc:  # an event lost must not fail the write that caused it
                log.warning("eviction event for %s not published: %s", ns, exc)
        return record

    async def _admit_current(self, ns: str, record: MemoryRecord) -> MemoryRecord:
        """What a write answers: admitted if it is the current version (a re-run of an old syscall
        answers with what it made then, which later updates may have superseded: not cached)."""
        return await self._admit(ns, record) if record.valid_to is None else self._tier(ns, record)

    def _tier(self, ns: str, record: MemoryRecord) -> MemoryRecord:
        ws = self.working.get(ns)
        resident = ws is not None and record.valid_to is None and record.id in ws
        if resident:
            assert ws is not None
            ws.touch(record.id)
        return record.model_copy(update={"tier": "working" if resident else "long_term"})

    async def _full(self, row: Row) -> MemoryRecord:
        """The record with its whole text (from S3 when it is large)."""
        if row.blob is None:
            return row.record
        if self.d.blobs is None:
            raise AiosError("backend_unavailable", "this record's text is in S3, and no S3 is configured")
        try:
            data = await self.d.blobs.get(row.blob)
        except Exception as exc:
            raise AiosError("backend_unavailable", f"S3 read failed: {type(exc).__name__}") from exc
        return row.record.model_copy(update={"text": data.decode()})

    async def _fulls(self, rows: list[Row]) -> list[MemoryRecord]:
        return list(await asyncio.gather(*(self._full(r) for r in rows)))

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        try:
            return await self.d.embedder.embed(texts)
        except EmbedderError as exc:
            self.counters.embed_failures += 1
            raise AiosError(
                "backend_unavailable", f"embedder {self.d.embedder.name} failed: {exc}", retryable=True
            ) from exc

    async def _version(
        self, ns: str, id_: str, op: str, text: str, metadata: dict[str, Scalar], tags: list[str]
    ) -> Version:
        """What a write stores: the text (or its preview and an S3 key when large) and its vector
        (None if the embedder fails: the record is kept, and its vector made at the next search)."""
        data = text.encode()
        stored, blob = text, None
        if self.d.blobs is not None and len(data) > self.d.large_bytes:
            blob = f"{ns}/{id_}/{op}"
            try:
                await self.d.blobs.put(blob, data)
            except Exception as exc:
                raise AiosError("backend_unavailable", f"S3 write failed: {type(exc).__name__}") from exc
            stored = data[: self.d.large_bytes].decode(errors="ignore")
        vector: list[float] | None = None
        try:
            vector = (await self.d.embedder.embed([text]))[0]
        except EmbedderError as exc:
            self.counters.embed_failures += 1
            self._complete.discard(ns)
            log.warning("embedding %s/%s failed (made at the next search): %s", ns, id_, exc)
        return Version(stored, blob, dict(metadata), list(tags), record_size(text, metadata), vector)

    # --- syscalls ---------------------------------------------------------------------------
    async def add(self, ns: str, op: str, p: MemoryAdd) -> MemoryAddReply:
        v = await self._version(ns, op, op, p.text, p.metadata, p.tags)
        row, _ = await self.d.db.write(self.d.db.add(ns, op, p.session, v, time.time(), op))
        record = row.record.model_copy(update={"text": p.text}) if row.blob else row.record
        return MemoryAddReply(record=await self._admit_current(ns, record))

    async def _current(self, ns: str, id_: str) -> MemoryRecord:
        row = await self.d.db.run(self.d.db.current, ns, id_)
        if row is None:
            raise AiosError("not_found", f"no memory record {id_!r}", details={"id": id_})
        return await self._full(row)

    async def get(self, ns: str, p: MemoryGet) -> MemoryGetReply:
        record = self._ws(ns).get(p.id)
        if record is None:
            record = await self._admit(ns, await self._current(ns, p.id))
        history: list[MemoryRecord] = []
        if p.history:
            rows = await self.d.db.run(self.d.db.history, ns, p.id)
            history = [r.model_copy(update={"tier": "long_term"}) for r in await self._fulls(rows)]
        return MemoryGetReply(record=record, history=history)

    @contextlib.asynccontextmanager
    async def _record_lock(self, ns: str, id_: str) -> AsyncIterator[None]:
        """Updates of one record one at a time (read the current version, then supersede it); the
        store's version check stays as the guard. One process owns the DuckDB file."""
        key = (ns, id_)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def update(self, ns: str, op: str, p: MemoryUpdate) -> MemoryUpdateReply:
        async with self._record_lock(ns, p.id):
            return await self._update(ns, op, p)

    async def _update(self, ns: str, op: str, p: MemoryUpdate) -> MemoryUpdateReply:
        for _ in range(8):  # another update of the same record may land in between: try again
            cur_row = await self.d.db.run(self.d.db.current, ns, p.id)
            if cur_row is None:
                raise AiosError("not_found", f"no memory record {p.id!r}", details={"id": p.id})
            cur = cur_row.record
            metadata = cur.metadata if p.metadata is None else p.metadata
            tags = cur.tags if p.tags is None else p.tags
            if p.text is not None:
                v = await self._version(ns, p.id, op, p.text, metadata, tags)
                full_text = p.text
            else:  # same text: same stored value, same S3 object, its vector copied
                full_text = (await self._full(cur_row)).text
                v = Version(
                    cur.text, cur_row.blob, dict(metadata), list(tags), record_size(full_text, metadata), None
                )
            try:
                new, old = await self.d.db.write(
                    self.d.db.supersede(ns, p.id, v, time.time(), op, cur.version, p.text is None)
                )
            except Stale:
                continue
            record = new.record.model_copy(update={"text": full_text}) if new.blob else new.record
            superseded = await self._full(old)
            return MemoryUpdateReply(
                record=await self._admit_current(ns, record),
                superseded=superseded.model_copy(update={"tier": "long_term"}),
            )
        raise AiosError("conflict", f"memory record {p.id!r} kept changing; try again", retryable=True)

    async def delete(self, ns: str, p: MemoryDelete) -> MemoryDeleteReply:
        versions, blobs = await self.d.db.write(self.d.db.delete(ns, p.id))
        self._ws(ns).forget(p.id)
        if blobs and self.d.blobs is not None:
            try:
                await self.d.blobs.delete(sorted(set(blobs)))
            except Exception as exc:  # the record is gone; an orphan object is only space
                log.warning("S3 objects of deleted %s/%s not removed: %s", ns, p.id, exc)
        return MemoryDeleteReply(id=p.id, versions=versions)

    async def list_records(self, ns: str, p: MemoryList) -> MemoryListReply:
        cond = compile_filter(p.filter) if p.filter is not None else None
        rows = await self.d.db.run(
            self.d.db.list_rows, ns, p.session, cond, p.as_of, p.history, p.limit, p.offset
        )
        records = [self._tier(ns, r) for r in await self._fulls(rows)]
        more = len(records) == p.limit
        return MemoryListReply(records=records, next_offset=p.offset + len(records) if more else None)

    async def search(self, ns: str, p: MemorySearch) -> MemorySearchReply:
        cond: Sql | None = compile_filter(p.filter) if p.filter is not None else None
        db = self.d.db
        if p.mode == "keyword":
            words = list(dict.fromkeys(w.lower() for w in _WORD.findall(p.query)))[:32]
            if not words:
                raise AiosError("invalid_request", "a keyword search needs at least one word")
            found = await db.run(db.keyword, ns, p.session, cond, p.as_of, words, p.k)
            embedder = None
        else:
            await self._backfill(ns)
            query = (await self._embed([p.query]))[0]
            found = await db.run(db.semantic, ns, p.session, cond, p.as_of, query, p.k)
            embedder = self.d.embedder.name
        found = [(row, score) for row, score in found if p.min_score is None or score >= p.min_score]
        records = await self._fulls([row for row, _ in found])
        hits = [
            MemoryHit(record=self._tier(ns, r), score=s) for r, (_, s) in zip(records, found, strict=True)
        ]
        return MemorySearchReply(hits=hits, mode=p.mode, embedder=embedder)

    async def _backfill(self, ns: str) -> None:
        """Vectors for every version of `ns` in the configured embedder's space: records written
        under another embedder (or while it failed) are embedded again now, never compared across
        spaces."""
        if ns in self._complete:
            return
        async with self._backfilling.setdefault(ns, asyncio.Lock()):  # one backfill per namespace
            await self._backfill_now(ns)

    async def _backfill_now(self, ns: str) -> None:
        if ns in self._complete:
            return
        db = self.d.db
        while rows := await db.run(db.missing_vectors, ns, _BACKFILL_BATCH):
            texts = [r.text for r in await self._fulls(rows)]
            vectors = await self._embed(texts)
            await db.write(
                db.put_vectors(
                    [(ns, r.record.id, r.record.version, v) for r, v in zip(rows, vectors, strict=True)]
                )
            )
            self.counters.backfilled += len(rows)
        self._complete.add(ns)
