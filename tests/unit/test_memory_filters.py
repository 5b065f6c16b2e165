"""The memory filter language compiled to SQL: parameterised (no caller text in the SQL), typed,
and evaluated by a real DuckDB over a small table."""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import pytest
from pydantic import TypeAdapter, ValidationError

from aios_schemas import AiosError, MemoryAdd, MemoryList
from aios_schemas.memory import Filter
from aios_services.memory.filters import compile_filter

F: TypeAdapter[Filter] = TypeAdapter(Filter)

ROWS = [
    # id, metadata, tags, created, session
    ("a", {"topic": "cats", "n": 5, "ok": True}, ["pets", "x"], 100.0, "s1"),
    ("b", {"topic": "dogs", "n": 7.5, "ok": False}, ["pets"], 200.0, "s2"),
    ("c", {"topic": "tax", "n": "5"}, [], 300.0, None),
    ("d", {}, ["work"], 400.0, "s1"),
]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    c.execute(
        "CREATE TABLE m (id VARCHAR, metadata VARCHAR, tags VARCHAR[], created DOUBLE, updated DOUBLE,"
        " session VARCHAR)"
    )
    for id_, meta, tags, created, session in ROWS:
        c.execute(
            "INSERT INTO m VALUES (?, ?, ?, ?, ?, ?)",
            [id_, json.dumps(meta), tags, created, created, session],
        )
    yield c
    c.close()


def ids(con: duckdb.DuckDBPyConnection, f: object) -> list[str]:
    sql = compile_filter(F.validate_python(f))
    return [
        r[0] for r in con.execute(f"SELECT id FROM m WHERE {sql.text} ORDER BY id", sql.params).fetchall()
    ]


def eq(field: str, value: object) -> dict[str, object]:
    return {"op": "eq", "field": field, "value": value}


def test_equality_is_typed(con: duckdb.DuckDBPyConnection) -> None:
    assert ids(con, eq("metadata.topic", "cats")) == ["a"]
    assert ids(con, eq("metadata.n", 5)) == ["a"]  # the string "5" of c is not the number 5
    assert ids(con, eq("metadata.n", "5")) == ["c"]
    assert ids(con, eq("metadata.ok", True)) == ["a"]
    assert ids(con, eq("metadata.ok", False)) == ["b"]


def test_ne_and_not_hold_where_the_key_is_missing(con: duckdb.DuckDBPyConnection) -> None:
    assert ids(con, {"op": "ne", "field": "metadata.topic", "value": "cats"}) == ["b", "c", "d"]
    assert ids(con, {"op": "not", "arg": eq("metadata.topic", "cats")}) == ["b", "c", "d"]


def test_comparisons_ranges_and_time(con: duckdb.DuckDBPyConnection) -> None:
    assert ids(con, {"op": "gt", "field": "metadata.n", "value": 5}) == ["b"]
    assert ids(con, {"op": "gte", "field": "metadata.n", "value": 5}) == ["a", "b"]
    assert ids(con, {"op": "range", "field": "created", "gte": 200, "lt": 400}) == ["b", "c"]
    assert ids(con, {"op": "range", "field": "metadata.n", "gt": 6}) == ["b"]
    assert ids(con, {"op": "lt", "field": "updated", "value": 150}) == ["a"]


def test_in_tags_session_exists(con: duckdb.DuckDBPyConnection) -> None:
    assert ids(con, {"op": "in", "field": "metadata.topic", "values": ["cats", "tax"]}) == ["a", "c"]
    assert ids(con, {"op": "nin", "field": "metadata.topic", "values": ["cats", "tax"]}) == ["b", "d"]
    assert ids(con, eq("tags", "pets")) == ["a", "b"]
    assert ids(con, {"op": "ne", "field": "tags", "value": "pets"}) == ["c", "d"]
    assert ids(con, {"op": "in", "field": "tags", "values": ["x", "work"]}) == ["a", "d"]
    assert ids(con, eq("session", "s1")) == ["a", "d"]
    assert ids(con, {"op": "exists", "field": "metadata.ok"}) == ["a", "b"]


def test_and_or_combine(con: duckdb.DuckDBPyConnection) -> None:
    f = {
        "op": "or",
        "args": [
            {"op": "and", "args": [eq("tags", "pets"), {"op": "gt", "field": "metadata.n", "value": 6}]},
            eq("metadata.topic", "tax"),
        ],
    }
    assert ids(con, f) == ["b", "c"]


@pytest.mark.parametrize(
    "value",
    [
        "x' OR '1'='1",
        "'); DROP TABLE m; --",
        '" OR 1=1 --',
        "\\'; SELECT * FROM m; --",
    ],
)
def test_injected_values_are_only_values(con: duckdb.DuckDBPyConnection, value: str) -> None:
    f = F.validate_python(eq("metadata.topic", value))
    sql = compile_filter(f)
    assert value not in sql.text
    assert ids(con, eq("metadata.topic", value)) == []
    assert con.execute("SELECT count(*) FROM m").fetchone() == (4,)


@pytest.mark.parametrize(
    "field",
    [
        "metadata.topic') OR 1=1 --",
        "metadata.a.b",
        "metadata.$",
        "metadata.",
        "namespace",  # not a filterable field: a filter cannot widen the caller's namespace
        "id; DROP TABLE m",
        "text",
        'metadata.x" OR "1',
    ],
)
def test_fields_outside_the_language_are_refused(field: str) -> None:
    with pytest.raises(ValidationError):
        F.validate_python(eq(field, "x"))


@pytest.mark.parametrize(
    "f",
    [
        {"op": "lt", "field": "tags", "value": "x"},
        {"op": "eq", "field": "created", "value": "yesterday"},
        {"op": "range", "field": "tags", "gt": 1},
        {"op": "exists", "field": "created"},
        {"op": "gt", "field": "metadata.ok", "value": True},
        {"op": "in", "field": "session", "values": [1, 2]},
    ],
)
def test_meaningless_filters_are_invalid_requests(f: object) -> None:
    with pytest.raises(AiosError) as err:
        compile_filter(F.validate_python(f))
    assert err.value.code == "invalid_request"


def test_filters_are_bounded() -> None:
    deep: dict[str, object] = eq("metadata.a", 1)
    for _ in range(300):
        deep = {"op": "not", "arg": deep}
    with pytest.raises(ValidationError):
        MemoryList.model_validate({"filter": deep})
    with pytest.raises(ValidationError):
        F.validate_python({"op": "range", "field": "created"})  # no bound


def test_metadata_and_filter_values_are_finite() -> None:
    with pytest.raises(ValidationError):
        MemoryAdd(text="x", metadata={"n": float("nan")})
    with pytest.raises(ValidationError):
        F.validate_python(eq("metadata.n", float("inf")))
    with pytest.raises(ValidationError):
        MemoryAdd.model_validate_json('{"text": "x", "metadata": {"n": NaN}}')
