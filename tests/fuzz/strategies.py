"""Hypothesis strategies for fuzzing the bus: near-valid JSON drawn from each model's JSON Schema,
then broken on purpose (wrong types, missing and extra fields, huge strings, deep nesting, odd
numbers and characters, invalid UTF-8, bytes that are no JSON at all)."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Literal, TypeAlias

from hypothesis import strategies as st
from pydantic import BaseModel

Json: TypeAlias = Any  # a JSON document (what json.dumps takes): Any, as JSON is recursive
Schema: TypeAlias = dict[str, Any]

# Where a drawn id is replaced, at send time, by a fresh syscall id (hypothesis repeats examples, and
# JetStream drops a second publication of an id; the answer is looked for under the fresh one).
FRESH_ID = "__FRESH_ID__"

# Sizes of generated values: small for the near-valid part (the mutations make the big ones).
_MAX_TEXT = 24
_MAX_ITEMS = 3
_MAX_DEPTH = 5  # $ref levels followed before a recursive schema is cut off (with a null)
_MAX_PATH_DEPTH = 12  # how deep in a document a mutation may land


def from_json_schema(schema: Schema, root: Schema | None = None, depth: int = 0) -> st.SearchStrategy[Json]:
    """Values that mostly satisfy `schema` (pydantic's JSON Schema: $ref/$defs, anyOf/oneOf, const,
    enum, typed objects, arrays, strings with patterns, bounded numbers). Mostly: a recursive
    schema is cut short and string formats are ignored; the fuzzer breaks them anyway."""
    root = root if root is not None else schema
    if "$ref" in schema:
        if depth >= _MAX_DEPTH:
            return st.none()
        name = schema["$ref"].rsplit("/", 1)[-1]
        return from_json_schema(root["$defs"][name], root, depth + 1)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf", "allOf"):  # allOf: pydantic wraps a single $ref in it
        if key in schema:
            return st.one_of([from_json_schema(s, root, depth) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_json_schema({**schema, "type": k}, root, depth) for k in kind])
    if kind == "object" or "properties" in schema:
        return _object(schema, root, depth)
    if kind == "array":
        items = schema.get("items", {})
        return st.lists(
            from_json_schema(items, root, depth),
            min_size=schema.get("minItems", 0),
            max_size=max(schema.get("minItems", 0), min(schema.get("maxItems", _MAX_ITEMS), _MAX_ITEMS)),
        )
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        lo, hi = _bounds(schema)
        return st.integers(
            min_value=None if lo is None else math.ceil(lo), max_value=None if hi is None else math.floor(hi)
        )
    if kind == "number":
        lo, hi = _bounds(schema)
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return json_values(max_leaves=4)  # {} (a JsonValue): anything


def _bounds(schema: Schema) -> tuple[float | None, float | None]:
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    return lo, hi


def _string(schema: Schema) -> st.SearchStrategy[str]:
    lo = schema.get("minLength", 0)
    hi = max(lo, min(schema.get("maxLength", _MAX_TEXT), _MAX_TEXT))
    if "pattern" in schema:
        try:
            return st.from_regex(str(schema["pattern"]), fullmatch=True).filter(lambda s: lo <= len(s))
        except re.error:  # an ECMA-only construct: any text will do for a fuzzer
            pass
    return st.text(min_size=lo, max_size=hi)


def _object(schema: Schema, root: Schema, depth: int) -> st.SearchStrategy[dict[str, Json]]:
    props: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fields = {k: from_json_schema(v, root, depth) for k, v in props.items() if k in required}
    optional = {k: from_json_schema(v, root, depth) for k, v in props.items() if k not in required}
    if not props and isinstance(schema.get("additionalProperties"), dict):
        return st.dictionaries(
            st.text(max_size=8), from_json_schema(schema["additionalProperties"], root, depth), max_size=3
        )
    return st.fixed_dictionaries(fields, optional=optional)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Json]:
    """Any JSON value, small."""
    leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
        max_leaves=max_leaves,
    )


def model_values(model: type[BaseModel]) -> st.SearchStrategy[Json]:
    """Near-valid JSON for `model`, from its published JSON Schema."""
    return from_json_schema(model.model_json_schema(mode="validation"))


# --- breaking them -------------------------------------------------------------------------------
Mutation = Literal["drop", "retype", "extra", "huge", "deep", "number", "chars"]
MUTATIONS: tuple[Mutation, ...] = ("drop", "retype", "extra", "huge", "deep", "number", "chars")


def _paths(doc: Json) -> list[tuple[str | int, ...]]:
    """Every place in `doc` a value sits (the root is `()`), down to _MAX_PATH_DEPTH levels."""
    out: list[tuple[str | int, ...]] = []
    todo: list[tuple[tuple[str | int, ...], Json]] = [((), doc)]
    while todo:
        here, value = todo.pop(0)
        out.append(here)
        if len(here) >= _MAX_PATH_DEPTH:
            continue
        if isinstance(value, dict):
            todo += [((*here, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            todo += [((*here, i), v) for i, v in enumerate(value)]
    return out


def _replace(doc: Json, path: tuple[str | int, ...], value: Json) -> Json:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: _replace(doc[head], rest, value)}
    assert isinstance(head, int)
    copy = list(doc)
    copy[head] = _replace(doc[head], rest, value)
    return copy


def _drop(doc: Json, path: tuple[str | int, ...]) -> Json:
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(doc, dict):
            return {k: v for k, v in doc.items() if k != head}
        return [v for i, v in enumerate(doc) if i != head]
    if isinstance(doc, dict):
        return {**doc, head: _drop(doc[head], rest)}
    assert isinstance(head, int)
    copy = list(doc)
    copy[head] = _drop(doc[head], rest)
    return copy


# Nesting deeper than Python's own recursion allows is written into the JSON text, not built as
# objects: a marker string stands for it until `dumps`.
_DEEP = re.compile(rb'"__DEEP_(LIST|DICT)_([0-9]+)__"')


def nested(depth: int, shape: Literal["list", "dict"]) -> str:
    return f"__DEEP_{shape.upper()}_{depth}__"


def _deep_text(m: re.Match[bytes]) -> bytes:
    depth = int(m.group(2))
    if m.group(1) == b"LIST":
        return b"[" * depth + b"0" + b"]" * depth
    return b'{"a":' * depth + b"0" + b"}" * depth


# Numbers JSON can spell (or nearly: NaN and Infinity are what Python's json writes for them).
ODD_NUMBERS: tuple[Json, ...] = (
    math.nan,
    math.inf,
    -math.inf,
    10**100,
    -(10**30),
    1e308,
    -0.0,
    2**63,
    2**64 + 1,
    0.1,
    -1,
    0,
)
# Strings that upset encoders and stores: NUL, lone surrogates, control and right-to-left marks,
# subject wildcards, path escapes.
ODD_TEXT: tuple[str, ...] = (
    "\x00",
    "\ud800",
    "a\udfffb",
    "\u202e",
    "\r\n",
    "*",
    ">",
    "a.b",
    "../../etc/passwd",
    "/abs",
    "",
    " ",
)


@st.composite
def mutate(draw: st.DrawFn, doc: Json, min_mutations: int = 1) -> Json:
    """`doc` with 1-3 mutations at places drawn from its tree."""
    for _ in range(draw(st.integers(min_mutations, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        how = draw(st.sampled_from(MUTATIONS))
        if how == "drop" and path:
            doc = _drop(doc, path)
        elif how == "retype":
            doc = _replace(doc, path, draw(json_values(max_leaves=3)))
        elif how == "extra":
            objects = [p for p in paths if isinstance(_get(doc, p), dict)]
            if objects:
                where = draw(st.sampled_from(objects))
                key = draw(st.text(min_size=1, max_size=10))
                target = _get(doc, where)
                doc = _replace(doc, where, {**target, key: draw(json_values(max_leaves=2))})
        elif how == "huge":
            size = draw(st.integers(2_000, 150_000))  # escaped, at most ~900 kB: under max_payload
            doc = _replace(doc, path, draw(st.sampled_from("xé€\U0001f600")) * size)
        elif how == "deep":
            doc = _replace(
                doc, path, nested(draw(st.integers(50, 3000)), draw(st.sampled_from(["list", "dict"])))
            )
        elif how == "number":
            doc = _replace(doc, path, draw(st.sampled_from(ODD_NUMBERS)))
        else:
            doc = _replace(doc, path, draw(st.sampled_from(ODD_TEXT)) * draw(st.integers(1, 3)))
    return doc


@st.composite
def odd_strings(draw: st.DrawFn, doc: Json) -> Json:
    """`doc` with its strings (not `kind`, the tag) made odd but still strings: the shape stays
    valid, so the call reaches the service behind the scheduler and tests its own checks."""
    for path in _paths(doc):
        value = _get(doc, path)
        if isinstance(value, str) and path[-1:] != ("kind",) and draw(st.booleans()):
            odd = (
                st.sampled_from(ODD_TEXT) | st.text(max_size=40) | st.integers(300, 100_000).map("é".__mul__)
            )
            doc = _replace(doc, path, draw(odd))
    return doc


def _get(doc: Json, path: tuple[str | int, ...]) -> Json:
    for p in path:
        doc = doc[p]
    return doc


def dumps(doc: Json) -> bytes:
    """JSON bytes as a careless client writes them: NaN/Infinity allowed, lone surrogates escaped,
    deep nesting spelled out."""
    return _DEEP.sub(_deep_text, json.dumps(doc, allow_nan=True).encode())


@st.composite
def corrupt(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` made invalid as bytes: invalid UTF-8 put in, cut short, or garbage around it."""
    how = draw(st.sampled_from(["utf8", "truncate", "prefix", "suffix"]))
    cut = draw(st.integers(0, max(0, len(body) - 1)))
    if how == "utf8":
        return (
            body[:cut]
            + draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]))
            + body[cut:]
        )
    if how == "truncate":
        return body[:cut]
    if how == "prefix":
        return draw(st.binary(min_size=1, max_size=8)) + body
    return body + draw(st.binary(min_size=1, max_size=8))


def shown(body: bytes, limit: int = 200) -> str:
    """A body, cut for a failure message (a fuzzed one may be a megabyte)."""
    return repr(body[:limit]) + (f"... ({len(body)} bytes)" if len(body) > limit else "")


def raw_bodies() -> st.SearchStrategy[bytes]:
    """Bodies that are not a JSON object: random bytes, other JSON values, nesting past any parser."""
    return st.one_of(
        st.binary(max_size=64),
        st.just(b""),
        json_values().map(dumps),
        st.integers(100, 20_000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(100, 20_000).map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
        st.integers(100, 5_000).map(lambda n: b"[" * n),  # never closed
        st.sampled_from([b"null", b"true", b"NaN", b"-Infinity", b"1e999", b'"\\ud800"', b"{}", b"[]"]),
    )
