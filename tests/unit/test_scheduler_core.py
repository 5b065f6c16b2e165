"""Admission and dispatch of the scheduler with fake dependencies (no bus): what each decides."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from aios_schemas import (
    AiosError,
    BackendEntry,
    ChatReply,
    ExecReply,
    ExecRequest,
    LlmChat,
    Namespace,
    Syscall,
    SyscallResult,
    Usage,
    new_id,
)
from aios_services.scheduler.accounting import Accounts
from aios_services.scheduler.admission import Accept, Admission, Refuse, Replay
from aios_services.scheduler.dispatch import Dispatcher, NoWorker
from aios_services.scheduler.groups import BackendState, Group, Held
from aios_services.scheduler.outcomes import StoredResult
from aios_services.scheduler.policies import make_policy
from aios_services.scheduler.quotas import Quotas
from aios_services.scheduler.resources import Catalog, TokenRatios, cost_of, resource_of
from aios_services.scheduler.settings import SchedulerSettings

NS = Namespace("unit")
TOKEN = "secret-token"


def call(content: str = "hi", *, agent: str = "agent-1", model: str = "m", **kw: Any) -> Syscall:
    payload = LlmChat.model_validate({"model": model, "messages": [{"role": "user", "content": content}]})
    return Syscall(
        id=kw.pop("id", new_id()), agent=agent, token=kw.pop("token", TOKEN), payload=payload, **kw
    )


class FakeResults:
    def __init__(self) -> None:
        self.items: dict[str, StoredResult] = {}

    async def get(self, syscall_id: str) -> StoredResult | None:
        return self.items.get(syscall_id)

    async def put(self, c: Syscall, res: SyscallResult) -> None:
        self.items[c.id] = StoredResult(agent=c.agent, digest=c.digest(), result=res)


def admission(results: FakeResults | None = None, catalog: Catalog | None = None) -> Admission:
    cat = catalog or Catalog()
    quotas = Quotas(None, {})  # type: ignore[arg-type]  # no quota configured: never touches KV
    return Admission(NS, results or FakeResults(), quotas, cat, default_deadline_s=60.0)


# --- resources --------------------------------------------------------------------------------
def test_a_syscall_maps_to_its_resource_and_cost() -> None:
    c = call("x" * 400)
    ref = resource_of(c)
    assert (ref.name, ref.service, ref.label) == ("llm.m", "llm", "m")
    assert cost_of(c, TokenRatios()) == 100 + 256  # 4 characters a token at first + the output cap


def test_the_token_estimate_learns_each_models_characters_per_token() -> None:
    ratios = TokenRatios()
    c = call("x" * 800)
    assert cost_of(c, ratios) == 200 + 256
    ratios.learn("m", chars=800, tokens=100)  # this model's tokenizer: 8 characters a token
    assert ratios.of("m") == 8.0 and cost_of(c, ratios) == 100 + 256
    for _ in range(100):  # a moving average: it follows a change, not one odd call
        ratios.learn("m", chars=400, tokens=100)
    assert abs(ratios.of("m") - 4.0) < 0.01
    ratios.learn("m", chars=10, tokens=0)  # nothing to learn from
    ratios.learn("other", chars=10_000, tokens=1)  # bounded: 12 at most
    assert ratios.of("other") == 12.0 and ratios.of("unseen") == 4.0


def test_unknown_resource_error_lists_what_is_served() -> None:
    cat = Catalog()
    cat.set("llm.a", [BackendEntry(name="x", slots=1)])
    err = cat.unknown(resource_of(call(model="zzz")))
    assert err.code == "not_found" and err.details == {"models": ["a"]}


# --- admission --------------------------------------------------------------------------------
async def test_admission_accepts_a_valid_call_bound_to_its_resource() -> None:
    c = call(session="prog-1", priority=3)
    d = await admission().decide(c, None, NS.sys("llm.chat", "agent-1"))
    assert isinstance(d, Accept)
    h = d.held
    assert h.group == "llm.m" and h.service == "llm" and h.job.program == "prog-1" and h.job.priority == 3
    assert h.call.token is None  # no secret travels past admission
    assert h.deadline > time.time()


async def test_admission_refuses_with_typed_errors() -> None:
    a = admission()
    cases = {
        "invalid_request": (call(), NS.sys("llm.embed", "agent-1")),  # published on another kind's subject
        "deadline_exceeded": (call(deadline=time.time() - 1), NS.sys("llm.chat", "agent-1")),
    }
    for code, (c, subject) in cases.items():
        d = await a.decide(c, None, subject)
        assert isinstance(d, Refuse) and d.error.code == code and d.store, (code, d)


def test_a_body_naming_another_agent_than_its_subject_is_an_impostor() -> None:
    a = admission()
    assert a.impostor(call(agent="agent-1"), NS.sys("llm.chat", "agent-1")) is None
    found = a.impostor(call(agent="agent-2"), NS.sys("llm.chat", "agent-1"))
    assert found is not None and found[0] == "agent-1" and found[1].code == "forbidden"


async def test_admission_refuses_an_unknown_resource_once_its_service_published() -> None:
    cat = Catalog()
    assert isinstance(
        await admission(catalog=cat).decide(call(model="zzz"), None, NS.sys("llm.chat", "agent-1")), Accept
    )
    cat.set("llm.other", [BackendEntry(name="x", slots=1)])
    d = await admission(catalog=cat).decide(call(model="zzz"), None, NS.sys("llm.chat", "agent-1"))
    assert isinstance(d, Refuse) and d.error.code == "not_found"


async def test_a_stored_result_is_replayed_to_the_same_request_only() -> None:
    results = FakeResults()
    first = call("question")
    res = SyscallResult.fail(first.id, AiosError("cancelled", "x").to_reply())
    await results.put(first, res)
    a = admission(results)
    again = first.model_copy(update={"created": first.created + 5})  # a retry: same request
    d = await a.decide(again, None, NS.sys("llm.chat", "agent-1"))
    assert isinstance(d, Replay) and d.result == res
    other = call("another question", id=first.id)  # the same id for another request
    d = await a.decide(other, None, NS.sys("llm.chat", "agent-1"))
    assert isinstance(d, Refuse) and d.error.code == "conflict" and not d.store
    stranger = call("question", id=first.id, agent="agent-2")  # someone else's id
    d = await a.decide(stranger, None, NS.sys("llm.chat", "agent-2"))
    assert isinstance(d, Refuse) and d.error.code == "conflict" and not d.store


# --- dispatch ---------------------------------------------------------------------------------
@dataclass
class FakeExecutor:
    """Answers exec requests from a script: an ExecReply, an exception, or a future to wait on."""

    script: list[object] = field(default_factory=list)
    requests: list[ExecRequest] = field(default_factory=list)
    controls: list[tuple[str, str]] = field(default_factory=list)

    async def exec(self, service: str, req: ExecRequest, timeout: float) -> ExecReply | None:
        self.requests.append(req)
        step = self.script.pop(0) if self.script else ok_reply(req.syscall.id)
        if isinstance(step, BaseException):
            raise step
        if isinstance(step, asyncio.Future):
            return await step  # type: ignore[no-any-return]
        assert isinstance(step, ExecReply)
        return step

    async def control(self, service: str, syscall_id: str, action: Literal["suspend", "cancel"]) -> None:
        self.controls.append((syscall_id, action))


class FakeOutbox:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def event(self, held: Held, state: str, details: object = None, ts: object = None) -> None:
        self.events.append((held.call.id, state))


def ok_reply(sid: str) -> ExecReply:
    reply = ChatReply(model="m", backend="a", content="ok", usage=Usage(total_tokens=3))
    return ExecReply(outcome="done", result=SyscallResult.ok(sid, reply), usage=Usage(total_tokens=3))


def fail_reply(sid: str, code: Literal["backend_unavailable", "invalid_request"]) -> ExecReply:
    err = AiosError(code, "x", details={"backend": "a"}).to_reply()
    return ExecReply(outcome="done", result=SyscallResult.fail(sid, err))


class Harness:
    def __init__(self, executor: FakeExecutor, *lanes: BackendEntry, policy: str = "fifo") -> None:
        self.held: dict[str, Held] = {}
        self.done: dict[str, SyscallResult] = {}
        self.finished = asyncio.Event()
        self.outbox = FakeOutbox()
        self.executor = executor
        self.group = Group(
            "llm.m", make_policy(policy), {e.name: BackendState(entry=e, limiter=None) for e in lanes}
        )
        self.tasks: set[asyncio.Task[None]] = set()
        self.d = Dispatcher(
            self.held,
            executor,
            self.outbox,  # type: ignore[arg-type]
            Accounts(),
            SchedulerSettings(max_attempts=3),  # type: ignore[call-arg]
            self.complete,
            self.spawn,
            TokenRatios(),
        )

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        t = asyncio.ensure_future(coro)
        self.tasks.add(t)
        return t

    async def complete(self, held: Held, group: Group | None, res: SyscallResult) -> None:
        self.held.pop(held.call.id, None)
        self.done[held.call.id] = res
        self.finished.set()

    async def submit(self, n: int) -> list[str]:
        ids = []
        for _ in range(n):
            d = await admission().decide(call(), None, NS.sys("llm.chat", "agent-1"))
            assert isinstance(d, Accept)
            self.held[d.held.call.id] = d.held
            self.group.policy.push(d.held.job, time.monotonic())
            ids.append(d.held.call.id)
        return ids

    async def until_done(self, n: int) -> None:
        """Run the resource's dispatch loop until `n` calls completed."""
        loop = asyncio.ensure_future(self.d.loop(self.group))

        async def wait() -> None:
            while len(self.done) < n:
                self.finished.clear()
                await self.finished.wait()

        try:
            await asyncio.wait_for(wait(), 5)
        finally:
            loop.cancel()


