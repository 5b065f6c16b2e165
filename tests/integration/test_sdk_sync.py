"""The synchronous SDK: the same calls blocking, typed errors, streaming, leaving a stream early."""

from __future__ import annotations

import asyncio

import pytest

from aios_sdk import NotFound
from aios_sdk.sync import AIOSSync
from tests.kernel import Kernel
from tests.servers import auth_for

MODEL = "sim-llama-8b"
HELLO = [{"role": "user", "content": "hello [sim:tokens=6]"}]


async def test_sync_twin(kernel: Kernel) -> None:
    def script() -> None:  # a plain script: runs in a thread, the kernel on this test's loop
        kw = {"url": kernel.nats_url, "token": auth_for(kernel.nats_url).token("agent-1"), "agent": "agent-1"}
        with AIOSSync.connect(namespace=kernel.ns.name, **kw) as aios:
            reply = aios.llm.chat(MODEL, HELLO)
            assert reply.content and reply.usage.completion_tokens == 6
            s = aios.llm.stream(MODEL, HELLO)
            assert "".join(s) == reply.content and s.reply is not None and s.reply.content == reply.content
            for _ in aios.llm.stream(MODEL, [{"role": "user", "content": "long [sim:tokens=400]"}]):
                break  # leaving early: the syscall is cancelled in the kernel, nothing hangs
            with pytest.raises(NotFound):
                aios.llm.chat("no-such-model", HELLO, timeout=10)
            assert aios.llm.chat(MODEL, HELLO).content == reply.content  # still usable

    await asyncio.to_thread(script)
