"""Poison on a real bus: messages a service cannot parse (JSON nested 1,000 deep, invalid UTF-8,
50,000 invalid entries) are answered at most once, terminated, never redelivered, and do not hold
up the syscalls behind them; request/reply services answer them with a bounded invalid_request."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import nats
import pytest
from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict

from aios_schemas import AiosError, SyscallResult, decode_reply, new_id
from aios_schemas.wire import MAX_LISTED_ERRORS
from aios_services.runtime import Bus
from aios_services.scheduler.streams import DURABLE
from tests.kernel import Kernel

MODEL = "sim-llama-8b"
DEEP = 1000


def envelope(k: Kernel, sid: str, payload: str) -> bytes:
    head = json.dumps({"id": sid, "agent": "agent-1", "token": k.token})[:-1]
    return f'{head}, "payload": {payload}}}'.encode()


def poisons(k: Kernel) -> dict[str, bytes]:
    deep, utf8, many = new_id(), new_id(), new_id()
    messages = [{"role": "nobody", "content": 1}] * 25_000  # two errors each: 50,000
    return {
        deep: envelope(k, deep, "[" * DEEP + "]" * DEEP),
        utf8: envelope(k, utf8, '{"kind": "llm.chat", "model": "\xff\xfe"}').replace(
            "\xff\xfe".encode(), b"\xff\xfe"
        ),
        many: envelope(k, many, json.dumps({"kind": "llm.chat", "model": MODEL, "messages": messages})),
    }


async def test_poison_syscalls_are_answered_at_most_once_and_never_redelivered(
    kernel: Kernel, nc: nats.NATS
) -> None:
    answers: Counter[str] = Counter()
    results: dict[str, SyscallResult] = {}

    async def on_result(msg: Msg) -> None:
        res = decode_reply(msg.data, msg.headers, SyscallResult)
        answers[res.id] += 1
        results[res.id] = res

    await nc.subscribe(kernel.ns.result("agent-1", "*"), cb=on_result)
    js = nc.jetstream()
    bad = poisons(kernel)
    assert all(len(b) < nc.max_payload for b in bad.values())
    for _ in range(20):  # many of them: none may hold up what comes after
        for sid, body in poisons(kernel).items():
            await js.publish(kernel.ns.sys("llm.chat", "agent-1"), body, headers={"Nats-Msg-Id": sid})
    for sid, body in bad.items():
        await js.publish(kernel.ns.sys("llm.chat", "agent-1"), body, headers={"Nats-Msg-Id": sid})

    async with kernel.connect() as aios:
        reply = await aios.llm.chat(MODEL, [{"role": "user", "content": "still here?"}], timeout=20)
    assert reply.content

    # Everything published before that call was settled for good: the stream is a work queue, so
    # a message terminated (or acked) leaves it and can never be delivered again.
    deadline = time.monotonic() + 10
    while True:
        info = await js.consumer_info(kernel.ns.syscalls_stream, DURABLE)
        stream = await js.stream_info(kernel.ns.syscalls_stream)
        if info.num_ack_pending == 0 and info.num_pending == 0 and stream.state.messages == 0:
            break
        assert time.monotonic() < deadline, (info, stream.state)
        await asyncio.sleep(0.05)
    assert info.num_redelivered == 0

    assert all(n <= 1 for n in answers.values()), answers
    many = list(bad)[2]
    assert answers[many] == 1, "a message with a valid id and too many errors is answered"
    err = results[many].error
    assert err is not None and err.code == "invalid_request"
    assert len(err.details["errors"]) == MAX_LISTED_ERRORS  # type: ignore[arg-type]
    assert err.details["errors_omitted"] == 50_000 - MAX_LISTED_ERRORS
    assert len(err.message) <= 600
    utf8 = list(bad)[1]
    assert answers[utf8] == 1, "a body that is not UTF-8 is answered under its Nats-Msg-Id"


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


async def test_request_reply_answers_poison_with_a_bounded_invalid_request(
    nats_url: str, nc: nats.NATS, kernel: Kernel
) -> None:
    bus = Bus(await nats.connect(nats_url), kernel.ns)

    async def echo(req: Echo) -> Echo:
        if req.text == "huge":  # a reply larger than the server takes
            return Echo(text="x" * (bus.nc.max_payload + 10))
        if req.text == "recurse":
            return await echo(req)
        return req

    subject = kernel.ns.ctl("echo", "do")
    await bus.serve(subject, Echo, echo)
    await bus.nc.flush()  # the subscription is on the server before another connection asks
    deep = b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}"
    many = json.dumps({f"k{i}": i for i in range(50_000)}).encode()
    for body in (deep, b'{"text": "\xff\xfe"}', many):
        msg = await nc.request(subject, body, timeout=5)
        assert len(msg.data) < 20_000
        with pytest.raises(AiosError) as info:
            decode_reply(msg.data, msg.headers, Echo)
        assert info.value.code == "invalid_request"
    for text in ("huge", "recurse"):
        msg = await nc.request(subject, json.dumps({"text": text}).encode(), timeout=5)
        assert len(msg.data) < 20_000
        with pytest.raises(AiosError) as info:
            decode_reply(msg.data, msg.headers, Echo)
        assert info.value.code == "internal"
    msg = await nc.request(subject, b'{"text": "fine"}', timeout=5)
    assert decode_reply(msg.data, msg.headers, Echo).text == "fine"
    await bus.drain(5)


async def test_deadlines_are_checked_at_the_boundary(kernel: Kernel, nc: nats.NATS) -> None:
    """NaN, Infinity and 0 are invalid_request; a past deadline is deadline_exceeded; none is the
    scheduler's default (the call runs)."""
    chat = json.dumps({"kind": "llm.chat", "model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    cases = {"NaN": "invalid_request", "Infinity": "invalid_request", "0": "invalid_request"}
    cases |= {"-Infinity": "invalid_request", '"soon"': "invalid_request", "5": "deadline_exceeded"}
    cases |= {"null": "ok"}
    js = nc.jetstream()
    for deadline, expected in cases.items():
        sid = new_id()
        sub = await nc.subscribe(kernel.ns.result("agent-1", sid))
        body = envelope(kernel, sid, chat)[:-1] + f', "deadline": {deadline}}}'.encode()
        await js.publish(kernel.ns.sys("llm.chat", "agent-1"), body, headers={"Nats-Msg-Id": sid})
        msg = await sub.next_msg(timeout=10)
        res = decode_reply(msg.data, msg.headers, SyscallResult)
        got = res.error.code if res.error else res.status
        assert got == expected, (deadline, res)
        if res.error and expected == "invalid_request":
            assert "deadline" in res.error.message
        await sub.unsubscribe()


async def test_a_body_with_no_id_to_read_is_answered_under_its_msg_id(kernel: Kernel, nc: nats.NATS) -> None:
    """Not JSON, not UTF-8, nested too deep, no `id`: the caller still hears an invalid_request, under
    the `Nats-Msg-Id` it published with (the id it awaits); a readable body id comes first."""
    js = nc.jetstream()
    bodies = [b"\xff\xfe not json", b"[" * DEEP + b"]" * DEEP, b'{"agent": "agent-1"}', b'{"id": "short"}']
    for body in bodies:
        sid = new_id()
        sub = await nc.subscribe(kernel.ns.result("agent-1", sid))
        await js.publish(kernel.ns.sys("llm.chat", "agent-1"), body, headers={"Nats-Msg-Id": sid})
        res = decode_reply((await sub.next_msg(timeout=10)).data, None, SyscallResult)
        assert res.id == sid and res.error is not None and res.error.code == "invalid_request", (body, res)
        await sub.unsubscribe()

    body_id, header_id = new_id(), new_id()
    sub = await nc.subscribe(kernel.ns.result("agent-1", "*"))
    body = envelope(kernel, body_id, '{"kind": "llm.chat"}')
    await js.publish(kernel.ns.sys("llm.chat", "agent-1"), body, headers={"Nats-Msg-Id": header_id})
    msg = await sub.next_msg(timeout=10)
    assert msg.subject == kernel.ns.result("agent-1", body_id)
    await sub.unsubscribe()
