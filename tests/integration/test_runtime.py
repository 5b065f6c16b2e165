"""The service runtime on a real nats-server: validation at the boundary, typed errors, health,
idempotent stream/bucket creation, graceful drain."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.js.api import StreamConfig
from pydantic import BaseModel, ConfigDict

from aios_schemas import AiosError, Health, HealthQuery, Namespace, decode_reply
from aios_services.runtime import Bus, ServiceSettings, run_service


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    fail: str | None = None


async def echo(req: Echo) -> Echo:
    if req.fail == "typed":
        raise AiosError("conflict", "typed failure")
    if req.fail == "crash":
        raise RuntimeError("boom")
    await asyncio.sleep(0.05 if req.text == "slow" else 0)
    return req


@pytest.fixture
async def bus(nats_url: str, ns: Namespace) -> Bus:
    nc = await nats.connect(nats_url)
    b = Bus(nc, ns)
    await b.serve(ns.ctl("echo", "do"), Echo, echo)
    return b


async def request(nc: nats.NATS, subject: str, data: bytes) -> Echo:
    msg = await nc.request(subject, data, timeout=5)
    return decode_reply(msg.data, msg.headers, Echo)


async def test_bad_input_is_invalid_request_and_the_service_survives(bus: Bus, nc: nats.NATS) -> None:
    subject = bus.ns.ctl("echo", "do")
    for bad in (b"garbage", b"{}", b'{"text": "x", "extra": 1}'):
        with pytest.raises(AiosError) as info:
            await request(nc, subject, bad)
        assert info.value.code == "invalid_request"
    with pytest.raises(AiosError) as info:
        await request(nc, subject, b'{"text": "x", "fail": "typed"}')
    assert info.value.code == "conflict"
    with pytest.raises(AiosError) as info:
        await request(nc, subject, b'{"text": "x", "fail": "crash"}')
    assert info.value.code == "internal" and "boom" in info.value.message
    assert (await request(nc, subject, b'{"text": "still here"}')).text == "still here"
    await bus.drain(5)


async def test_requests_are_served_concurrently_and_each_answered(bus: Bus, nc: nats.NATS) -> None:
    subject = bus.ns.ctl("echo", "do")
    texts = [f"m{i}" if i % 3 else "slow" for i in range(60)]
    replies = await asyncio.gather(
        *(request(nc, subject, Echo(text=t).model_dump_json().encode()) for t in texts)
    )
    assert [r.text for r in replies] == texts
    await bus.drain(5)


async def test_streams_and_buckets_are_created_idempotently(bus: Bus) -> None:
    cfg = StreamConfig(name=bus.ns.syscalls_stream, subjects=[bus.ns.sys_all])
    await bus.ensure_stream(cfg)
    await bus.ensure_stream(cfg)
    kv1 = await bus.ensure_kv(bus.ns.results_bucket, ttl_s=60)
    await kv1.put("k", b"v")
    kv2 = await bus.ensure_kv(bus.ns.results_bucket, ttl_s=60)
    assert (await kv2.get("k")).value == b"v"
    await bus.drain(5)


async def test_run_service_answers_health_and_drains_on_stop(
    nats_url: str, ns: Namespace, nc: nats.NATS
) -> None:
    stop = asyncio.Event()
    settings = ServiceSettings(nats_url=nats_url, namespace=ns.name)  # type: ignore[call-arg]

    began = asyncio.Event()

    async def traced_echo(req: Echo) -> Echo:
        began.set()
        return await echo(req)

    async def start(bus: Bus, stack: object) -> None:
        await bus.serve(ns.ctl("echo", "do"), Echo, traced_echo)
        return None

    task = asyncio.create_task(run_service("echo", settings, start, stop=stop))  # type: ignore[arg-type]
    for _ in range(100):
        try:
            msg = await nc.request(
                ns.ctl("echo", "health"), HealthQuery().model_dump_json().encode(), timeout=0.2
            )
            break
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            await asyncio.sleep(0.02)
    health = decode_reply(msg.data, msg.headers, Health)
    assert health.service == "echo" and health.status == "ok"
    slow = asyncio.create_task(request(nc, ns.ctl("echo", "do"), b'{"text": "slow"}'))
    await asyncio.wait_for(began.wait(), 5)
    stop.set()
    assert (await slow).text == "slow"  # an in-flight request finishes during the drain
    await asyncio.wait_for(task, 10)
