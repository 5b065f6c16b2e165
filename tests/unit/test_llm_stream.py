"""The llm service's lean reading of a backend's SSE stream: one dict per `data:` event."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aios_services.llm.http import BackendStreamError, sse_events


async def lines(body: bytes) -> AsyncIterator[bytes]:
    for line in body.splitlines(keepends=True):  # as aiohttp's StreamReader yields them
        yield line


async def events(body: bytes) -> list[dict[str, Any]]:
    return [c async for c in sse_events(lines(body))]


async def test_events_become_dicts_until_done() -> None:
    body = (
        b": a comment\r\n\r\n"
        b'data: {"choices": [{"delta": {"content": "He"}}]}\r\n\r\n'
        b'event: ignored\ndata:{"choices": [{"delta": {"content": "llo"}}]}\n\n'
        b'data: {"choices": [],\ndata:  "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"after": "done"}\n\n'
    )
    chunks = await events(body)
    assert [c.get("choices") for c in chunks[:2]] == [
        [{"delta": {"content": "He"}}],
        [{"delta": {"content": "llo"}}],
    ]
    assert chunks[2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert len(chunks) == 3  # nothing after [DONE]


async def test_a_last_event_without_its_blank_line_is_kept() -> None:
    chunks = await events(b'data: {"choices": []}\n\ndata: {"usage": {"prompt_tokens": 1}}')
    assert chunks == [{"choices": []}, {"usage": {"prompt_tokens": 1}}]
    assert await events(b"data: [DONE]") == []


async def test_an_error_event_raises() -> None:
    body = b'data: {"choices": []}\n\ndata: {"error": {"message": "engine died"}}\n\n'
    with pytest.raises(BackendStreamError, match="engine died"):
        await events(body)
