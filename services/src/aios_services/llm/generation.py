"""What one backend call produced: content, tool calls (also assembled from stream deltas), usage."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from aios_schemas import AiosError, FunctionCall, ToolCall, Usage
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

    def add_chunk(self, chunk: Mapping[str, Any]) -> str:
        """Take one stream chunk (its JSON, as the backend sent it); return the new content text.

        Raw JSON rather than openai's typed chunk: building a pydantic model per chunk was ~15% of
        the llm service's CPU (py-spy), and only these few fields are read. Anything malformed is
        read as absent, as the typed model would have refused it."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.reported = _usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )
        choices = chunk.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return ""
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])
        delta_obj = choice.get("delta")
        if not isinstance(delta_obj, dict):
            return ""
        for tc in delta_obj.get("tool_calls") or []:
            if not isinstance(tc, dict):
                continue
            # OpenAI's delta shape: the first delta of call `index` has its id and name, later ones
            # carry argument text only.
            parts = self.calls.setdefault(int(tc.get("index") or 0), _CallParts())
            if tc.get("id"):
                parts.id = str(tc["id"])
            fn = tc.get("function")
            if isinstance(fn, dict):
                if fn.get("name"):
                    parts.name += str(fn["name"])
                if fn.get("arguments"):
                    parts.arguments.append(str(fn["arguments"]))
                    self.deltas += 1
        delta = delta_obj.get("content") or ""
        if not isinstance(delta, str):
            return ""
        if delta:
            self.pieces.append(delta)
            self.deltas += 1
        return delta

    def set_completion(self, resp: Mapping[str, Any]) -> None:
        """Take a whole (non-streamed) chat completion, as the JSON the backend sent."""
        usage = resp.get("usage")
        if isinstance(usage, dict):
            self.reported = _usage(
                int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
            )
        choices = resp.get("choices")
        if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
            return
        choice = choices[0]
        if choice.get("finish_reason"):
            self.finish = str(choice["finish_reason"])
        message = choice.get("message")
        if not isinstance(message, dict):
            return
        content = message.get("content")
        if isinstance(content, str) and content:
            self.pieces.append(content)
        for i, c in enumerate(message.get("tool_calls") or []):
            fn = c.get("function") if isinstance(c, dict) else None
            if isinstance(fn, dict) and c.get("type", "function") == "function":
                self.calls[i] = _CallParts(
                    str(c.get("id") or ""), str(fn.get("name") or ""), [str(fn.get("arguments") or "")]
                )

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


def embeddings(resp: Mapping[str, Any], backend: str) -> tuple[Usage, list[list[float]]]:
    """Usage and vectors (in input order) of an embeddings reply, as the JSON the backend sent."""
    try:
        data = sorted(resp["data"], key=lambda d: int(d.get("index") or 0))
        vectors = [[float(x) for x in d["embedding"]] for d in data]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AiosError(
            "backend_error", f"{backend}: malformed embeddings reply ({exc})", details={"backend": backend}
        ) from exc
    u = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
    assert isinstance(u, dict)
    prompt = int(u.get("prompt_tokens") or 0)
    return Usage(prompt_tokens=prompt, total_tokens=int(u.get("total_tokens") or prompt)), vectors