async def test_dispatch_never_exceeds_a_lanes_slots() -> None:
    gate: asyncio.Future[ExecReply] = asyncio.get_running_loop().create_future()
    ex = FakeExecutor(script=[gate, gate, gate])
    h = Harness(ex, BackendEntry(name="a", slots=2))
    ids = await h.submit(3)
    await h.d.dispatch(h.group)
    await asyncio.sleep(0)  # let the started runs reach the executor
    assert len(h.group.backends["a"].running) == 2 and len(h.group.policy) == 1
    assert [e for e in h.outbox.events if e[1] == "dispatched"] == [
        (ids[0], "dispatched"),
        (ids[1], "dispatched"),
    ]
    gate.set_result(ok_reply(ids[0]))
    await h.until_done(3)
    assert all(r.status == "ok" for r in h.done.values())


async def test_a_lane_takes_its_ahead_beyond_its_slots_and_no_more() -> None:
    gate: asyncio.Future[ExecReply] = asyncio.get_running_loop().create_future()
    ex = FakeExecutor(script=[gate] * 5)
    h = Harness(ex, BackendEntry(name="a", slots=2, ahead=1))
    ids = await h.submit(5)
    await h.d.dispatch(h.group)
    await asyncio.sleep(0)
    assert len(h.group.backends["a"].running) == 3 and len(h.group.policy) == 2
    gate.set_result(ok_reply(ids[0]))
    await h.until_done(5)


