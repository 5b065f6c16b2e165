"""A recorder started before the scheduler waits for the events stream (the scheduler creates it)
instead of failing its start; it gives up, saying why, after its bound."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from aios_schemas import Namespace
from aios_services.recorder.main import wait_for_stream
from aios_services.runtime import Bus
from aios_services.scheduler import streams


async def test_the_recorder_waits_for_the_events_stream(nats_url: str) -> None:
    ns = Namespace("t" + uuid.uuid4().hex[:12])
    bus = await Bus.open(nats_url, "test-recorder-start", ns)
    try:
        with pytest.raises(RuntimeError, match="the scheduler creates it"):
            await wait_for_stream(bus, ns.events_stream, 0.3)
        waiting = asyncio.create_task(wait_for_stream(bus, ns.events_stream, 30))
        done, _ = await asyncio.wait({waiting}, timeout=0.5)
        assert not done  # no stream yet: still waiting, not failed
        await bus.ensure_stream(streams.events_stream(ns))  # the scheduler starts
        await asyncio.wait_for(waiting, 10)
    finally:
        await bus.nc.close()
