"""Error codes and the ErrorReply that carries them across the bus (DESIGN §7)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, JsonValue

ErrorCode = Literal[
    "invalid_request",
    "unauthenticated",
    "forbidden",
    "not_found",
    "conflict",
    "quota_exceeded",
    "rate_limited",
    "deadline_exceeded",
    "approval_denied",
    "cancelled",
    "backend_unavailable",
    "backend_error",
    "internal",
]
ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)

# Whether a caller may retry the same request unchanged and hope for a different answer.
RETRYABLE_BY_DEFAULT: frozenset[ErrorCode] = frozenset(
    {"rate_limited", "backend_unavailable", "deadline_exceeded", "internal"}
)


class ErrorReply(BaseModel):
    """A typed failure. Its identity is `code`; `message` is for humans only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["error"] = Field("error", description="Tag that marks this message as an error.")
    code: ErrorCode = Field(description="Stable machine-readable error code.")
    message: str = Field(description="Human-readable explanation; never parse it.")
    retryable: bool = Field(False, description="True if the same request may succeed later.")
    details: dict[str, JsonValue] = Field(default_factory=dict, description="Structured context.")


class AiosError(Exception):
    """Raised inside services (and by the SDK) to produce or represent an ErrorReply."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool | None = None,
        details: dict[str, JsonValue] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message
        self.retryable = code in RETRYABLE_BY_DEFAULT if retryable is None else retryable
        self.details: dict[str, JsonValue] = details or {}

    def to_reply(self) -> ErrorReply:
        return ErrorReply(
            code=self.code, message=self.message, retryable=self.retryable, details=self.details
        )

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> AiosError:
        return cls(reply.code, reply.message, retryable=reply.retryable, details=dict(reply.details))
