"""One exception class per error code (DESIGN §7); all are `aios_schemas.AiosError`."""

from __future__ import annotations

from typing import ClassVar

from pydantic import JsonValue

from aios_schemas import AiosError, ErrorCode, ErrorReply


class _CodedError(AiosError):
    code_: ClassVar[ErrorCode]

    def __init__(
        self, message: str, *, retryable: bool | None = None, details: dict[str, JsonValue] | None = None
    ) -> None:
        super().__init__(self.code_, message, retryable=retryable, details=details)


class InvalidRequest(_CodedError):
    code_ = "invalid_request"


class Unauthenticated(_CodedError):
    code_ = "unauthenticated"


class Forbidden(_CodedError):
    code_ = "forbidden"


class NotFound(_CodedError):
    code_ = "not_found"


class Conflict(_CodedError):
    code_ = "conflict"


class QuotaExceeded(_CodedError):
    code_ = "quota_exceeded"


class RateLimited(_CodedError):
    code_ = "rate_limited"


class DeadlineExceeded(_CodedError):
    code_ = "deadline_exceeded"


class ApprovalDenied(_CodedError):
    code_ = "approval_denied"


class Cancelled(_CodedError):
    code_ = "cancelled"


class BackendUnavailable(_CodedError):
    code_ = "backend_unavailable"


class BackendError(_CodedError):
    code_ = "backend_error"


class InternalError(_CodedError):
    code_ = "internal"


_BY_CODE: dict[ErrorCode, type[_CodedError]] = {
    cls.code_: cls
    for cls in (
        InvalidRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        QuotaExceeded,
        RateLimited,
        DeadlineExceeded,
        ApprovalDenied,
        Cancelled,
        BackendUnavailable,
        BackendError,
        InternalError,
    )
}


def error_from_reply(reply: ErrorReply) -> AiosError:
    """The typed exception for an ErrorReply."""
    return _BY_CODE[reply.code](reply.message, retryable=reply.retryable, details=dict(reply.details))


def typed(exc: AiosError) -> AiosError:
    """Re-type a generic AiosError as its code's class (no-op if it already is one)."""
    if isinstance(exc, _CodedError):
        return exc
    return error_from_reply(exc.to_reply())
