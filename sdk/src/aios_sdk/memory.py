"""`aios.memory`: the agent's memory (the memory service), typed.

```python
rec = (await aios.memory.add("Alice prefers tea", metadata={"person": "alice"}, tags=["prefs"])).record
await aios.memory.update(rec.id, text="Alice prefers coffee")  # the tea version is kept, superseded
hits = await aios.memory.search("what does alice drink", filter=where.eq("metadata.person", "alice"))
old = await aios.memory.get(rec.id, history=True)             # .history: earlier versions
```
Filters are trees: `where.and_(where.eq("tags", "prefs"), where.range("created", gte=t0))`, or the same
as plain dicts (`{"op": "eq", "field": "metadata.person", "value": "alice"}`). A record's id is the
id of the `memory.add` syscall that made it.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from aios_schemas.memory import (
    And,
    Compare,
    Exists,
    Filter,
    In,
    MemoryAdd,
    MemoryAddReply,
    MemoryDelete,
    MemoryDeleteReply,
    MemoryGet,
    MemoryGetReply,
    MemoryList,
    MemoryListReply,
    MemorySearch,
    MemorySearchReply,
    MemoryUpdate,
    MemoryUpdateReply,
    Not,
    Or,
    Range,
    Scalar,
)
from aios_schemas.wire import validation_error

from .errors import typed

if TYPE_CHECKING:
    from .client import AIOS

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
FilterArg = Filter | Mapping[str, object]


def _payload(cls: type[P], **fields: object) -> P:
    """Validated here, so a bad argument fails at the call with InvalidRequest, not in the kernel."""
    try:
        return cls.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise typed(validation_error(exc, f"{cls.model_fields['kind'].default} payload")) from exc


def _filter(f: FilterArg | None) -> object:
    return f.model_dump() if isinstance(f, BaseModel) else f


class where:  # lower case: it reads as a namespace of constructors, where.eq(...)
    """Filter constructors."""

    @staticmethod
    def eq(field: str, value: Scalar) -> Compare:
        return Compare(op="eq", field=field, value=value)

    @staticmethod
    def ne(field: str, value: Scalar) -> Compare:
        return Compare(op="ne", field=field, value=value)

    @staticmethod
    def cmp(op: Literal["eq", "ne", "lt", "lte", "gt", "gte"], field: str, value: Scalar) -> Compare:
        return Compare(op=op, field=field, value=value)

    @staticmethod
    def in_(field: str, values: Sequence[Scalar]) -> In:
        return In(op="in", field=field, values=list(values))

    @staticmethod
    def nin(field: str, values: Sequence[Scalar]) -> In:
        return In(op="nin", field=field, values=list(values))

    @staticmethod
    def range(
        field: str,
        *,
        gt: float | None = None,
        gte: float | None = None,
        lt: float | None = None,
        lte: float | None = None,
    ) -> Range:
        return Range(op="range", field=field, gt=gt, gte=gte, lt=lt, lte=lte)

    @staticmethod
    def exists(field: str) -> Exists:
        return Exists(op="exists", field=field)

    @staticmethod
    def and_(*args: Filter) -> And:
        return And(op="and", args=builtins.list(args))

    @staticmethod
    def or_(*args: Filter) -> Or:
        return Or(op="or", args=builtins.list(args))

    @staticmethod
    def not_(arg: Filter) -> Not:
        return Not(op="not", arg=arg)


class MemoryApi:
    """Your memory records: add, get, update (supersedes), delete, list, search."""

    def __init__(self, client: AIOS) -> None:
        self._c = client

    async def _call(self, payload: BaseModel, reply: type[R], timeout: float | None) -> R:
        result = await self._c.syscall(payload, timeout=timeout)  # type: ignore[arg-type]
        assert isinstance(result, reply)
        return result

    async def add(
        self,
        text: str,
        *,
        metadata: Mapping[str, Scalar] | None = None,
        tags: Sequence[str] | None = None,
        session: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> MemoryAddReply:
        """Remember `text`; `session` scopes the record to a session/run of yours."""
        p = _payload(
            MemoryAdd,
            text=text,
            metadata=dict(metadata) if metadata is not None else None,
            tags=builtins.list(tags) if tags is not None else None,
            session=session,
            namespace=namespace,
        )
        return await self._call(p, MemoryAddReply, timeout)

    async def get(
        self, id: str, *, history: bool = False, namespace: str | None = None, timeout: float | None = None
    ) -> MemoryGetReply:
        """A record's current version (and its superseded ones, newest first, with `history`)."""
        p = _payload(MemoryGet, id=id, history=history, namespace=namespace)
        return await self._call(p, MemoryGetReply, timeout)

    async def update(
        self,
        id: str,
        *,
        text: str | None = None,
        metadata: Mapping[str, Scalar] | None = None,
        tags: Sequence[str] | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> MemoryUpdateReply:
        """A new version; the old one is kept, valid until now. Fields left out keep their value."""
        p = _payload(
            MemoryUpdate,
            id=id,
            text=text,
            metadata=dict(metadata) if metadata is not None else None,
            tags=builtins.list(tags) if tags is not None else None,
            namespace=namespace,
        )
        return await self._call(p, MemoryUpdateReply, timeout)

    async def delete(
        self, id: str, *, namespace: str | None = None, timeout: float | None = None
    ) -> MemoryDeleteReply:
        """Forget a record, every version of it."""
        p = _payload(MemoryDelete, id=id, namespace=namespace)
        return await self._call(p, MemoryDeleteReply, timeout)

    async def list(
        self,
        *,
        filter: FilterArg | None = None,
        session: str | None = None,
        as_of: float | None = None,
        history: bool = False,
        limit: int = 100,
        offset: int = 0,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> MemoryListReply:
        """Records, newest first; `next_offset` pages on."""
        p = _payload(
            MemoryList,
            filter=_filter(filter),
            session=session,
            as_of=as_of,
            history=history,
            limit=limit,
            offset=offset,
            namespace=namespace,
        )
        return await self._call(p, MemoryListReply, timeout)

    async def search(
        self,
        query: str,
        *,
        k: int = 10,
        mode: Literal["semantic", "keyword"] = "semantic",
        filter: FilterArg | None = None,
        session: str | None = None,
        as_of: float | None = None,
        min_score: float | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> MemorySearchReply:
        """The `k` best records for `query` (semantic: cosine similarity of embeddings; keyword: the
        share of the query's words a record contains), filtered, with their scores."""
        p = _payload(
            MemorySearch,
            query=query,
            k=k,
            mode=mode,
            filter=_filter(filter),
            session=session,
            as_of=as_of,
            min_score=min_score,
            namespace=namespace,
        )
        return await self._call(p, MemorySearchReply, timeout)
