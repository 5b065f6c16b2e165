"""`memory.*` payloads: an agent's memory records, versioned facts, and the filter language of
`list` and `search` (a typed tree the memory service compiles to parameterised SQL)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)

# Record ids are syscall-id shaped (the id of the `memory.add` that made the record).
RECORD_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{7,63}$"
SCOPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# A metadata key: checked here and again where a filter is compiled (it becomes a JSON path).
META_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
# What a filter may name: record attributes, or `metadata.<key>`.
FIELD_PATTERN = r"^(created|updated|session|tags|metadata\.[A-Za-z_][A-Za-z0-9_]{0,63})$"

MetaKey = Annotated[str, StringConstraints(pattern=META_KEY_PATTERN)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
# A metadata value: one JSON scalar (bool before int: pydantic's smart union keeps the exact type).
Scalar = (
    bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(max_length=4096)]
)
FieldName = Annotated[str, StringConstraints(pattern=FIELD_PATTERN)]
Metadata = Annotated[dict[MetaKey, Scalar], Field(max_length=64)]
Tags = Annotated[list[Tag], Field(max_length=64)]

MAX_TEXT = 8 * 1024 * 1024  # the bus's max_payload is the practical bound
MAX_FILTER_NODES = 256


# --- filters ------------------------------------------------------------------------------------
class Compare(BaseModel):
    """`field <op> value`. On `tags`, `eq` means "has this tag" and `ne` "has not"; on `created` and
    `updated` (unix seconds) values are numbers; on `metadata.<key>` a value matches only a stored
    value of the same JSON type (the number 5 never equals the string "5")."""

    model_config = _STRICT
    op: Literal["eq", "ne", "lt", "lte", "gt", "gte"] = Field(description="Comparison.")
    field: FieldName = Field(description="`created`, `updated`, `session`, `tags` or `metadata.<key>`.")
    value: Scalar = Field(description="Value to compare with.")


class In(BaseModel):
    """`field` is (`in`) or is not (`nin`) one of `values`; on `tags`: has any / none of them."""

    model_config = _STRICT
    op: Literal["in", "nin"] = Field(description="Membership.")
    field: FieldName = Field(description="`created`, `updated`, `session`, `tags` or `metadata.<key>`.")
    values: list[Scalar] = Field(min_length=1, max_length=256, description="Allowed (or excluded) values.")


class Range(BaseModel):
    """A numeric or time range (`created`, `updated`: unix seconds); any bound may be left out."""

    model_config = _STRICT
    op: Literal["range"] = Field(description="Range.")
    field: FieldName = Field(description="`created`, `updated` or a numeric `metadata.<key>`.")
    gt: float | None = Field(None, description="Strictly greater than.")
    gte: float | None = Field(None, description="Greater than or equal.")
    lt: float | None = Field(None, description="Strictly less than.")
    lte: float | None = Field(None, description="Less than or equal.")

    @model_validator(mode="after")
    def _some_bound(self) -> Range:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("a range needs at least one bound (gt, gte, lt, lte)")
        return self


class Exists(BaseModel):
    """The record has metadata key `field` (`metadata.<key>`)."""

    model_config = _STRICT
    op: Literal["exists"] = Field(description="Presence of a metadata key.")
    field: FieldName = Field(description="`metadata.<key>`.")


class And(BaseModel):
    """Every sub-filter holds."""

    model_config = _STRICT
    op: Literal["and"] = Field(description="Conjunction.")
    args: list[Filter] = Field(min_length=1, max_length=64, description="Sub-filters.")


class Or(BaseModel):
    """At least one sub-filter holds."""

    model_config = _STRICT
    op: Literal["or"] = Field(description="Disjunction.")
    args: list[Filter] = Field(min_length=1, max_length=64, description="Sub-filters.")


class Not(BaseModel):
    """The sub-filter does not hold."""

    model_config = _STRICT
    op: Literal["not"] = Field(description="Negation.")
    arg: Filter = Field(description="Sub-filter.")


Filter = Annotated[Compare | In | Range | Exists | And | Or | Not, Field(discriminator="op")]
for _m in (And, Or, Not):
    _m.model_rebuild()


def filter_size(f: Filter) -> int:
    """Nodes in a filter tree (bounded, so a filter cannot make a pathological query)."""
    if isinstance(f, And | Or):
        return 1 + sum(filter_size(a) for a in f.args)
    if isinstance(f, Not):
        return 1 + filter_size(f.arg)
    return 1


class _Scoped(BaseModel):
    """What every memory call shares: whose memory it touches."""

    model_config = _STRICT
    namespace: str | None = Field(
        None,
        pattern=NAMESPACE_PATTERN,
        description="Whose memory: your own (the default, your agent name). Another namespace is"
        " reachable only through an access grant (the access service; until then `forbidden`).",
    )


class _Filtered(_Scoped):
    session: str | None = Field(
        None, pattern=SCOPE_PATTERN, description="Only records of this session/run (default: all)."
    )
    filter: Filter | None = Field(None, description="Metadata/tag/time filter (AND/OR/NOT tree).")
    as_of: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="See memory as it was at this unix time (the versions valid then); default: now.",
    )

    @model_validator(mode="after")
    def _bounded(self) -> _Filtered:
        if self.filter is not None and filter_size(self.filter) > MAX_FILTER_NODES:
            raise ValueError(f"a filter may have at most {MAX_FILTER_NODES} nodes")
        return self


# --- records ------------------------------------------------------------------------------------
class MemoryRecord(BaseModel):
    """One version of a memory record."""

    model_config = _STRICT
    id: str = Field(description="Record id (stable across versions).")
    version: int = Field(ge=1, description="Version number, from 1; an update adds one.")
    namespace: str = Field(description="Whose memory it is.")
    session: str | None = Field(None, description="Session/run it is scoped to, if any.")
    text: str = Field(description="The remembered text.")
    metadata: dict[str, Scalar] = Field(default_factory=dict, description="Metadata (JSON scalars).")
    tags: list[str] = Field(default_factory=list, description="Tags.")
    created: float = Field(description="Unix time the record was first added.")
    updated: float = Field(description="Unix time this version was written (valid from then).")
    valid_to: float | None = Field(
        None, description="Unix time a newer version superseded this one; null while current."
    )
    size: int = Field(ge=0, description="Bytes the version counts against quotas (text and metadata).")
    tier: Literal["working", "long_term"] = Field(
        "long_term", description="Whether the record is in the working set (RAM) when answered."
    )


class MemoryHit(BaseModel):
    model_config = _STRICT
    record: MemoryRecord = Field(description="The matching record.")
    score: float = Field(description="Higher is better: cosine similarity, or the keyword score in [0, 1].")


# --- syscalls -----------------------------------------------------------------------------------
class MemoryAdd(_Scoped):
    """Payload of `memory.add`: remember a text. The record's id is the syscall's id."""

    kind: Literal["memory.add"] = Field("memory.add", description="Syscall kind.")
    text: str = Field(min_length=1, max_length=MAX_TEXT, description="What to remember.")
    metadata: Metadata = Field(default_factory=dict, description="Metadata (keys `[A-Za-z_][A-Za-z0-9_]*`).")
    tags: Tags = Field(default_factory=list, description="Tags.")
    session: str | None = Field(
        None, pattern=SCOPE_PATTERN, description="Scope the record to this session/run (default: none)."
    )


class MemoryGet(_Scoped):
    """Payload of `memory.get`: one record by id (its current version)."""

    kind: Literal["memory.get"] = Field("memory.get", description="Syscall kind.")
    id: str = Field(pattern=RECORD_ID_PATTERN, description="Record id.")
    history: bool = Field(False, description="Also return the superseded versions, newest first.")


class MemoryUpdate(_Scoped):
    """Payload of `memory.update`: a new version of a record; the old one is kept, valid until now.
    Fields left out keep their value."""

    kind: Literal["memory.update"] = Field("memory.update", description="Syscall kind.")
    id: str = Field(pattern=RECORD_ID_PATTERN, description="Record id.")
    text: str | None = Field(None, min_length=1, max_length=MAX_TEXT, description="New text.")
    metadata: Metadata | None = Field(None, description="New metadata (replaces the old).")
    tags: Tags | None = Field(None, description="New tags (replace the old).")

    @model_validator(mode="after")
    def _changes_something(self) -> MemoryUpdate:
        if self.text is None and self.metadata is None and self.tags is None:
            raise ValueError("an update needs text, metadata or tags")
        return self


class MemoryDelete(_Scoped):
    """Payload of `memory.delete`: forget a record, every version of it."""

    kind: Literal["memory.delete"] = Field("memory.delete", description="Syscall kind.")
    id: str = Field(pattern=RECORD_ID_PATTERN, description="Record id.")


class MemoryList(_Filtered):
    """Payload of `memory.list`: records, newest first, filtered."""

    kind: Literal["memory.list"] = Field("memory.list", description="Syscall kind.")
    limit: int = Field(100, ge=1, le=1000, description="At most this many records.")
    offset: int = Field(0, ge=0, description="Skip this many (paging).")
    history: bool = Field(False, description="Include superseded versions (ignores `as_of`).")


class MemorySearch(_Filtered):
    """Payload of `memory.search`: the `k` records closest to `query`, filtered."""

    kind: Literal["memory.search"] = Field("memory.search", description="Syscall kind.")
    query: str = Field(min_length=1, max_length=16384, description="What to look for.")
    mode: Literal["semantic", "keyword"] = Field(
        "semantic", description="semantic: embeddings, cosine similarity; keyword: query words in the text."
    )
    k: int = Field(10, ge=1, le=1000, description="At most this many hits, best first.")
    min_score: float | None = Field(None, description="Drop hits scoring below this.")


# --- replies ------------------------------------------------------------------------------------
class MemoryAddReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.add"] = Field("memory.add", description="Syscall kind this answers.")
    record: MemoryRecord = Field(description="The stored record.")


class MemoryGetReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.get"] = Field("memory.get", description="Syscall kind this answers.")
    record: MemoryRecord = Field(description="The current version.")
    history: list[MemoryRecord] = Field(
        default_factory=list, description="Superseded versions, newest first (if asked)."
    )


class MemoryUpdateReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.update"] = Field("memory.update", description="Syscall kind this answers.")
    record: MemoryRecord = Field(description="The new current version.")
    superseded: MemoryRecord = Field(description="The version it replaced (now with `valid_to`).")


class MemoryDeleteReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.delete"] = Field("memory.delete", description="Syscall kind this answers.")
    id: str = Field(description="The forgotten record.")
    versions: int = Field(ge=0, description="How many versions were removed.")


class MemoryListReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.list"] = Field("memory.list", description="Syscall kind this answers.")
    records: list[MemoryRecord] = Field(description="Matching records, newest first.")
    next_offset: int | None = Field(None, description="Offset of the next page; null on the last.")


class MemorySearchReply(BaseModel):
    model_config = _STRICT
    kind: Literal["memory.search"] = Field("memory.search", description="Syscall kind this answers.")
    hits: list[MemoryHit] = Field(description="Best first.")
    mode: Literal["semantic", "keyword"] = Field(description="How it searched.")
    embedder: str | None = Field(None, description="Embedder of the vectors compared (semantic).")


MemoryPayload = MemoryAdd | MemoryGet | MemoryUpdate | MemoryDelete | MemoryList | MemorySearch
MemoryReply = (
    MemoryAddReply
    | MemoryGetReply
    | MemoryUpdateReply
    | MemoryDeleteReply
    | MemoryListReply
    | MemorySearchReply
)


class MemoryEvicted(BaseModel):
    """An agent's working set went over its quota and these records left RAM (event on
    `aios.v1.evt.memory.evicted`). They stay in the long-term store: get and search still find them."""

    model_config = _STRICT
    namespace: str = Field(description="Whose working set.")
    ids: list[str] = Field(description="Records evicted, in eviction order.")
    working_records: int = Field(ge=0, description="Records left in the working set.")
    working_bytes: int = Field(ge=0, description="Bytes left in the working set.")
    quota_records: int = Field(ge=0, description="The agent's working-set quota (records).")
    quota_bytes: int = Field(ge=0, description="The agent's working-set quota (bytes).")
    ts: float = Field(description="Unix time of the eviction.")


class MemoryInspect(BaseModel):
    """Operator -> memory (`ctl.memory.inspect`, kernel credentials only): run a read-only `memory.*`
    call in `agent`'s namespace, for `aios memory`."""

    model_config = _STRICT
    agent: str = Field(pattern=NAMESPACE_PATTERN, description="Agent whose memory to look at.")
    payload: MemoryList | MemoryGet | MemorySearch = Field(discriminator="kind", description="The call.")


class MemoryInspectReply(BaseModel):
    model_config = _STRICT
    result: MemoryListReply | MemoryGetReply | MemorySearchReply = Field(
        discriminator="kind", description="Its result."
    )
