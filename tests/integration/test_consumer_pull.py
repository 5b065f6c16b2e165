"""The consumer helper's long-lived pull on a real nats-server: few pull requests for many messages,
pulls that expire are renewed with nothing lost, and messages published while it is idle arrive at
once (no fetch loop to fall into)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import nats
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from pydantic import BaseModel

from aios_schemas import Namespace
from aios_services.runtime import Bus
from aios_services.runtime.consumer import Delivery, JsConsumer


class Item(BaseModel):
    n: int


async def test_pulls_are_few_renewed_on_expiry_and_lose_nothing(nats_url: str, nc: nats.NATS) -> None:
    name = f"PULL_{uuid.uuid4().hex[:8]}"
    subject = f"pulltest.{name}"
    conn = await nats.connect(nats_url)
    bus = Bus(conn, Namespace(""))
    await bus.ensure_stream(StreamConfig(name=name, subjects=[f"{subject}.>"]))
    consumer = JsConsumer(
        bus,
        stream=name,
        filter_subject=f"{subject}.>",
        config=ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=5, max_deliver=3),
        model=Item,
    )
    consumer.pull_expires_s, consumer.pull_heartbeat_s = 0.4, 0.1  # expire often, in test time
    await consumer.open()
    got: asyncio.Queue[int] = asyncio.Queue()

    async def handle(d: Delivery[Item]) -> None:
        got.put_nowait(d.value.n)

    pulls: list[Msg] = []
    renewed = asyncio.Event()

    async def count(msg: Msg) -> None:
        pulls.append(msg)
        if len(pulls) >= wanted[0]:
            renewed.set()

    wanted = [1 << 30]

    await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{name}.c", cb=count)
    await nc.flush()
    js = nc.jetstream()
    runner = asyncio.create_task(consumer.run(handle, ack_after=True, batch=lambda: 64))
    try:
        # One at a time, each waited for, as a sequential agent makes syscalls.
        for i in range(100):
            await js.publish(f"{subject}.x", Item(n=i).model_dump_json().encode())
            assert await asyncio.wait_for(got.get(), 5) == i
        # Idle across several expiries (the server ends each pull with a 408; a new one follows).
        expired = len(pulls)
        wanted[0] = expired + 3
        await asyncio.wait_for(renewed.wait(), 10)
        await js.publish(f"{subject}.x", Item(n=100).model_dump_json().encode())
        assert await asyncio.wait_for(got.get(), 5) == 100
        # 100 messages through a 64-message pull topped up at half: a handful of pull requests,
        # not one (or two) per message.
        assert expired <= 6, f"{expired} pull requests for 100 messages"
        # Every message acked (the last ack may still be on its way: it is fire-and-forget).
        await conn.flush()
        for _ in range(100):
            info = await js.consumer_info(name, "c")
            if info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.02)
        assert info.num_ack_pending == 0 and info.num_pending == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await conn.drain()
        await js.delete_stream(name)
