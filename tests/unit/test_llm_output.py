"""Structured output checks: json_object and json_schema."""

from __future__ import annotations

import pytest

from aios_schemas import AiosError, JsonObjectFormat, JsonSchemaFormat, TextFormat
from aios_services.llm.output import check_schema, mismatch

SCHEMA = JsonSchemaFormat.model_validate(
    {
        "type": "json_schema",
        "json_schema": {
            "name": "p",
            "schema": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
        },
    }
)


def test_json_object() -> None:
    fmt = JsonObjectFormat(type="json_object")
    assert mismatch(fmt, '{"a": 1}') is None
    assert "not an object" in (mismatch(fmt, "[1, 2]") or "")
    assert "not JSON" in (mismatch(fmt, "Sure! {") or "")
    assert "not JSON" in (mismatch(fmt, None) or "")


def test_json_schema() -> None:
    assert mismatch(SCHEMA, '{"age": 3}') is None
    why = mismatch(SCHEMA, '{"age": "three"}') or ""
    assert "at age" in why and "integer" in why
    assert "required" in (mismatch(SCHEMA, "{}") or "")


def test_no_format_or_text_is_never_a_mismatch() -> None:
    assert mismatch(None, "anything") is None
    assert mismatch(TextFormat(type="text"), "anything") is None


def test_an_invalid_schema_is_the_agents_error() -> None:
    bad = JsonSchemaFormat.model_validate(
        {"type": "json_schema", "json_schema": {"name": "b", "schema": {"type": 12}}}
    )
    with pytest.raises(AiosError) as info:
        check_schema(bad)
    assert info.value.code == "invalid_request"
    check_schema(SCHEMA)
