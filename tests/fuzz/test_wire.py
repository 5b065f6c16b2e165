"""Fuzzing below the JSON: what a client in any language (or a broken one) can put on the wire.
Header blocks nats-py would never write (an undecodable status line, lines with no colon, invalid
UTF-8, `Nats-Msg-Id` twice with different values, or 50 kB long), written over a raw socket in the
NATS protocol; payloads beyond the server's max_payload (refused by the client, or by the server,
which drops that connection and stays up); one syscall id sent again with another body (within
JetStream's duplicate window: dropped; past it: `conflict`, the stored result untouched)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

import nats
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import ERROR_CODES, MemoryListReply, SyscallResult, new_id
from tests.fuzz.conftest import AGENT, ANSWER_BOUND_S, TRIED, AgentLink, assert_kernel_intact
from tests.fuzz.strategies import shown
from tests.kernel import Kernel
from tests.servers import auth_for

pytestmark = pytest.mark.fuzz

HEADER_EXAMPLES = 150
DUPLICATE_EXAMPLES = 60


class RawConn:
    """A NATS client written by hand, as agent-1: CONNECT, then raw PUB/HPUB lines; it reads only
    what the server says back (`PONG`, `-ERR`, its close)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: dict[str, object]):
        self.reader, self.writer, self.info = reader, writer, info

    @classmethod
    async def open(cls, k: Kernel) -> RawConn:
        where = urlsplit(k.nats_url)
        assert where.hostname and where.port
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        info_line = await asyncio.wait_for(reader.readline(), ANSWER_BOUND_S)
        assert info_line.startswith(b"INFO "), info_line
        connect = {
            "user": AGENT,
            "pass": auth_for(k.nats_url).token(AGENT),
            "headers": True,
            "no_responders": True,
            "verbose": False,
            "pedantic": False,
            "protocol": 1,
            "lang": "raw",
            "version": "0",
        }
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        conn = cls(reader, writer, json.loads(info_line[5:]))
        said = await conn.until_pong()
        assert said == [], said
        return conn

    async def until_pong(self) -> list[bytes] | None:
        """What the server said (-ERR lines) up to its PONG; None if it closed the connection."""
        said: list[bytes] = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), ANSWER_BOUND_S)
            if not line:
                return None
            if line.startswith(b"PONG"):
                return said
            if line.startswith(b"PING"):
                self.writer.write(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                said.append(line.strip())

    async def hpub(self, subject: str, reply: str, headers: bytes, payload: bytes) -> list[bytes] | None:
        self.writer.write(
            f"HPUB {subject} {reply} {len(headers)} {len(headers) + len(payload)}\r\n".encode()
            + headers
            + payload
            + b"\r\nPING\r\n"
        )
        await self.writer.drain()
        return await self.until_pong()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # (the server may have closed it first)
            await self.writer.wait_closed()


def invalid_syscall(sid: str) -> bytes:
    """A body with a readable id that is no syscall (no payload): answered `invalid_request` under it."""
    return json.dumps({"id": sid, "agent": AGENT}).encode()


# --- header blocks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeaderProbe:
    status: bytes
    lines: tuple[bytes, ...]  # "{id}" in a line becomes the probe's syscall id

    def block(self, sid: str) -> bytes:
        body = b"".join(line.replace(b"{id}", sid.encode()) + b"\r\n" for line in self.lines)
        return self.status + b"\r\n" + body + b"\r\n"

    def __repr__(self) -> str:
        return f"HeaderProbe({self.status!r}, {[shown(line, 80) for line in self.lines]})"


def header_lines() -> st.SearchStrategy[bytes]:
    printable = st.binary(min_size=1, max_size=20).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n", b"") or b"x"
    )
    return st.one_of(
        st.just(b"Nats-Msg-Id: {id}"),
        st.just(b"Nats-Msg-Id: " + b"z" * 50_000),
        st.sampled_from([b"Nats-Msg-Id: not an id", b"Nats-Msg-Id:", b"Nats-Msg-Id: \xff\xfe{id}"]),
        st.sampled_from([b"no colon at all", b": no key", b"traceparent: \xff\xfe", b"Aios-Error: 1"]),
        st.sampled_from([b"Nats-Expected-Stream: nope", b"Nats-Expected-Last-Sequence: x", b"Nats-TTL: -1"]),
        st.tuples(printable, printable).map(lambda kv: kv[0].replace(b":", b"") + b": " + kv[1]),
    )


