"""AIOS agent SDK: syscalls to the AIOS kernel over NATS."""

from .agent import Agent, AgentResult
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
from .files import FilesApi
from .memory import MemoryApi, where
from .sync import AIOSSync
from .tools import AgentTool, ToolsApi, assistant_message

__all__ = [
    "AIOS",
    "AIOSSync",
    "Agent",
    "AgentResult",
    "AgentTool",
    "ApprovalDenied",
    "BackendError",
    "BackendUnavailable",
    "Cancelled",
    "ChatStream",
    "Conflict",
    "DeadlineExceeded",
    "FilesApi",
    "Forbidden",
    "InternalError",
    "InvalidRequest",
    "LlmApi",
    "MemoryApi",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "ToolsApi",
    "Unauthenticated",
    "assistant_message",
    "error_from_reply",
    "resolve_connection",
    "where",
]
