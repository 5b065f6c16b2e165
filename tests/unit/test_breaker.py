"""The circuit breaker in virtual time (the clock is passed in): a backend that dies with calls in
flight is one failure event, the cooldown is bounded, and a probe goes through when it ends."""

from __future__ import annotations

import asyncio

from aios_schemas import BackendEntry, ExecReply
from aios_services.scheduler.breaker import CircuitBreaker
from tests.unit.test_scheduler_core import FakeExecutor, Harness, fail_reply


def test_calls_in_flight_failing_together_are_one_event() -> None:
    b = CircuitBreaker(threshold=3, cooldown_s=0.5, max_cooldown_s=5.0)
    running = {f"c{i}": i * 0.1 for i in range(8)}  # 8 calls sent over 0.7 s
    for call, sent in running.items():
        b.on_dispatch(sent, call)
    # The backend dies at t=1.0: the 8 fail within 10 ms (connection reset or refused).
    for i, (call, sent) in enumerate(running.items()):
        b.on_failure(1.0 + i * 0.001, call, sent, hard=True)
    assert b.opened == 1 and b.current_cooldown_s == 0.5, "one event: not a cooldown of 0.5 * 2**7"
    assert b.state(1.49) == "open" and not b.allows(1.49)
    assert b.reopens_at() == 1.5 and b.state(1.5) == "half_open" and b.allows(1.5)
    # Back after 0.2 s: the probe sent as soon as the cooldown ends succeeds and closes it.
    b.on_dispatch(1.5, "probe")
    assert not b.allows(1.5), "one probe at a time"
    b.on_success(1.52, "probe", 1.5)
    assert b.state(1.52) == "closed" and b.allows(1.52)


def test_a_failing_probe_doubles_the_cooldown_up_to_its_bound() -> None:
    b = CircuitBreaker(threshold=1, cooldown_s=1.0, max_cooldown_s=5.0)
    b.on_dispatch(0.0, "c0")
    b.on_failure(0.1, "c0", 0.0)
    now, cooldowns = 0.1, []
    for i in range(6):
        now = b.reopens_at() or now
        assert b.state(now) == "half_open"
        b.on_dispatch(now, f"p{i}")
        b.on_failure(now + 0.01, f"p{i}", now, hard=True)
        cooldowns.append(b.current_cooldown_s)
    assert cooldowns == [2.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    assert b.state(b.reopens_at() or 0) == "half_open"  # the backend is never out for good


def test_late_answers_of_calls_sent_before_a_change_do_not_move_it() -> None:
    b = CircuitBreaker(threshold=2, cooldown_s=1.0)
    b.on_dispatch(0.0, "old1")
    b.on_dispatch(0.0, "old2")
    b.on_dispatch(0.0, "old3")
    b.on_failure(0.5, "old1", 0.0, hard=True)  # opens
    b.on_success(0.6, "old2", 0.0)  # finished just before the backend died: not evidence
    assert b.state(0.6) == "open"
    b.on_dispatch(1.5, "probe")
    b.on_success(1.6, "probe", 1.5)
    assert b.state(1.6) == "closed"
    b.on_failure(1.7, "old3", 0.0)  # sent before it closed: part of the old event
    b.on_dispatch(1.8, "new")
    b.on_failure(1.9, "new", 1.8)  # a fresh failure counts...
    assert b.state(1.9) == "closed"  # ...toward the threshold of 2


def test_a_probe_that_says_nothing_lets_another_probe_through() -> None:
    b = CircuitBreaker(threshold=1, cooldown_s=1.0)
    b.on_failure(0.0, "c", 0.0, hard=True)
    b.on_dispatch(1.0, "probe")
    assert not b.allows(1.1)
    b.on_inconclusive("probe")  # cancelled by its agent, or its deadline passed
    assert b.allows(1.1)


async def test_a_dead_lane_comes_back_one_cooldown_after_its_calls_failed() -> None:
    """Dispatch with a fake worker: 4 calls in flight fail at once on the only lane; the queued
    fifth is dispatched as the probe when the (short) cooldown ends, and succeeds."""
    loop = asyncio.get_running_loop()
    gates: list[asyncio.Future[ExecReply]] = [loop.create_future() for _ in range(4)]
    ex = FakeExecutor(script=list(gates))
    h = Harness(ex, BackendEntry(name="a", slots=4))
    breaker = h.group.backends["a"].breaker
    breaker.threshold, breaker.cooldown_s = 3, 0.05
    ids = await h.submit(5)
    await h.d.dispatch(h.group)
    await asyncio.sleep(0)  # the started runs reach the executor
    assert len(h.group.backends["a"].running) == 4
    for gate, sid in zip(gates, ids, strict=False):
        gate.set_result(fail_reply(sid, "backend_unavailable"))
    await h.until_done(5)
    assert breaker.opened == 1 and breaker.state(loop.time()) == "closed"
    assert [h.done[s].status for s in ids] == ["error"] * 4 + ["ok"]
    assert ex.requests[-1].syscall.id == ids[4]
