"""The request a backend receives: every parameter the agent set, none it did not, plus ours."""

from __future__ import annotations

from aios_schemas import AiosError, LlmChat, LlmEmbed

from .backends import Backend

Body = dict[str, object]

_SAMPLING = ("temperature", "top_p", "max_tokens", "stop", "seed")


def check_capabilities(p: LlmChat, backend: Backend) -> None:
    """Refuse what the backend cannot do instead of silently dropping the agent's parameter."""
    caps = backend.cfg.capabilities
    if p.tools is not None and not caps.tools:
        raise AiosError("invalid_request", f"backend {backend.name} does not support tools")
    if p.response_format is not None and not caps.json_output:
        raise AiosError("invalid_request", f"backend {backend.name} does not support response_format")


def chat_body(
    p: LlmChat,
    backend: Backend,
    *,
    priority: int,
    stream: bool,
    partial: str = "",
    done_tokens: int = 0,
) -> Body:
    """The JSON body of one `/chat/completions` request.

    With a `partial` answer (a resumed generation) the assistant message is sent last and the backend
    continues it (vLLM `continue_final_message`); `max_tokens` then counts only the tokens still
    allowed, as vLLM and the simulator count new tokens only.
    """
    body: Body = {
        "model": backend.remote_model,
        "messages": [m.model_dump(exclude_none=True) for m in p.messages],
    }
    for name in _SAMPLING:
        value = getattr(p, name)
        if value is not None:
            body[name] = value
    if p.max_tokens is not None and done_tokens:
        body["max_tokens"] = max(1, p.max_tokens - done_tokens)
    if p.tools is not None:
        body["tools"] = [t.model_dump(exclude_none=True) for t in p.tools]
    if p.tool_choice is not None:
        body["tool_choice"] = p.tool_choice if isinstance(p.tool_choice, str) else p.tool_choice.model_dump()
    if p.response_format is not None:
        body["response_format"] = p.response_format.model_dump(by_alias=True, exclude_none=True)
    extra: Body = {}
    if backend.cfg.capabilities.priority:
        extra["priority"] = priority
    if partial:
        body["messages"] = [
            *(m.model_dump(exclude_none=True) for m in p.messages),
            {"role": "assistant", "content": partial},
        ]
        extra["continue_final_message"] = True
        extra["add_generation_prompt"] = False
    body.update(extra)  # engine-specific parameters (vLLM's), sent beside the standard ones
    if stream:
        # include_usage: the last chunk carries the usage, which accounting needs.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def embed_body(p: LlmEmbed, backend: Backend) -> Body:
    body: Body = {"model": backend.remote_model, "input": p.input}
    if p.dimensions is not None:
        body["dimensions"] = p.dimensions
    return body


def prompt_chars(body: Body) -> int:
    """Characters of the prompt, to estimate input tokens when a backend reports no usage."""
    messages = body.get("messages")
    total = 0
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                total += len(str(m.get("content") or ""))
    return total + len(str(body.get("tools") or ""))
