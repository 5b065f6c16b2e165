"""AIOS agent SDK: syscalls to the AIOS kernel over NATS."""

from .client import AIOS, ChatStream, LlmApi
from .config import resolve_connection
from .errors import (
    ApprovalDenied,
    BackendError,
    BackendUnavailable,
    Cancelled,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InternalError,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
    error_from_reply,
)

__all__ = [
    "AIOS",
    "ApprovalDenied",
    "BackendError",
    "BackendUnavailable",
    "Cancelled",
    "ChatStream",
    "Conflict",
    "DeadlineExceeded",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "LlmApi",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "Unauthenticated",
    "error_from_reply",
    "resolve_connection",
]
