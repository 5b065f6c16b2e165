"""Which syscalls admission answers without looking for a stored result (admission.FRESH_S)."""

from __future__ import annotations

import time

from nats.aio.msg import Msg

from aios_schemas import LlmChat, Syscall, new_id
from aios_schemas.ids import id_time
from aios_services.runtime.consumer import Delivery
from aios_services.scheduler.admission import CLOCK_SKEW_S, FRESH_S, _from_the_future, _surely_new
from tests.integration.test_admission import v7_id


def delivery(
    call: Syscall, *, stored: float, delivered: int = 1, msg_id: str | None = "same"
) -> Delivery[Syscall]:
    # The ack subject carries the delivery count and the time the stream stored the message (ns).
    reply = f"$JS.ACK.AIOS_SYSCALLS.scheduler.{delivered}.7.7.{int(stored * 1e9)}.0"
    headers = {"Nats-Msg-Id": call.id if msg_id == "same" else msg_id} if msg_id else None
    return Delivery(call, Msg(_client=None, subject="s", reply=reply, data=b"", headers=headers))  # type: ignore[arg-type]


def call(sid: str) -> Syscall:
    return Syscall(id=sid, agent="a", payload=LlmChat(model="m", messages=[{"role": "user", "content": "x"}]))


def test_id_time_reads_uuid7_only() -> None:
    now = time.time()
    t = id_time(new_id())
    assert t is not None and abs(t - now) < 1
    assert id_time("0190a5d2-5c3e-4f1a-9b2c-3d4e5f6a7b8c") is None  # a UUIDv4
    assert id_time("my-own-id-123") is None


def test_fresh_first_deliveries_skip_the_lookup() -> None:
    now = time.time()
    c = call(v7_id(now - 1))
    assert _surely_new(c, delivery(c, stored=now))
    got = delivery(c, stored=now).stored_at
    assert got is not None and abs(got - now) < 1e-3
    # Anything else is looked up: a redelivery, another Msg-Id (or none), an old id, a custom id.
    assert not _surely_new(c, delivery(c, stored=now, delivered=2))
    assert not _surely_new(c, delivery(c, stored=now, msg_id="other"))
    assert not _surely_new(c, delivery(c, stored=now, msg_id=None))
    old = call(v7_id(now - FRESH_S - 5))
    assert not _surely_new(old, delivery(old, stored=now))
    custom = call("my-own-id-123")
    assert not _surely_new(custom, delivery(custom, stored=now))
    assert not _surely_new(c, None)


def test_ids_from_far_ahead_are_refused() -> None:
    now = time.time()
    near = call(v7_id(now + CLOCK_SKEW_S - 5))
    assert _from_the_future(near, delivery(near, stored=now)) is None
    far = call(v7_id(now + CLOCK_SKEW_S + 5))
    err = _from_the_future(far, delivery(far, stored=now))
    assert err is not None and err.code == "invalid_request" and not err.retryable
    assert _from_the_future(call("my-own-id-123"), delivery(call("my-own-id-123"), stored=now)) is None
