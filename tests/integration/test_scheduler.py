"""The scheduler on real servers: capacity, fallback, preemption, cancel, deadlines, quotas, limits."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from openai import AsyncOpenAI

from aios_schemas import SchedulerStats, StatsQuery, SyscallEvent, decode_reply, encode, new_id
from aios_sdk import (
    Cancelled,
    DeadlineExceeded,
    NotFound,
    QuotaExceeded,
    RateLimited,
)
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"


def ask(text: str, tokens: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} [sim:tokens={tokens}]"}]


class Events:
    """Every syscall event of a namespace, as they happen."""

    def __init__(self) -> None:
        self.items: list[SyscallEvent] = []
        self.changed = asyncio.Event()

    async def on_msg(self, msg: nats.aio.msg.Msg) -> None:
        self.items.append(SyscallEvent.model_validate_json(msg.data))
        self.changed.set()

    def states(self, sid: str) -> list[str]:
        return [e.state for e in sorted(self.items, key=lambda e: e.ts) if e.id == sid]

    async def wait_for(self, pred: object, timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not pred():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def max_concurrency(self) -> dict[str, int]:
        """Per backend, the most calls running at once, rebuilt from the events alone."""
        level: dict[str, int] = defaultdict(int)
        peak: dict[str, int] = defaultdict(int)
        for e in sorted(self.items, key=lambda e: e.ts):
            if e.state in ("dispatched", "resumed"):
                b = str(e.details["backend"])
                level[b] += 1
                peak[b] = max(peak[b], level[b])
            elif e.state in ("done", "failed", "suspended", "cancelled") and "backend" in e.details:
                level[str(e.details["backend"])] -= 1
            elif e.state == "queued" and "fallback_from" in e.details:
                level[str(e.details["fallback_from"])] -= 1
        return dict(peak)


@pytest.fixture
async def events(nc: nats.NATS) -> AsyncIterator[tuple[Events, nats.NATS]]:
    ev = Events()
    yield ev, nc


async def subscribe(ev: Events, nc: nats.NATS, k: Kernel) -> None:
    await nc.subscribe(k.ns.event("*"), cb=ev.on_msg)
    await nc.flush()


async def stats(nc: nats.NATS, k: Kernel, *, local: bool = False) -> SchedulerStats:
    msg = await nc.request(k.ns.ctl("scheduler", "stats"), encode(StatsQuery(local=local)), timeout=5)
    return decode_reply(msg.data, msg.headers, SchedulerStats)


async def test_capacity_is_never_exceeded(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as sim:
        backends = [
            {"name": "a", "base_url": sim.base_url, "model": MODEL, "slots": 3},
            {"name": "b", "base_url": sim.base_url, "model": MODEL, "slots": 2},
        ]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo") as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                replies = await asyncio.gather(*(aios.llm.chat(MODEL, ask(f"q{i}", 10)) for i in range(40)))
            assert all(r.content for r in replies)
            await ev.wait_for(lambda: sum(e.state == "done" for e in ev.items) == 40)
            peak = ev.max_concurrency()
            # Bounds, not exact peaks: how many calls overlap depends on the machine's timing.
            assert 1 <= peak["a"] <= 3 and 1 <= peak["b"] <= 2, peak  # both used, never more
            st = await stats(nc, k)
            seen = {b.name: b.max_running_seen for r in st.resources for b in r.backends}
            assert 1 <= seen["a"] <= 3 and 1 <= seen["b"] <= 2, seen
            assert sim.stats()["max_running_seen"] <= 5


async def test_killing_a_backend_mid_load_fails_no_call(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=1.0) as good:
        doomed_cm = run_sim("fixed", models=(MODEL,), decode_ms=1.0)
        doomed = await doomed_cm.__aenter__()
        backends = [
            {"name": "doomed", "base_url": doomed.base_url, "model": MODEL, "slots": 4},
            {"name": "good", "base_url": good.base_url, "model": MODEL, "slots": 4},
        ]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo") as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                calls = [asyncio.create_task(aios.llm.chat(MODEL, ask(f"q{i}", 30))) for i in range(48)]
                await ev.wait_for(lambda: sum(e.state == "done" for e in ev.items) >= 8)
                await doomed_cm.__aexit__(None, None, None)  # the backend dies under load
                replies = await asyncio.gather(*calls)
            assert len(replies) == 48 and all(r.content for r in replies)
            assert any(r.backend == "doomed" for r in replies) and any(r.backend == "good" for r in replies)
            assert any("fallback_from" in e.details for e in ev.items)
            st = await stats(nc, k)
            breakers = {b.name: b.breaker for r in st.resources for b in r.backends}
            assert breakers["doomed"] in ("open", "half_open") and breakers["good"] == "closed"


async def same_as_uninterrupted(sim: SimServer, messages: list[dict[str, str]], text: str | None) -> None:
    direct = AsyncOpenAI(base_url=sim.base_url, api_key="x")
    ref = await direct.chat.completions.create(model=MODEL, messages=messages)  # type: ignore[arg-type]
    assert text == ref.choices[0].message.content


async def test_round_robin_suspends_and_resumes_to_identical_text(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as sim:
        backends = [
            {"name": "sim", "base_url": sim.base_url, "slots": 1, "capabilities": {"continue_partial": True}}
        ]
        async with running_kernel(
            nats_url, tmp_path, {MODEL: backends}, policy="rr", policy_params={"quantum": 0.08}
        ) as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                prompts = [ask("long story A", 120), ask("long story B", 120), ask("long story C", 120)]
                ids = [new_id() for _ in prompts]
                replies = await asyncio.gather(
                    *(aios.llm.chat(MODEL, p, id=i) for p, i in zip(prompts, ids, strict=True))
                )
            for p, r in zip(prompts, replies, strict=True):
                await same_as_uninterrupted(sim, p, r.content)
                assert r.usage.completion_tokens == 120
            await ev.wait_for(lambda: sum(e.state == "done" for e in ev.items) == 3)
            assert sum(ev.states(i).count("suspended") for i in ids) >= 3
            assert ev.max_concurrency()["sim"] == 1


async def test_round_robin_progresses_when_a_switch_costs_more_than_the_quantum(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    """A resumed run reaches its first token only after the backend's time to first token (here
    0.25 s, standing for re-prefill and queueing behind a full KV cache), longer than the 0.05 s
    quantum. Suspended as soon as the quantum ends, every run would be cut before its first token
    and two calls would swap forever; each run must instead produce output before it yields."""
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0, ttft_ms=250.0) as sim:
        backends = [
            {"name": "sim", "base_url": sim.base_url, "slots": 1, "capabilities": {"continue_partial": True}}
        ]
        async with running_kernel(
            nats_url, tmp_path, {MODEL: backends}, policy="rr", policy_params={"quantum": 0.05}
        ) as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                prompts = [ask("long story A", 200), ask("long story B", 200)]
                ids = [new_id() for _ in prompts]
                calls = asyncio.gather(
                    *(aios.llm.chat(MODEL, p, id=i) for p, i in zip(prompts, ids, strict=True))
                )
                # A deadline, not a timed assertion: without the progress guarantee the two swap forever.
                replies = await asyncio.wait_for(calls, 30.0)
            for p, r in zip(prompts, replies, strict=True):
                await same_as_uninterrupted(sim, p, r.content)
                assert r.usage.completion_tokens == 200
            await ev.wait_for(lambda: sum(e.state == "done" for e in ev.items) == 2)
            assert sum(ev.states(i).count("suspended") for i in ids) >= 2  # still round-robin


async def test_priority_preempts_a_running_low_priority_call(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as sim:
        backends = [
            {"name": "sim", "base_url": sim.base_url, "slots": 1, "capabilities": {"continue_partial": True}}
        ]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="priority") as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                low_id, high_id = new_id(), new_id()
                low_p, high_p = ask("background job", 200), ask("urgent", 10)
                low = asyncio.create_task(aios.llm.chat(MODEL, low_p, priority=10, id=low_id))
                await ev.wait_for(lambda: "dispatched" in ev.states(low_id))
                high = await aios.llm.chat(MODEL, high_p, priority=0, id=high_id)
                assert not low.done()
                low_reply = await low
            await same_as_uninterrupted(sim, low_p, low_reply.content)
            await same_as_uninterrupted(sim, high_p, high.content)
            assert "suspended" in ev.states(low_id) and "resumed" in ev.states(low_id)


async def test_cancel_and_deadline_free_the_slot(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=5.0) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 1}]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo") as k:
            await subscribe(ev, nc, k)
            async with k.connect() as aios:
                running_id, queued_id = new_id(), new_id()
                running = asyncio.create_task(aios.llm.chat(MODEL, ask("very long", 5000), id=running_id))
                await ev.wait_for(lambda: "dispatched" in ev.states(running_id))
                queued = asyncio.create_task(aios.llm.chat(MODEL, ask("next", 5), id=queued_id))
                await ev.wait_for(lambda: "queued" in ev.states(queued_id))
                assert (await aios.cancel(queued_id)).state == "cancelled"
                with pytest.raises(Cancelled):
                    await queued
                assert (await aios.cancel(running_id)).state == "cancelled"
                with pytest.raises(Cancelled):
                    await running
                # The slot is free again: a new call runs at once.
                reply = await aios.llm.chat(MODEL, ask("after cancel", 5), timeout=10)
                assert reply.content
                # A deadline frees the slot too, and stops the backend's work.
                with pytest.raises(DeadlineExceeded):
                    await aios.llm.chat(MODEL, ask("too long", 5000), timeout=0.5)
                reply = await aios.llm.chat(MODEL, ask("after deadline", 5), timeout=10)
                assert reply.content
            assert "cancelled" in ev.states(running_id) and "cancelled" in ev.states(queued_id)
            assert ev.max_concurrency()["sim"] == 1

            async def idle() -> None:  # polling a condition under a deadline (no event to wait on)
                while sim.stats()["running"]:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)

            await asyncio.wait_for(idle(), 5)  # the backend stopped the cancelled generations too


async def test_quota_exceeded(nats_url: str, tmp_path: Path) -> None:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.1) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
        quotas = {"agent-q*": {"calls": 2}}
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, quotas=quotas) as k:
            async with k.connect(agent="agent-q1") as aios:
                await aios.llm.chat(MODEL, ask("one", 3))
                await aios.llm.chat(MODEL, ask("two", 3))
                with pytest.raises(QuotaExceeded):
                    await aios.llm.chat(MODEL, ask("three", 3))
            async with k.connect(agent="agent-free") as other:  # other agents are not affected
                await other.llm.chat(MODEL, ask("one", 3))


async def test_rate_limits_queue_then_answer_rate_limited_at_the_deadline(
    nats_url: str, tmp_path: Path
) -> None:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.1) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 8, "rpm": 3}]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}) as k, k.connect() as aios:
            results = await asyncio.gather(
                *(aios.llm.chat(MODEL, ask(f"r{i}", 3), timeout=2.0) for i in range(5)),
                return_exceptions=True,
            )
    ok = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(ok) == 3 and len(limited) == 2, results
    assert sim.stats()["requests"] == 3


async def test_an_agent_cannot_cancel_or_read_another_agents_syscall(nats_url: str, tmp_path: Path) -> None:
    """An agent cannot cancel (or see) another agent's syscall."""
    async with run_sim("fixed", models=(MODEL,), decode_ms=1.0) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 2}]
        async with (
            running_kernel(nats_url, tmp_path, {MODEL: backends}) as k,
            k.connect(agent="agent-a") as a,
            k.connect(agent="agent-b") as b,
        ):
            sid = new_id()
            task = asyncio.create_task(a.llm.chat(MODEL, ask("mine", 50), id=sid))
            with pytest.raises(NotFound):
                await b.cancel(sid)
            assert (await task).content
            assert await b.result(sid) is None


