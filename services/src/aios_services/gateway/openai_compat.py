"""OpenAI's HTTP API, translated: request bodies to syscall payloads, replies to OpenAI JSON, AIOS
errors to the status codes and error bodies OpenAI clients act on (429 with Retry-After, 401...).

Lenient where OpenAI clients send more than the kernel uses (`user`, `logprobs: false`, `n: 1`,
`stream_options`...: ignored), strict where ignoring would change the answer (`n > 1`, images in a
message, an unknown role): those are 400s that say which field.
"""

from __future__ import annotations

import base64
import math
import struct
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from aios_schemas import AiosError, ChatReply, EmbedReply, LlmChat, LlmEmbed, ToolCall
from aios_schemas.wire import validation_error

# AIOS error code -> (HTTP status, OpenAI error type)
_STATUS: dict[str, tuple[int, str]] = {
    "invalid_request": (400, "invalid_request_error"),
    "unauthenticated": (401, "authentication_error"),
    "forbidden": (403, "permission_error"),
    "approval_denied": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "conflict": (409, "conflict_error"),
    "quota_exceeded": (429, "insufficient_quota"),
    "rate_limited": (429, "rate_limit_error"),
    "cancelled": (499, "cancelled"),
    "internal": (500, "server_error"),
    "backend_error": (502, "server_error"),
    "backend_unavailable": (503, "server_error"),
    "deadline_exceeded": (504, "timeout"),
}

# Chat parameters passed on as they are.
_SAMPLING = ("temperature", "top_p", "seed", "tools", "tool_choice", "response_format")


def parse_key(authorization: str | None, agent_header: str | None) -> tuple[str, str]:
    """(agent, token) from `Authorization: Bearer AGENT:TOKEN` (the key an OpenAI client is given),
    or a bare token with the agent in `X-AIOS-Agent`."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AiosError("unauthenticated", "no API key: send `Authorization: Bearer <agent>:<token>`")
    key = authorization[7:].strip()
    agent, sep, token = key.partition(":")
    if not sep:
        agent, token = (agent_header or "").strip(), key
    if not agent or not token:
        raise AiosError(
            "unauthenticated", "the API key is `<agent>:<token>` (or the token, with `X-AIOS-Agent: <agent>`)"
        )
    return agent, token


def _text(content: object, where: str) -> str | None:
    """A message's content: a string, or OpenAI's list of parts (text parts only)."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise AiosError(
                    "invalid_request", f"{where}.content.{i}: only text parts are supported, not {kind}"
                )
            texts.append(part["text"])
        return "".join(texts)
    raise AiosError("invalid_request", f"{where}.content: a string or a list of text parts")


def chat_payload(body: object) -> LlmChat:
    if not isinstance(body, dict):
        raise AiosError("invalid_request", "the request body must be a JSON object")
    n = body.get("n", 1)
    if n not in (1, None):
        raise AiosError("invalid_request", "n: only one choice per request is supported")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise AiosError("invalid_request", "messages: a list of messages is required")
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": [
            {
                k: (_text(v, f"messages.{i}") if k == "content" else v)
                for k, v in m.items()
                if k in ("role", "content", "name", "tool_calls", "tool_call_id")
            }
            if isinstance(m, dict)
            else m
            for i, m in enumerate(messages)
        ],
        "stream": bool(body.get("stream", False)),
    }
    for name in _SAMPLING:
        if body.get(name) is not None:
            out[name] = body[name]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is not None:
        out["max_tokens"] = limit
    stop = body.get("stop")
    if stop is not None:
        out["stop"] = [stop] if isinstance(stop, str) else stop
    try:
        return LlmChat.model_validate(out)
    except ValidationError as exc:
        raise validation_error(exc, "chat request") from exc


def embed_payload(body: object) -> LlmEmbed:
    if not isinstance(body, dict):
        raise AiosError("invalid_request", "the request body must be a JSON object")
    text = body.get("input")
    if body.get("encoding_format") not in ("float", "base64", None):
        raise AiosError("invalid_request", "encoding_format: float or base64")
    try:
        return LlmEmbed.model_validate(
            {
                "model": body.get("model"),
                "input": [text] if isinstance(text, str) else text,
                **({"dimensions": body["dimensions"]} if body.get("dimensions") is not None else {}),
            }
        )
    except ValidationError as exc:
        raise validation_error(exc, "embeddings request") from exc


def _tool_calls(calls: list[ToolCall] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.function.name, "arguments": c.function.arguments},
        }
        for c in calls
    ]


def _usage(reply: ChatReply | EmbedReply) -> dict[str, int]:
    u = reply.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    }


def completion(syscall_id: str, reply: ChatReply, created: int | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    calls = _tool_calls(reply.tool_calls)
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{syscall_id}",
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": reply.model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason or "stop"}],
        "usage": _usage(reply),
        "system_fingerprint": f"aios-{reply.backend}" if reply.backend else None,
    }


def chunk(
    syscall_id: str,
    model: str,
    created: int,
    delta: Mapping[str, Any],
    finish: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"chatcmpl-{syscall_id}",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def last_chunks(syscall_id: str, created: int, reply: ChatReply, with_usage: bool) -> list[dict[str, Any]]:
    """After the text deltas: the tool calls (whole, one delta), the finish reason, and the usage
    chunk when the client asked (`stream_options.include_usage`)."""
    out = []
    calls = _tool_calls(reply.tool_calls)
    if calls:
        indexed = [{"index": i, **c} for i, c in enumerate(calls)]
        out.append(chunk(syscall_id, reply.model, created, {"tool_calls": indexed}))
    out.append(chunk(syscall_id, reply.model, created, {}, finish=reply.finish_reason or "stop"))
    if with_usage:
        out.append(chunk(syscall_id, reply.model, created, {}, usage=_usage(reply)))
    return out


def embeddings(reply: EmbedReply, encoding: str | None = "float") -> dict[str, Any]:
    """`base64` (what the `openai` client asks for by default): little-endian float32, as OpenAI."""

    def encode(v: list[float]) -> list[float] | str:
        if encoding != "base64":
            return v
        return base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(reply.vectors)
        ],
        "model": reply.model,
        "usage": {"prompt_tokens": reply.usage.prompt_tokens, "total_tokens": reply.usage.total_tokens},
    }


def error(err: AiosError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """HTTP status, OpenAI error body and headers for an AIOS error."""
    status, kind = _STATUS.get(err.code, (500, "server_error"))
    headers: dict[str, str] = {}
    after = err.details.get("retry_after_s")
    if status == 429:
        seconds = after if isinstance(after, int | float) else 1.0
        headers["Retry-After"] = str(max(1, math.ceil(seconds)))
        headers["retry-after-ms"] = str(int(seconds * 1000))
    body = {"error": {"message": err.message, "type": kind, "param": None, "code": err.code}}
    return status, body, headers
