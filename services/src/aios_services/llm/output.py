"""Structured output: check a reply against the requested `response_format` (JSON, JSON schema)."""

from __future__ import annotations

import json

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from aios_schemas import AiosError, JsonObjectFormat, JsonSchemaFormat
from aios_schemas.llm import ResponseFormat


def check_schema(fmt: ResponseFormat | None) -> None:
    """Reject an invalid JSON schema up front (`invalid_request`): no backend can satisfy it."""
    if not isinstance(fmt, JsonSchemaFormat):
        return
    schema = fmt.json_schema.schema_
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise AiosError("invalid_request", f"response_format.json_schema.schema: {exc.message}") from exc
    except RecursionError as exc:
        raise AiosError("invalid_request", "response_format.json_schema.schema: nested too deep") from exc


def mismatch(fmt: ResponseFormat | None, content: str | None) -> str | None:
    """Why `content` does not satisfy `fmt`, or None when it does (or no format was asked)."""
    if not isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
        return None
    try:
        value = json.loads(content or "")
    except json.JSONDecodeError as exc:
        return f"not JSON: {exc.msg} at char {exc.pos}"
    except RecursionError:
        return "not JSON we can read: nested too deep"
    if isinstance(fmt, JsonObjectFormat):
        return None if isinstance(value, dict) else f"a JSON {type(value).__name__}, not an object"
    schema = fmt.json_schema.schema_
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(value)
    )
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"does not match the schema at {where}: {error.message}"
