"""A connection that says "connected" but no longer reads: one malformed header block, sent raw to
nats-server, used to end nats-py's read loop for good. Services shrug it off (the header guard),
the watchdog revives a connection whose loop ended anyway, and health says "degraded" meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import unquote, urlparse

import nats
from pydantic import BaseModel, ConfigDict

from aios_schemas import Health, HealthQuery, Namespace, decode_reply, encode
from aios_services.runtime import Bus, ServiceSettings, run_service
from aios_services.runtime.bus import connect, reading
from tests.kernel import Kernel

MODEL = "sim-llama-8b"
BAD_HEADERS = b"NATS/1.0 \xff\xfe\xfd\r\n\r\n"


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


async def echo(req: Echo) -> Echo:
    return req


async def send_raw(
    nats_url: str, subject: str, headers: bytes, payload: bytes = b"{}", reply: str = ""
) -> None:
    """Publish with a header block nats-py would never send, over a bare TCP connection."""
    u = urlparse(nats_url)
    r, w = await asyncio.open_connection(u.hostname, u.port)
    try:
        await r.readline()  # INFO
        opts = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        if u.username:  # the kernel's credentials, as in the URL
            opts |= {"user": unquote(u.username), "pass": unquote(u.password or "")}
        w.write(b"CONNECT " + json.dumps(opts).encode() + b"\r\n")
        head = f"HPUB {subject} {reply} " if reply else f"HPUB {subject} "
        w.write(head.encode() + b"%d %d\r\n" % (len(headers), len(headers) + len(payload)))
        w.write(headers + payload + b"\r\nPING\r\n")
        await w.drain()
        line = await asyncio.wait_for(r.readline(), 5)
        assert line == b"PONG\r\n", line  # the server took it
    finally:
        w.close()


async def ask(nc: nats.NATS, subject: str, text: str, timeout: float = 1.0) -> str | None:
    try:
        msg = await nc.request(subject, Echo(text=text).model_dump_json().encode(), timeout=timeout)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None
    return decode_reply(msg.data, msg.headers, Echo).text


async def test_a_malformed_header_block_does_not_deafen_a_guarded_connection(
    nats_url: str, ns: Namespace, nc: nats.NATS
) -> None:
    bus = Bus(await connect(nats_url, "guarded"), ns)
    subject = ns.ctl("echo", "do")
    await bus.serve(subject, Echo, echo)
    await bus.nc.flush()
    await send_raw(nats_url, subject, BAD_HEADERS, reply="_INBOX.nobody")
    assert await ask(nc, subject, "still here", timeout=5) == "still here"
    assert reading(bus.nc) and bus.problems() == []
    await bus.drain(5)


async def test_the_watchdog_revives_a_connection_whose_read_loop_ended(
    nats_url: str, ns: Namespace, nc: nats.NATS
) -> None:
    # A bare nats-py client (no header guard): the malformed block ends its read loop.
    bus = Bus(await nats.connect(nats_url), ns)
    subject = ns.ctl("echo", "do")
    await bus.serve(subject, Echo, echo)
    await bus.nc.flush()
    assert await ask(nc, subject, "before") == "before"
    watchdog = asyncio.create_task(bus.watch_connection(interval_s=0.2))
    try:
        hit = time.monotonic()
        await send_raw(nats_url, subject, BAD_HEADERS)
        deadline = time.monotonic() + 20
        saw_wedged = False
        while await ask(nc, subject, "after", timeout=0.5) != "after":
            saw_wedged = saw_wedged or any("wedged" in p for p in bus.problems())
            assert time.monotonic() < deadline, "the connection was not revived"
        recovered_s = time.monotonic() - hit
        assert bus.forced_reconnects >= 1 and reading(bus.nc)
        print(f"wedged connection answering again {recovered_s:.2f} s after the malformed header")
    finally:
        watchdog.cancel()
    await bus.drain(5)


async def test_health_is_degraded_while_a_check_fails(nats_url: str, ns: Namespace, nc: nats.NATS) -> None:
    stop = asyncio.Event()
    settings = ServiceSettings(nats_url=nats_url, namespace=ns.name)  # type: ignore[call-arg]
    broken: list[str] = []

    async def start(bus: Bus, stack: object) -> None:
        bus.add_check("worker", lambda: broken[0] if broken else None)

    task = asyncio.create_task(run_service("probe", settings, start, stop=stop))  # type: ignore[arg-type]

    async def health() -> Health | None:
        try:
            msg = await nc.request(ns.ctl("probe", "health"), encode(HealthQuery()), timeout=0.5)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return None
        return decode_reply(msg.data, msg.headers, Health)

    deadline = time.monotonic() + 10
    while (h := await health()) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert h.status == "ok" and "problems" not in h.details
    broken.append("stuck")
    h = await health()
    assert h is not None and h.status == "degraded" and h.details["problems"] == ["worker: stuck"]
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_the_kernel_shrugs_off_malformed_headers_everywhere(kernel: Kernel, nc: nats.NATS) -> None:
    """Sent to the services' health, exec and control subjects, and stored in the syscall stream
    (then fetched by the scheduler): syscalls are still answered, health is still ok."""
    ns = kernel.ns
    for subject in (
        ns.ctl("scheduler", "health"),
        ns.ctl("llm", "health"),
        ns.exec("llm"),
        ns.ctl("llm", "control"),
        ns.sys("llm.chat", "agent-1"),
    ):
        await send_raw(kernel.nats_url, subject, BAD_HEADERS, reply="_INBOX.nobody")
    async with kernel.connect() as aios:
        reply = await aios.llm.chat(MODEL, [{"role": "user", "content": "still there?"}], timeout=20)
    assert reply.content
    for service in ("scheduler", "llm"):
        msg = await nc.request(ns.ctl(service, "health"), encode(HealthQuery()), timeout=5)
        assert decode_reply(msg.data, msg.headers, Health).status == "ok", service
