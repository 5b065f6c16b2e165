"""How models cross the bus: JSON bodies, and one header that marks an error reply.

Pure functions (no I/O) shared by the SDK and the service runtime, so both ends agree.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, JsonValue, ValidationError

from .errors import AiosError, ErrorReply

ERROR_HEADER = "Aios-Error"
M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json(exclude_none=False).encode()


def error_headers(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), ERROR_HEADER: "1"}


# What an error reply may carry, so that it always fits well under the server's max payload
# (1 MB by default) whatever the input: a 50,000-error payload is answered with the first few.
MAX_LISTED_ERRORS = 20
MAX_MESSAGE_CHARS = 500
MAX_FIELD_CHARS = 120
MAX_LOC_PARTS = 16


def clip(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with a note of how many were left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def validation_error(exc: ValidationError, what: str) -> AiosError:
    """A pydantic failure as an `invalid_request`, with (the first few) field errors as details.

    Bounded: at most MAX_LISTED_ERRORS errors, each with its location, message and type cut to a
    few dozen characters (no input, no context: both may be as large as the payload), and the
    count of those left out; the summary message is cut to MAX_MESSAGE_CHARS."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    total = len(errors)
    listed: list[JsonValue] = []
    for e in errors[:MAX_LISTED_ERRORS]:
        loc: list[JsonValue] = [
            p if isinstance(p, int) else clip(str(p), MAX_FIELD_CHARS) for p in e["loc"][:MAX_LOC_PARTS]
        ]
        if len(e["loc"]) > MAX_LOC_PARTS:
            loc.append(f"... ({len(e['loc']) - MAX_LOC_PARTS} more)")
        listed.append({"loc": loc, "msg": clip(e["msg"], MAX_FIELD_CHARS), "type": e["type"]})
    first = errors[0] if errors else None
    where = ".".join(str(p) for p in first["loc"]) if first else ""
    msg = f"invalid {what}: {where + ': ' if where else ''}{first['msg'] if first else 'malformed'}"
    if total > 1:
        msg += f" (and {total - 1} more errors)"
    details: dict[str, JsonValue] = {"errors": listed, "error_count": total}
    if total > len(listed):
        details["errors_omitted"] = total - len(listed)
    return AiosError("invalid_request", clip(msg, MAX_MESSAGE_CHARS), details=details)


def malformed(what: str, exc: BaseException) -> AiosError:
    """A payload that cannot even be parsed (nested too deep for the parser, not text): invalid."""
    why = "nested too deep" if isinstance(exc, RecursionError) else clip(str(exc), MAX_FIELD_CHARS)
    return AiosError("invalid_request", f"invalid {what}: malformed payload: {why}")


def decode(data: bytes, model: type[M], what: str | None = None) -> M:
    """Parse and validate `data` as `model`, or raise AiosError(invalid_request)."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        raise validation_error(exc, what or model.__name__) from exc
    except (ValueError, RecursionError) as exc:  # a model validator choking on odd input
        raise malformed(what or model.__name__, exc) from exc


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
