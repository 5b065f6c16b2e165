"""The scheduler's durable consumer (or its whole stream) deleted under a running scheduler: the
consumer helper notices on its next fetch, creates it again, and syscalls are answered."""

from __future__ import annotations

import asyncio
import time

import nats
from nats.js.errors import NotFoundError

from aios_services.scheduler.streams import DURABLE
from tests.kernel import Kernel

MODEL = "sim-llama-8b"
HELLO = [{"role": "user", "content": "hello"}]


async def until_exists(js: nats.js.JetStreamContext, stream: str, durable: str) -> float:
    """Seconds until the consumer exists again (polled, with a deadline)."""
    start = time.monotonic()
    while True:
        try:
            await js.consumer_info(stream, durable)
            return time.monotonic() - start
        except NotFoundError:
            assert time.monotonic() - start < 15, "the consumer was not re-created"
            await asyncio.sleep(0.05)


async def test_a_deleted_consumer_is_created_again(kernel: Kernel, nc: nats.NATS) -> None:
    js = nc.jetstream()
    async with kernel.connect() as aios:
        assert (await aios.llm.chat(MODEL, HELLO, timeout=20)).content
        assert await js.delete_consumer(kernel.ns.syscalls_stream, DURABLE)
        took = await until_exists(js, kernel.ns.syscalls_stream, DURABLE)
        assert (await aios.llm.chat(MODEL, HELLO, timeout=20)).content
    print(f"consumer re-created {took:.2f} s after it was deleted")


async def test_a_deleted_stream_is_created_again(kernel: Kernel, nc: nats.NATS) -> None:
    js = nc.jetstream()
    async with kernel.connect() as aios:
        assert (await aios.llm.chat(MODEL, HELLO, timeout=20)).content
        assert await js.delete_stream(kernel.ns.syscalls_stream)
        took = await until_exists(js, kernel.ns.syscalls_stream, DURABLE)
        assert (await aios.llm.chat(MODEL, HELLO, timeout=20)).content
    print(f"stream and consumer re-created {took:.2f} s after the stream was deleted")
