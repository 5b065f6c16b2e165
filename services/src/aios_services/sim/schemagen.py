"""Deterministic JSON values that validate against a JSON schema (tool arguments, structured output)."""

from __future__ import annotations

import random
from typing import Any

JSONValue = Any  # JSON has no precise static type; values come from and go to json.dumps

_WORDS = ("alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "ember", "maple", "orbit")
_MAX_DEPTH = 6


def generate(schema: dict[str, Any], rng: random.Random) -> JSONValue:
    """A value for `schema`: every required property, some optional ones, bounds and enums honoured."""
    return _Gen(schema, rng).value(schema, 0)


class _Gen:
    def __init__(self, root: dict[str, Any], rng: random.Random) -> None:
        self.root = root
        self.rng = rng

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        ref = schema.get("$ref")
        # Only local refs ("#/$defs/X"); tool schemas from pydantic and OpenAI use nothing else.
        while isinstance(ref, str) and ref.startswith("#/"):
            node: Any = self.root
            for part in ref[2:].split("/"):
                node = node[part.replace("~1", "/").replace("~0", "~")]
            schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
            ref = node.get("$ref")
        return schema

    def value(self, schema: Any, depth: int) -> JSONValue:
        if not isinstance(schema, dict):
            return None  # `true` / `{}`-like schemas accept anything
        schema = self.resolve(schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self.rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = [o for o in schema.get(key, []) if not _is_null(o)] or schema.get(key, [])
            if options:
                return self.value(self.rng.choice(options), depth)
        if "allOf" in schema:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                props = {**merged.get("properties", {}), **part.get("properties", {})}
                required = [*merged.get("required", []), *part.get("required", [])]
                merged = {**merged, **part, "properties": props, "required": required}
            return self.value(merged, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"] or kind
            kind = kinds[0]
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        return getattr(self, f"gen_{kind}", self.gen_null)(schema, depth)

    def gen_null(self, schema: dict[str, Any], depth: int) -> JSONValue:
        return None

    def gen_boolean(self, schema: dict[str, Any], depth: int) -> JSONValue:
        return self.rng.random() < 0.5

    def gen_string(self, schema: dict[str, Any], depth: int) -> JSONValue:
        lo = int(schema.get("minLength", 1))
        hi = int(schema.get("maxLength", max(lo, 32)))
        text = " ".join(self.rng.choice(_WORDS) for _ in range(self.rng.randint(1, 4)))
        while len(text) < lo:
            text += " " + self.rng.choice(_WORDS)
        return text[:hi]

    def gen_integer(self, schema: dict[str, Any], depth: int) -> JSONValue:
        lo, hi = _bounds(schema, integer=True)
        return self.rng.randint(int(lo), int(hi))

    def gen_number(self, schema: dict[str, Any], depth: int) -> JSONValue:
        lo, hi = _bounds(schema, integer=False)
        return round(self.rng.uniform(lo, hi), 3) if hi > lo else lo

    def gen_array(self, schema: dict[str, Any], depth: int) -> JSONValue:
        lo = int(schema.get("minItems", 1 if depth < _MAX_DEPTH else 0))
        hi = int(schema.get("maxItems", max(lo, 3)))
        count = lo if depth >= _MAX_DEPTH else self.rng.randint(lo, max(lo, hi))
        prefix = schema.get("prefixItems", [])
        return [
            self.value(prefix[i] if i < len(prefix) else schema.get("items", {}), depth + 1)
            for i in range(count)
        ]

    def gen_object(self, schema: dict[str, Any], depth: int) -> JSONValue:
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        out: dict[str, JSONValue] = {}
        for name, sub in props.items():
            if name in required or (depth < _MAX_DEPTH and self.rng.random() < 0.5):
                out[name] = self.value(sub, depth + 1)
        return out


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and schema.get("type") == "null"


def _bounds(schema: dict[str, Any], *, integer: bool) -> tuple[float, float]:
    lo = float(schema.get("minimum", 0))
    hi = float(schema.get("maximum", lo + 100))
    step = 1 if integer else 1e-6
    if "exclusiveMinimum" in schema:
        lo = float(schema["exclusiveMinimum"]) + step
    if "exclusiveMaximum" in schema:
        hi = float(schema["exclusiveMaximum"]) - step
    if integer:
        lo, hi = float(int(-(-lo // 1))), float(int(hi // 1))
    return lo, max(lo, hi)