async def test_two_scheduler_replicas_share_the_slots(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    from aios_services.runtime import run_service
    from aios_services.scheduler import main as sched_main
    from aios_services.scheduler.settings import SchedulerSettings

    ev, nc = events
    async with run_sim("fixed", models=(MODEL,), decode_ms=2.0) as sim:
        backends = [{"name": "a", "base_url": sim.base_url, "slots": 3}]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo", instance="s-1") as k:
            await subscribe(ev, nc, k)
            settings = SchedulerSettings(  # type: ignore[call-arg]
                nats_url=nats_url,
                namespace=k.ns.name,
                policy="fifo",
                instance="s-2",
            )
            stop = asyncio.Event()
            second = asyncio.create_task(
                run_service("scheduler", settings, lambda b, st: sched_main.start(b, st, settings), stop=stop)
            )
            try:
                seen: dict[str, tuple[list[str], bool]] = {}
                for _ in range(500):  # poll, bounded: both replicas know each other and share slots
                    st = await stats(nc, k, local=True)
                    seen[st.instance] = (st.replicas, st.sharing)
                    if all(seen.get(i) == (["s-1", "s-2"], True) for i in ("s-1", "s-2")):
                        break
                    await asyncio.sleep(0.02)
                assert all(seen.get(i) == (["s-1", "s-2"], True) for i in ("s-1", "s-2")), seen
                async with k.connect() as aios:
                    replies = await asyncio.gather(
                        *(aios.llm.chat(MODEL, ask(f"q{i}", 20)) for i in range(60))
                    )
                assert all(r.content for r in replies)
                await ev.wait_for(lambda: sum(e.state == "done" for e in ev.items) == 60)
            finally:
                stop.set()
                await asyncio.wait_for(second, 20)
    # Together the replicas used all 3 slots at once (one alone may use only its share: 2 or 1)
    # and never more (the simulator counts what really ran).
    assert sim.stats()["max_running_seen"] <= 3


async def test_backend_dying_mid_stream_is_continued_elsewhere_without_repeating_text(
    nats_url: str, tmp_path: Path, events: tuple[Events, nats.NATS]
) -> None:
    ev, nc = events
    caps = {"continue_partial": True}
    async with run_sim("fixed", models=(MODEL,), decode_ms=4.0) as good:
        doomed_cm = run_sim("fixed", models=(MODEL,), decode_ms=4.0)
        doomed = await doomed_cm.__aenter__()
        backends = [
            {"name": "doomed", "base_url": doomed.base_url, "slots": 2, "capabilities": caps},
            {"name": "good", "base_url": good.base_url, "slots": 1, "capabilities": caps},
        ]
        async with running_kernel(nats_url, tmp_path, {MODEL: backends}, policy="fifo") as k:
            await subscribe(ev, nc, k)
            prompt = ask("a long answer", 150)
            async with k.connect() as aios, aios.llm.stream(MODEL, prompt) as stream:
                deltas: list[str] = []
                async for delta in stream:
                    deltas.append(delta)
                    if len(deltas) == 20:  # mid-generation on the least loaded backend: kill it
                        await doomed_cm.__aexit__(None, None, None)
            assert stream.reply is not None
            await same_as_uninterrupted(good, prompt, stream.reply.content)
            assert "".join(deltas) == stream.reply.content  # nothing repeated, nothing lost
            assert stream.reply.backend == "good"
            assert any(e.details.get("fallback_from") == "doomed" for e in ev.items)
