"""Pieces of the scheduler that need no bus: circuit breaker and backend choice."""

from __future__ import annotations

from aios_schemas import BackendEntry, LlmChat, Syscall, new_id
from aios_services.scheduler.breaker import CircuitBreaker
from aios_services.scheduler.groups import BackendState, Group, Held
from aios_services.scheduler.policies import Job, make_policy


def test_breaker_opens_after_failures_and_probes_back() -> None:
    b = CircuitBreaker(threshold=2, cooldown_s=1.0)
    assert b.allows(0.0)
    b.on_failure(0.0, "c1", 0.0)
    assert b.state(0.0) == "closed"
    b.on_failure(0.1, "c2", 0.05)
    assert b.state(0.5) == "open" and not b.allows(0.5)
    assert b.state(1.2) == "half_open" and b.allows(1.2)
    b.on_dispatch(1.2, "p1")
    assert not b.allows(1.3)  # one probe at a time
    b.on_failure(1.4, "p1", 1.2)  # the probe failed: open again, for longer
    assert b.state(2.5) == "open" and b.state(3.5) == "half_open"
    b.on_dispatch(3.5, "p2")
    b.on_success(3.6, "p2", 3.5)
    assert b.state(3.6) == "closed"


def test_unreachable_backend_opens_at_once() -> None:
    b = CircuitBreaker(threshold=5, cooldown_s=1.0)
    b.on_failure(0.0, "c", 0.0, hard=True)
    assert b.state(0.1) == "open"


def held(program: str = "p", resume: bool = False) -> Held:
    call = Syscall(
        id=new_id(),
        agent="a",
        token="t",
        payload=LlmChat.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    )
    return Held(
        call=call,
        delivery=None,
        group="llm.m",
        service="llm",
        accepted=0.0,
        deadline=1e12,
        job=Job(id=call.id, agent="a", program=program, arrival=0.0),
        resume=resume,
    )


def group(*entries: BackendEntry) -> Group:
    return Group("llm.m", make_policy("fifo"), {e.name: BackendState(entry=e, limiter=None) for e in entries})


def test_choice_prefers_affinity_then_least_loaded() -> None:
    g = group(BackendEntry(name="a", slots=2), BackendEntry(name="b", slots=4))
    first = g.choose(held(), 0.0)
    assert first is not None and first.entry.name == "b"  # both empty: b has more room
    g.backends["b"].running["x"] = held()
    g.backends["b"].running["y"] = held()
    g.backends["b"].running["z"] = held()
    pick = g.choose(held(), 0.0)
    assert pick is not None and pick.entry.name == "a"  # b is 3/4 full, a 0/2
    g.remember("sticky", "b")
    pick = g.choose(held("sticky"), 0.0)
    assert pick is not None and pick.entry.name == "b"  # affinity while b has room
    g.backends["b"].running["w"] = held()
    pick = g.choose(held("sticky"), 0.0)
    assert pick is not None and pick.entry.name == "a"  # b is full: affinity yields


def test_choice_respects_breakers_failures_and_resume_capability() -> None:
    g = group(BackendEntry(name="a", slots=1), BackendEntry(name="b", slots=1, continue_partial=True))
    h = held()
    h.failed_backends.add("b")
    pick = g.choose(h, 0.0)
    assert pick is not None and pick.entry.name == "a"
    g.backends["a"].breaker.on_failure(0.0, "c", 0.0, hard=True)
    pick = g.choose(h, 0.0)
    assert pick is not None and pick.entry.name == "b"  # a failed backend is better than none
    r = held(resume=True)
    r.backend = "b"
    pick = g.choose(r, 0.0)
    assert pick is not None and pick.entry.name == "b"
    g.backends["b"].running["x"] = r
    assert g.choose(held(resume=True), 0.0) is None  # only b can continue a partial message


def test_fallback_only_when_another_backend_could_serve() -> None:
    g = group(BackendEntry(name="a", slots=1), BackendEntry(name="b", slots=1))
    h = held()
    h.failed_backends.add("a")
    assert g.can_fall_back(h, 0.0)  # b is untried (busy or not, it can take it later)
    g.backends["b"].breaker.on_failure(0.0, "c", 0.0, hard=True)
    assert not g.can_fall_back(h, 0.1)  # b is out: fail now instead of waiting for its cooldown
    solo = group(BackendEntry(name="a", slots=1))
    assert not solo.can_fall_back(h, 0.0)
