"""The llm service's lean reading of a backend's SSE stream: one dict per `data:` event."""

from __future__ import annotations

import httpx2
import openai
import pytest

from aios_services.llm.handlers import RawChunks


def stream(body: bytes) -> RawChunks:
    request = httpx2.Request("POST", "http://backend/v1/chat/completions")
    response = httpx2.Response(200, content=body, request=request)
    client = openai.AsyncOpenAI(api_key="x", base_url="http://backend/v1")
    return RawChunks(cast_to=dict, response=response, client=client)


async def test_events_become_dicts_until_done() -> None:
    body = (
        b": a comment\r\n\r\n"
        b'data: {"choices": [{"delta": {"content": "He"}}]}\r\n\r\n'
        b'event: ignored\ndata:{"choices": [{"delta": {"content": "llo"}}]}\n\n'
        b'data: {"choices": [],\ndata:  "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
        b"data: [DONE]\n\n"
        b'data: {"after": "done"}\n\n'
    )
    chunks = [c async for c in stream(body)]
    assert [c.get("choices") for c in chunks[:2]] == [
        [{"delta": {"content": "He"}}],
        [{"delta": {"content": "llo"}}],
    ]
    assert chunks[2]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    assert len(chunks) == 3  # nothing after [DONE]


async def test_an_error_event_raises_the_openai_error() -> None:
    body = b'data: {"choices": []}\n\ndata: {"error": {"message": "engine died"}}\n\n'
    with pytest.raises(openai.APIError, match="engine died"):
        [c async for c in stream(body)]
