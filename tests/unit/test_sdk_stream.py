"""A stream's chunks reach the agent once each, in order, also when a run is sent again and streams
again from the start (its worker died)."""

from __future__ import annotations

from aios_schemas import ChatReply, StreamChunk, SyscallResult, Usage
from aios_sdk.client import ChatStream


async def test_chunks_sent_again_are_delivered_once() -> None:
    s = ChatStream()
    for seq, delta in [(0, "a"), (1, "b"), (0, "a"), (1, "b"), (2, "c")]:
        s._put(StreamChunk(id="stream-0001", seq=seq, delta=delta))
    reply = ChatReply(model="m", backend="b", content="abc", usage=Usage())
    s._put(SyscallResult.ok("stream-0001", reply))
    assert [d async for d in s] == ["a", "b", "c"]
    assert s.reply is not None and s.reply.content == "abc"
