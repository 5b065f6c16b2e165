"""How models cross the bus: JSON bodies, and one header that marks an error reply.

Pure functions (no I/O) shared by the SDK and the service runtime, so both ends agree.
"""

from __future__ import annotations

import json
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .errors import AiosError, ErrorReply

ERROR_HEADER = "Aios-Error"
M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=False).encode()


def error_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), ERROR_HEADER: "1"}


def validation_error(exc: ValidationError, what: str) -> AiosError:
    """A pydantic failure as an `invalid_request`, with the field errors as details."""
    errors = json.loads(exc.json(include_url=False, include_input=False))
    first = errors[0] if errors else {}
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = f"invalid {what}: {loc + ': ' if loc else ''}{first.get('msg', 'malformed')}"
    return AiosError("invalid_request", msg, details={"errors": errors})


def decode(data: bytes, model: type[M], what: str | None = None) -> M:
    """Parse and validate `data` as `model`, or raise AiosError(invalid_request)."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise validation_error(exc, what or model.__name__) from exc


def decode_reply(data: bytes, headers: dict[str, str] | None, model: type[M]) -> M:
    """Parse a reply that is either `model` or, when the error header is set, an ErrorReply."""
    if headers and headers.get(ERROR_HEADER):
        try:
            err = ErrorReply.model_validate_json(data)
        except ValidationError as exc:
            raise AiosError("internal", f"malformed error reply: {data[:200]!r}") from exc
        raise AiosError.from_reply(err)
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise AiosError("internal", f"malformed {model.__name__} reply: {exc.errors()[:1]}") from exc
