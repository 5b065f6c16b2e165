"""`exec.llm` handler: run one admitted llm syscall on a backend, with fallback."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import cast, get_args

from openai import AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aios_schemas import (
    AiosError,
    ChatReply,
    ExecRequest,
    FunctionCall,
    LlmChat,
    StreamChunk,
    SyscallResult,
    ToolCall,
    Usage,
)
from aios_schemas.llm import FinishReason

from ..runtime import Bus
from .backends import Backend, translate

log = logging.getLogger(__name__)

# Errors after which the next backend of the model is tried.
FALLBACK_CODES = frozenset({"backend_unavailable", "rate_limited"})


def request_body(p: LlmChat, backend: Backend) -> dict[str, object]:
    """The OpenAI request for `p`: every parameter the agent set, none it did not."""
    body: dict[str, object] = {
        "model": backend.remote_model,
        "messages": [m.model_dump(exclude_none=True) for m in p.messages],
    }
    for name in ("temperature", "top_p", "max_tokens", "stop", "seed"):
        value = getattr(p, name)
        if value is not None:
            body[name] = value
    if p.tools is not None:
        body["tools"] = [t.model_dump(exclude_none=True) for t in p.tools]
    if p.tool_choice is not None:
        body["tool_choice"] = p.tool_choice if isinstance(p.tool_choice, str) else p.tool_choice.model_dump()
    if p.response_format is not None:
        body["response_format"] = p.response_format.model_dump(by_alias=True, exclude_none=True)
    return body


class LlmHandlers:
    def __init__(self, bus: Bus, models: Mapping[str, list[Backend]]) -> None:
        self.bus = bus
        self.models = models

    async def exec(self, req: ExecRequest) -> SyscallResult:
        p = req.syscall.payload
        backends = self.models.get(p.model)
        if backends is None:
            raise AiosError(
                "not_found", f"unknown model {p.model!r}", details={"models": list(sorted(self.models))}
            )
        last: AiosError | None = None
        for backend in backends:
            remaining = req.deadline - time.time()
            if remaining <= 0:
                raise AiosError("deadline_exceeded", "deadline passed before the backend answered")
            try:
                if p.stream:
                    reply = await self._stream(req, p, backend, remaining)
                else:
                    reply = await self._complete(p, backend, remaining)
                return SyscallResult.ok(req.syscall.id, reply)
            except AiosError as exc:
                last = exc
                if exc.code not in FALLBACK_CODES:
                    raise
                log.warning("backend %s failed for %s: %s", backend.name, req.syscall.id, exc.message)
        assert last is not None
        raise last

    async def _complete(self, p: LlmChat, backend: Backend, timeout: float) -> ChatReply:
        try:
            resp = await _create(backend)(**request_body(p, backend), timeout=timeout)
        except Exception as exc:
            raise translate(exc, backend.name) from exc
        if not resp.choices:
            raise AiosError("backend_error", f"{backend.name}: empty choices")
        choice = resp.choices[0]
        calls = [
            ToolCall(id=c.id, function=FunctionCall(name=c.function.name, arguments=c.function.arguments))
            for c in (choice.message.tool_calls or [])
            if c.type == "function"
        ]
        u = resp.usage
        return ChatReply(
            model=p.model,
            backend=backend.name,
            content=choice.message.content,
            tool_calls=calls or None,
            finish_reason=_finish(choice.finish_reason),
            usage=Usage(
                prompt_tokens=u.prompt_tokens if u else 0,
                completion_tokens=u.completion_tokens if u else 0,
                total_tokens=u.total_tokens if u else 0,
            ),
        )

    async def _stream(self, req: ExecRequest, p: LlmChat, backend: Backend, timeout: float) -> ChatReply:
        subject = self.bus.ns.stream(req.syscall.id)
        text: list[str] = []
        finish: str | None = None
        usage = Usage()
        seq = 0
        try:
            stream = await _create_stream(backend)(
                **request_body(p, backend),
                stream=True,
                stream_options={"include_usage": True},
                timeout=timeout,
            )
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                        total_tokens=chunk.usage.total_tokens,
                    )
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = choice.delta.content or ""
                if choice.finish_reason:
                    finish = choice.finish_reason
                if delta:
                    text.append(delta)
                    await self.bus.publish(subject, StreamChunk(id=req.syscall.id, seq=seq, delta=delta))
                    seq += 1
        except Exception as exc:
            raise translate(exc, backend.name) from exc
        fr = _finish(finish)
        await self.bus.publish(subject, StreamChunk(id=req.syscall.id, seq=seq, done=True, finish_reason=fr))
        return ChatReply(
            model=p.model, backend=backend.name, content="".join(text), finish_reason=fr, usage=usage
        )


def _create(backend: Backend) -> Callable[..., Awaitable[ChatCompletion]]:
    # The client's overloads are typed for OpenAI's own model names and literal flags; the body is
    # built dynamically from the syscall, so call it through a plain callable type.
    return cast(Callable[..., Awaitable[ChatCompletion]], backend.client.chat.completions.create)


def _create_stream(backend: Backend) -> Callable[..., Awaitable[AsyncStream[ChatCompletionChunk]]]:
    return cast(
        Callable[..., Awaitable[AsyncStream[ChatCompletionChunk]]], backend.client.chat.completions.create
    )


_FINISH: dict[str, FinishReason] = {r: r for r in get_args(FinishReason)}


def _finish(reason: str | None) -> FinishReason | None:
    return _FINISH.get(reason or "")