@st.composite
def header_probes(draw: st.DrawFn) -> HeaderProbe:
    status = draw(
        st.sampled_from(
            [b"NATS/1.0", b"NATS/1.0 \xff\xfe\xfd", b"NATS/1.0 503", b"NATS/9.9", b"HTTP/1.1 200 OK"]
        )
    )
    return HeaderProbe(status, tuple(draw(st.lists(header_lines(), max_size=4))))


async def test_malformed_header_blocks_never_silence_the_kernel(
    fuzz_kernel: Kernel, agent: AgentLink, admin: NATS
) -> None:
    """Every block is either refused by the server (-ERR, or the connection closed) or stored, then
    refused by JetStream or accepted; an accepted one is answered under its body's id."""
    acks: dict[str, asyncio.Future[Msg]] = {}
    loop = asyncio.get_running_loop()

    async def on_ack(msg: Msg) -> None:
        fut = acks.get(msg.subject)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    inbox = f"_INBOX.{AGENT}.fuzz-{new_id()}"
    sub = await agent.nc.subscribe(f"{inbox}.*", cb=on_ack)
    await agent.nc.flush()
    raw = [await RawConn.open(fuzz_kernel)]
    tally: Counter[str] = Counter()
    started, before = time.monotonic(), TRIED["headers"]

    async def send(probe: HeaderProbe) -> None:
        TRIED["headers"] += 1
        sid = new_id()
        reply = f"{inbox}.{sid}"
        acks[reply] = loop.create_future()
        said = await raw[0].hpub(
            fuzz_kernel.ns.sys("memory.list", AGENT), reply, probe.block(sid), invalid_syscall(sid)
        )
        if said is None or said:  # the server refused it (and may have closed this connection)
            acks.pop(reply)
            tally["refused by the server"] += 1
            if said is None:
                await raw[0].close()
                raw[0] = await RawConn.open(fuzz_kernel)
            return
        try:  # (the PubAck comes on another connection: it may be behind the PONG)
            ack = json.loads((await asyncio.wait_for(acks[reply], ANSWER_BOUND_S)).data)
        finally:
            acks.pop(reply)
        if "error" in ack:
            tally[f"refused by JetStream ({ack['error'].get('err_code')})"] += 1
            return
        assert ack.get("stream") == fuzz_kernel.ns.syscalls_stream, ack
        if ack.get("duplicate"):
            tally["dropped as a duplicate"] += 1
            return
        res = await agent.result(sid)
        assert isinstance(res, SyscallResult), f"no typed answer to {probe!r}: {res!r}"
        assert res.error is not None and res.error.code == "invalid_request", res
        tally["answered invalid_request"] += 1

    @settings(
        max_examples=HEADER_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(probe=header_probes())
    def fuzz(probe: HeaderProbe) -> None:
        asyncio.run_coroutine_threadsafe(send(probe), loop).result()

    try:
        await asyncio.to_thread(fuzz)
    finally:
        await raw[0].close()
        await sub.unsubscribe()
    tried = TRIED["headers"] - before
    print(f"\nheaders: {tried} header blocks in {time.monotonic() - started:.1f}s: {dict(tally)}")
    assert tried >= HEADER_EXAMPLES
    await assert_kernel_intact(admin, fuzz_kernel)


# --- beyond max_payload ---------------------------------------------------------------------------
async def test_payloads_beyond_max_payload_are_refused_and_the_server_stays_up(
    fuzz_kernel: Kernel, agent: AgentLink, admin: NATS
) -> None:
    max_payload = agent.nc.max_payload
    subject = fuzz_kernel.ns.sys("llm.chat", AGENT)
    for extra in (1, 1_000, max_payload):
        TRIED["oversized"] += 1
        with pytest.raises(nats.errors.MaxPayloadError):  # the client refuses
            await agent.nc.request(subject, b"x" * (max_payload + extra), timeout=ANSWER_BOUND_S)

        TRIED["oversized"] += 1  # a client that does not: the server drops its connection
        raw = await RawConn.open(fuzz_kernel)
        assert raw.info["max_payload"] == max_payload
        size = max_payload + extra
        raw.writer.write(f"PUB {subject} {size}\r\n".encode())
        try:
            raw.writer.write(b"x" * size + b"\r\nPING\r\n")
            await raw.writer.drain()
            said = await raw.until_pong()
        except ConnectionError:
            said = None
        assert said is None or any(b"Maximum Payload" in line for line in said), said
        await raw.close()
    assert agent.nc.is_connected  # the other connections of the agent were not touched
    await assert_kernel_intact(admin, fuzz_kernel)


# --- one id, two bodies ----------------------------------------------------------------------------
def memory_list(sid: str, limit: int) -> bytes:
    return json.dumps(
        {"id": sid, "agent": AGENT, "payload": {"kind": "memory.list", "limit": limit}}
    ).encode()


async def test_an_id_sent_again_with_another_body_is_never_run_twice(
    fuzz_kernel: Kernel, agent: AgentLink, admin: NATS
) -> None:
    """A (read-only) `memory.list` runs under id X. The same X again with another body: with
    `Nats-Msg-Id` X, JetStream drops it (a duplicate PubAck, no second answer); without, the
    scheduler answers `conflict` and keeps the stored result; the same body again is the stored result
    (a replay), never a second run."""
    tally: Counter[str] = Counter()
    loop = asyncio.get_running_loop()
    subject = fuzz_kernel.ns.sys("memory.list", AGENT)
    before = TRIED["duplicates"]

    async def publish(body: bytes, headers: dict[str, str] | None) -> dict[str, object]:
        TRIED["duplicates"] += 1
        ack = await agent.nc.request(subject, body, headers=headers, timeout=ANSWER_BOUND_S)
        parsed: dict[str, object] = json.loads(ack.data)
        assert parsed.get("stream") == fuzz_kernel.ns.syscalls_stream, parsed
        return parsed

    async def answers(sid: str, n: int) -> list[SyscallResult]:
        deadline = time.monotonic() + ANSWER_BOUND_S
        while len(agent.results.get(sid, [])) < n:
            assert time.monotonic() < deadline, f"{n} answers expected under {sid}: {agent.results.get(sid)}"
            await asyncio.sleep(0.01)
        got = agent.results[sid]
        assert all(isinstance(r, SyscallResult) for r in got), got
        return [r for r in got if isinstance(r, SyscallResult)]

    async def send(first: int, second: int, with_header: bool) -> None:
        sid = new_id()
        await publish(memory_list(sid, first), {"Nats-Msg-Id": sid})
        (done,) = await answers(sid, 1)
        assert done.status == "ok" and isinstance(done.result, MemoryListReply), done
        ack = await publish(memory_list(sid, second), {"Nats-Msg-Id": sid} if with_header else None)
        if with_header:
            assert ack.get("duplicate") is True, ack
            tally["dropped as a duplicate"] += 1
        else:
            (_, again) = await answers(sid, 2)
            assert again.error is not None and again.error.code == "conflict", again
            tally["conflict"] += 1
        await publish(memory_list(sid, first), None)  # the first body again: its stored result
        replayed = (await answers(sid, 2 if with_header else 3))[-1]
        assert replayed.status == "ok" and replayed.result == done.result, replayed
        got = {r.error.code for r in agent.results[sid] if isinstance(r, SyscallResult) and r.error}
        assert got <= set(ERROR_CODES)

    @settings(
        max_examples=DUPLICATE_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(
        limits=st.lists(st.integers(1, 1000), min_size=2, max_size=2, unique=True), with_header=st.booleans()
    )
    def fuzz(limits: list[int], with_header: bool) -> None:
        asyncio.run_coroutine_threadsafe(send(limits[0], limits[1], with_header), loop).result()

    await asyncio.to_thread(fuzz)
    tried = TRIED["duplicates"] - before
    print(f"\nduplicates: {tried} payloads: {dict(tally)}")
    assert tried >= 3 * DUPLICATE_EXAMPLES
    await assert_kernel_intact(admin, fuzz_kernel)
