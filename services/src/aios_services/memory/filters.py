"""Compiles a memory filter tree (aios_schemas.memory.Filter) to a parameterised SQL condition.

Nothing a caller sends is ever spliced into the SQL text: values become `?` parameters, a metadata
key becomes a JSON path parameter (and is checked against META_KEY_PATTERN again here), and field
names and operators are looked up in closed tables. Every leaf is two-valued (COALESCE(..., FALSE)),
so NOT and `ne` behave as a caller expects on records that lack a key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aios_schemas import AiosError
from aios_schemas.memory import (
    META_KEY_PATTERN,
    And,
    Compare,
    Exists,
    Filter,
    In,
    Not,
    Or,
    Range,
    Scalar,
)

_KEY = re.compile(META_KEY_PATTERN)
_OPS = {"eq": "=", "ne": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_RANGE = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))
# Record attributes a filter may name, and their SQL column (the table alias is `m`).
_TIME = {"created": "m.created", "updated": "m.updated"}
_NUMBER_TYPES = "('BIGINT', 'UBIGINT', 'DOUBLE')"


@dataclass
class Sql:
    """A condition and its parameters, in order."""

    text: str
    params: list[object] = field(default_factory=list)


def compile_filter(f: Filter) -> Sql:
    """The SQL condition of `f` over table alias `m`; AiosError(invalid_request) if it asks for
    something meaningless (a range on tags, a string compared with a time...)."""
    if isinstance(f, And | Or):
        parts = [compile_filter(a) for a in f.args]
        joiner = " AND " if isinstance(f, And) else " OR "
        return Sql("(" + joiner.join(p.text for p in parts) + ")", [x for p in parts for x in p.params])
    if isinstance(f, Not):
        inner = compile_filter(f.arg)
        return Sql(f"(NOT {inner.text})", inner.params)
    if isinstance(f, Compare):
        return _compare(f)
    if isinstance(f, In):
        sql = _in(f.field, f.values)
        return Sql(f"(NOT {sql.text})", sql.params) if f.op == "nin" else sql
    if isinstance(f, Range):
        return _range(f)
    if isinstance(f, Exists):
        path = _meta_path(f.field, "exists")
        return Sql("(json_type(m.metadata, ?) IS NOT NULL)", [path])
    raise AiosError("invalid_request", f"unknown filter node {type(f).__name__}")


def _bad(message: str) -> AiosError:
    return AiosError("invalid_request", f"filter: {message}")


def _meta_path(name: str, op: str) -> str:
    if not name.startswith("metadata."):
        raise _bad(f"{op!r} applies to metadata keys (metadata.<key>), not {name!r}")
    key = name.removeprefix("metadata.")
    if not _KEY.match(key):  # the schema checked it; a JSON path is built from it, so check again
        raise _bad(f"bad metadata key {key!r}")
    return f"$.{key}"


def _is_number(v: Scalar) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _two_valued(text: str, params: list[object]) -> Sql:
    return Sql(f"COALESCE({text}, FALSE)", params)


def _typed_meta(path: str, value: Scalar, sql_op: str) -> Sql:
    """metadata[path] <op> value, true only when the stored value has the JSON type of `value`."""
    if isinstance(value, bool):
        if sql_op not in ("=", "<>"):
            raise _bad("booleans compare only with eq/ne")
        return Sql(
            "(json_type(m.metadata, ?) = 'BOOLEAN' AND json_extract_string(m.metadata, ?) = ?)",
            [path, path, "true" if value else "false"],
        )
    if _is_number(value):
        return Sql(
            f"(json_type(m.metadata, ?) IN {_NUMBER_TYPES}"
            f" AND TRY_CAST(json_extract_string(m.metadata, ?) AS DOUBLE) {sql_op} ?)",
            [path, path, float(value)],
        )
    return Sql(
        f"(json_type(m.metadata, ?) = 'VARCHAR' AND json_extract_string(m.metadata, ?) {sql_op} ?)",
        [path, path, value],
    )


def _compare(f: Compare) -> Sql:
    sql_op = _OPS[f.op]
    if f.field in _TIME:
        if not _is_number(f.value):
            raise _bad(f"{f.field} is a unix time: compare it with a number")
        return _two_valued(f"({_TIME[f.field]} {sql_op} ?)", [float(f.value)])
    if f.field == "session":
        if not isinstance(f.value, str) or f.op not in ("eq", "ne"):
            raise _bad("session compares with a string, eq or ne")
        return _two_valued(f"(m.session {sql_op} ?)", [f.value])
    if f.field == "tags":
        if not isinstance(f.value, str) or f.op not in ("eq", "ne"):
            raise _bad("tags take eq/ne (has / has not a tag) with a string, or in/nin")
        has = Sql("COALESCE(list_contains(m.tags, ?), FALSE)", [f.value])
        return has if f.op == "eq" else Sql(f"(NOT {has.text})", has.params)
    path = _meta_path(f.field, f.op)
    # "not equal" is NOT(equal): it also holds where the key is missing or of another type.
    t = _typed_meta(path, f.value, "=" if f.op == "ne" else sql_op)
    leaf = _two_valued(t.text, t.params)
    return Sql(f"(NOT {leaf.text})", leaf.params) if f.op == "ne" else leaf


def _in(name: str, values: list[Scalar]) -> Sql:
    if name in _TIME:
        if not all(_is_number(v) for v in values):
            raise _bad(f"{name} is a unix time: its values are numbers")
        marks = ", ".join("?" * len(values))
        return _two_valued(f"({_TIME[name]} IN ({marks}))", [float(v) for v in values])
    if name in ("session", "tags"):
        if not all(isinstance(v, str) for v in values):
            raise _bad(f"{name} values are strings")
        if name == "session":
            marks = ", ".join("?" * len(values))
            return _two_valued(f"(m.session IN ({marks}))", list(values))
        return Sql("COALESCE(list_has_any(m.tags, ?::VARCHAR[]), FALSE)", [list(values)])
    path = _meta_path(name, "in")
    parts = [_typed_meta(path, v, "=") for v in values]
    return _two_valued("(" + " OR ".join(p.text for p in parts) + ")", [x for p in parts for x in p.params])


def _range(f: Range) -> Sql:
    bounds = [(sql_op, getattr(f, name)) for name, sql_op in _RANGE if getattr(f, name) is not None]
    if f.field in _TIME:
        text = " AND ".join(f"{_TIME[f.field]} {op} ?" for op, _ in bounds)
        return _two_valued(f"({text})", [float(v) for _, v in bounds])
    path = _meta_path(f.field, "range")
    value = "TRY_CAST(json_extract_string(m.metadata, ?) AS DOUBLE)"
    text = " AND ".join(f"{value} {op} ?" for op, _ in bounds)
    params: list[object] = [path]
    for _, v in bounds:
        params += [path, float(v)]
    return _two_valued(f"(json_type(m.metadata, ?) IN {_NUMBER_TYPES} AND {text})", params)