async def test_a_failing_lane_falls_back_to_another() -> None:
    ex = FakeExecutor()
    h = Harness(ex, BackendEntry(name="a", slots=1), BackendEntry(name="b", slots=1))
    (sid,) = await h.submit(1)
    ex.script = [fail_reply(sid, "backend_unavailable")]
    await h.until_done(1)
    assert h.done[sid].status == "ok"
    assert [r.backend for r in ex.requests] == ["b", "a"] or [r.backend for r in ex.requests] == ["a", "b"]
    assert len({r.backend for r in ex.requests}) == 2
    assert (sid, "queued") in h.outbox.events  # it went back to the queue between the two runs


async def test_a_request_error_is_the_answer_not_a_fallback() -> None:
    ex = FakeExecutor()
    h = Harness(ex, BackendEntry(name="a", slots=1), BackendEntry(name="b", slots=1))
    (sid,) = await h.submit(1)
    ex.script = [fail_reply(sid, "invalid_request")]
    await h.until_done(1)
    err = h.done[sid].error
    assert err is not None and err.code == "invalid_request" and len(ex.requests) == 1


async def test_no_worker_waits_for_one_instead_of_failing() -> None:
    ex = FakeExecutor(script=[NoWorker("llm"), NoWorker("llm")])
    h = Harness(ex, BackendEntry(name="a", slots=1))
    (sid,) = await h.submit(1)
    await h.until_done(1)
    assert h.done[sid].status == "ok" and len(ex.requests) == 3


async def test_a_suspended_run_is_queued_again_and_resumed() -> None:
    ex = FakeExecutor(script=[ExecReply(outcome="suspended")])
    h = Harness(ex, BackendEntry(name="a", slots=1, continue_partial=True))
    (sid,) = await h.submit(1)
    await h.until_done(1)
    assert [r.resume for r in ex.requests] == [False, True]
    states = [s for i, s in h.outbox.events if i == sid]
    assert states == ["dispatched", "suspended", "queued", "resumed"]
