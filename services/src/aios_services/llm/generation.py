"""What one backend call produced: content, tool calls (also assembled from stream deltas), usage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import get_args

from openai.types.chat import ChatCompletion, ChatCompletionChunk

from aios_schemas import FunctionCall, ToolCall, Usage
from aios_schemas.llm import FinishReason

_FINISH: dict[str, FinishReason] = {r: r for r in get_args(FinishReason)}


def finish_reason(reason: str | None) -> FinishReason | None:
    """The backend's reason if it is one of ours (e.g. llama.cpp's `function_call` is not)."""
    return _FINISH.get(reason or "")


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        total_tokens=a.total_tokens + b.total_tokens,
    )


@dataclass
class _CallParts:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """Accumulates one call's output. A cancelled stream leaves it holding exactly what arrived."""

    pieces: list[str] = field(default_factory=list)
    calls: dict[int, _CallParts] = field(default_factory=dict)
    finish: str | None = None
    reported: Usage | None = None
    deltas: int = 0  # content or tool-argument deltas received: about one token each

    @property
    def content(self) -> str:
        return "".join(self.pieces)

    def add_chunk(self, chunk: ChatCompletionChunk) -> str:
        """Take one stream chunk; return the new content text (maybe empty)."""
        if chunk.usage is not None:
            self.reported = _usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        if choice.finish_reason:
            self.finish = choice.finish_reason
        for tc in choice.delta.tool_calls or []:
            # OpenAI's delta shape: the first delta of call `index` has its id and name, later ones
            # carry argument text only.
            parts = self.calls.setdefault(tc.index, _CallParts())
            if tc.id:
                parts.id = tc.id
            if tc.function is not None:
                if tc.function.name:
                    parts.name += tc.function.name
                if tc.function.arguments:
                    parts.arguments.append(tc.function.arguments)
                    self.deltas += 1
        delta = choice.delta.content or ""
        if delta:
            self.pieces.append(delta)
            self.deltas += 1
        return delta

    def set_completion(self, resp: ChatCompletion) -> None:
        if resp.usage is not None:
            self.reported = _usage(resp.usage.prompt_tokens, resp.usage.completion_tokens)
        if not resp.choices:
            return
        choice = resp.choices[0]
        self.finish = choice.finish_reason
        if choice.message.content:
            self.pieces.append(choice.message.content)
        for i, c in enumerate(choice.message.tool_calls or []):
            if c.type == "function":
                self.calls[i] = _CallParts(c.id, c.function.name, [c.function.arguments])

    def tool_calls(self) -> list[ToolCall] | None:
        calls = [
            ToolCall(
                id=p.id or f"call_{i}", function=FunctionCall(name=p.name, arguments="".join(p.arguments))
            )
            for i, p in sorted(self.calls.items())
        ]
        return calls or None

    def usage(self, prompt_chars: int) -> Usage:
        """The backend's usage when it reported it. A stream stopped early (suspend, cancel) or a
        backend without `stream_options.include_usage` reports none: then output tokens are the
        deltas received (engines send about one token per delta) and input tokens are estimated at
        4 characters per token, so that rate limits and fair-share accounting still see the cost."""
        if self.reported is not None:
            return self.reported
        return _usage(math.ceil(prompt_chars / 4), self.deltas)


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
