"""Admission, policy queues, dispatch, context switches and completion: the scheduler's state machine.

A syscall is *accepted* when JetStream acks the client's publish. The scheduler holds the JetStream
message (unacked, heartbeated) while the syscall is queued or running, stores the result in KV
`AIOS_RESULTS`, tells the caller, and only then acks: a crash at any point leads to redelivery,
and a redelivered syscall whose result exists is answered from KV instead of being re-run.

Clocks: deadlines are unix time (they cross processes); the policies run on `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections import defaultdict
from typing import Any

import nats
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from aios_schemas import (
    AiosError,
    BackendEntry,
    BackendStats,
    CancelReply,
    CancelRequest,
    ControlRequest,
    ErrorCode,
    ExecReply,
    ExecRequest,
    LlmChat,
    ModelEntry,
    ResourceStats,
    ResultQuery,
    SchedulerStats,
    StatsQuery,
    Syscall,
    SyscallEvent,
    SyscallResult,
    SyscallState,
    encode,
)
from aios_schemas.envelope import ID_PATTERN
from aios_schemas.wire import validation_error

from ..runtime import Bus, extract
from ..runtime.tokens import TokenStore
from .accounting import Accounts, Quotas
from .groups import BackendState, Group, Held
from .policies import Job, Policy, make_policy
from .ratelimit import RateLimiter
from .replicas import Replicas
from .settings import SchedulerSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
_ID = re.compile(ID_PATTERN)
FALLBACK_CODES = frozenset({"backend_unavailable", "rate_limited"})
PREEMPTING_POLICIES = frozenset({"rr", "priority", "las"})


class StoredResult(BaseModel):
    """What the scheduler keeps in KV per syscall: the result and whose it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str
    result: SyscallResult


def _estimate_tokens(call: Syscall) -> int:
    """Tokens a call may use, for tokens/min budgets: ~4 characters a token, plus the output cap."""
    p = call.payload
    if isinstance(p, LlmChat):
        chars = sum(len(m.content or "") for m in p.messages)
        return chars // 4 + (p.max_tokens or 256)
    return sum(len(t) for t in p.input) // 4


class Scheduler:
    def __init__(
        self,
        bus: Bus,
        results: KeyValue,
        limits: KeyValue,
        tokens: TokenStore,
        settings: SchedulerSettings,
    ) -> None:
        self.bus = bus
        self.ns = bus.ns
        self.results = results
        self.limits = limits
        self.tokens = tokens
        self.settings = settings
        self.held: dict[str, Held] = {}
        self.groups: dict[str, Group] = {}
        self.catalog: dict[str, ModelEntry] = {}
        self.parked: dict[str, Held] = {}  # waiting for their model to appear in the catalogue
        self.loops: dict[str, asyncio.Task[None]] = {}
        self.counters: dict[str, int] = defaultdict(int)
        self._progress = asyncio.Event()
        self.replicas: Replicas | None = None  # set by main(): how slots are split between replicas
        self.accounts = Accounts()
        self.quotas = Quotas(limits, settings.quotas)

    # --- catalogue -----------------------------------------------------------------------------
    async def watch_catalog(self) -> None:
        """Follow the models the llm service publishes (KV `model.*`)."""
        watcher = await self.limits.watch("model.>")
        async for entry in watcher:
            if entry is None or not entry.value:
                continue
            try:
                model = ModelEntry.model_validate_json(entry.value)
            except ValidationError:
                log.warning("ignoring malformed catalogue entry %s", entry.key)
                continue
            self.catalog[model.name] = model
            self._apply_model(model)
            for held in [h for h in self.parked.values() if self._model(h.call) == model.name]:
                del self.parked[held.call.id]
                self._enqueue(held)

    def _apply_model(self, model: ModelEntry) -> None:
        group = self.groups.get(f"llm.{model.name}")
        if group is None:
            return
        for b in model.backends:
            state = group.backends.get(b.name)
            if state is None:
                group.backends[b.name] = self._backend_state(b)
            else:
                state.entry = b
                state.capacity = self.share(b.slots)
                state.limiter = RateLimiter(self.limits, b) if (b.rpm or b.tpm) else None
        group.wake.set()

    def fetch_room(self, batch: int) -> int:
        """How many syscalls to pull now. Alone, everything (the policy sees the whole queue).
        With other replicas, only about twice this replica's share of slots may wait here, so a
        replica with few slots does not hoard work that another could run now."""
        if self.replicas is None or len(self.replicas.live) < 2:
            return batch
        capacity = sum(b.slots for g in self.groups.values() for b in g.backends.values()) or 4
        waiting = sum(1 for h in self.held.values() if h.dispatched is None)
        return max(0, min(batch, 2 * capacity - waiting))

    async def wait_progress(self, timeout: float) -> None:
        """Until some syscall finishes (or `timeout`)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)
        self._progress.clear()

    def share(self, slots: int) -> int:
        return self.replicas.share(slots) if self.replicas else slots

    def resize(self) -> None:
        """The set of replicas changed: recompute this replica's share of every backend."""
        for group in self.groups.values():
            for b in group.backends.values():
                b.capacity = self.share(b.entry.slots)
            group.wake.set()

    def _backend_state(self, entry: BackendEntry) -> BackendState:
        st = BackendState(
            entry=entry, limiter=RateLimiter(self.limits, entry) if (entry.rpm or entry.tpm) else None
        )
        st.capacity = self.share(entry.slots)
        st.breaker.threshold = self.settings.breaker_threshold
        st.breaker.cooldown_s = self.settings.breaker_cooldown_s
        return st

    @staticmethod
    def _model(call: Syscall) -> str:
        return call.payload.model

    def _policy_for(self, resource: str) -> Policy:
        override = dict(self.settings.resource_policies.get(resource, {}))
        if override:
            name = str(override.pop("name", self.settings.policy))
            return make_policy(name, **override)
        return make_policy(self.settings.policy, **self.settings.policy_params)

    def _group(self, held: Held) -> Group | None:
        model = self._model(held.call)
        name = f"llm.{model}"
        group = self.groups.get(name)
        if group is None:
            entry = self.catalog.get(model)
            if entry is None:
                return None
            group = Group(
                name=name,
                policy=self._policy_for(name),
                backends={b.name: self._backend_state(b) for b in entry.backends},
            )
            self.groups[name] = group
            self.loops[name] = asyncio.create_task(self._dispatch_loop(group))
        return group

    # --- admission -----------------------------------------------------------------------------
    async def admit(self, msg: Msg) -> None:
        """Take one syscall off the stream: validate, authenticate, enqueue (or answer at once)."""
        try:
            call = Syscall.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._reject_malformed(msg, validation_error(exc, "syscall"))
            return
        if call.id in self.held:  # redelivered while we still hold it: keep the newest handle
            self.held[call.id].msg = msg
            return
        stored = await self._stored(call.id)
        if stored is not None:
            self.counters["redelivered_answered"] += 1
            await self._deliver(stored.result, msg)
            return
        now = time.time()
        deadline = call.deadline or (call.created + self.settings.default_deadline_s)
        try:
            self.tokens.authenticate(call.token, call.agent)
            if msg.subject != self.ns.sys(call.kind):
                raise AiosError("invalid_request", f"{call.kind} published on {msg.subject}")
            if deadline <= now:
                raise AiosError("deadline_exceeded", "deadline passed before admission")
            await self.quotas.check(call.agent)
        except AiosError as exc:
            await self._finish_early(call, msg, exc)
            return
        held = Held(
            call=call,
            msg=msg,
            trace=extract(msg.headers),
            group=f"llm.{self._model(call)}",
            service=call.kind.split(".", 1)[0],
            accepted=now,
            deadline=deadline,
            job=Job(
                id=call.id,
                agent=call.agent,
                program=call.session or call.agent,
                arrival=time.monotonic(),
                priority=call.priority,
            ),
        )
        self.held[call.id] = held
        self.counters["accepted"] += 1
        self._event(held, "accepted")
        if self._model(call) not in self.catalog:
            if self.catalog:  # the llm service is up and does not serve this model
                await self._complete(
                    held, None, SyscallResult.fail(call.id, self._unknown_model(call).to_reply())
                )
            else:  # nothing published yet (llm service starting): wait for it, until the deadline
                self.parked[call.id] = held
            return
        self._enqueue(held)

    def _unknown_model(self, call: Syscall) -> AiosError:
        models: list[JsonValue] = [m for m in sorted(self.catalog)]
        return AiosError("not_found", f"unknown model {self._model(call)!r}", details={"models": models})

    def _enqueue(self, held: Held) -> None:
        group = self._group(held)
        if group is None:
            self.parked[held.call.id] = held
            return
        group.policy.push(held.job, time.monotonic())
        self._event(held, "queued")
        group.wake.set()

    async def _reject_malformed(self, msg: Msg, err: AiosError) -> None:
        # Answer the caller if the message at least names a valid id; either way, drop it for good.
        try:
            raw = json.loads(msg.data)
            sid = raw.get("id") if isinstance(raw, dict) else None
        except ValueError:
            sid = None
        if isinstance(sid, str) and _ID.match(sid):
            res = SyscallResult.fail(sid, err.to_reply())
            await self.bus.nc.publish(self.ns.result(sid), encode(res))
        log.info("rejected malformed syscall on %s: %s", msg.subject, err.message)
        with contextlib.suppress(nats.errors.Error):
            await msg.term()

    async def _finish_early(self, call: Syscall, msg: Msg, exc: AiosError) -> None:
        res = SyscallResult.fail(call.id, exc.to_reply())
        await self._store(call, res)
        await self._deliver(res, msg)
        self.counters["failed"] += 1
        self._publish(
            SyscallEvent(
                id=call.id,
                state="failed",
                agent=call.agent,
                session=call.session,
                kind=call.kind,
                details={"code": exc.code},
            )
        )

    # --- dispatch ------------------------------------------------------------------------------
    async def _dispatch_loop(self, group: Group) -> None:
        while True:
            try:
                timeout = await self._dispatch(group)
            except Exception:
                log.exception("dispatch of %s failed", group.name)
                timeout = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.wake.wait(), timeout=timeout)
            group.wake.clear()

    async def _dispatch(self, group: Group) -> float | None:
        """Start what fits, ask for the suspensions the policy wants; seconds until a timer is due."""
        now = time.monotonic()
        while True:
            job = group.policy.peek(now)
            if job is None:
                break
            held = self.held.get(job.id)
            if held is None:  # finished meanwhile (cancelled): drop the stale entry
                group.policy.remove(job.id)
                continue
            backend = group.choose(held, now)
            if backend is None:
                break
            if backend.limiter is not None:
                wait = await backend.limiter.try_acquire(_estimate_tokens(held.call))
                if wait > 0:
                    backend.rate_wait_until = time.monotonic() + wait
                    continue
                now = time.monotonic()
            popped = group.policy.pop(now)
            if popped is None or popped.id != job.id:  # the order moved while we waited on KV
                if popped is not None:
                    group.policy.push(popped, now)
                continue
            self._start(group, backend, held, now)
        for job_id in group.policy.preempt(group.running_jobs(), now, free_slots=group.free_slots()):
            held = self.held.get(job_id)
            if held is not None and not held.suspending:
                held.suspending = True
                await self.bus.publish(
                    self.ns.ctl("llm", "control"), ControlRequest(id=job_id, action="suspend")
                )
        timers = [t - now for t in self._timers(group, now) if t is not None]
        return max(0.001, min(timers)) if timers else None

    def _timers(self, group: Group, now: float) -> list[float | None]:
        out: list[float | None] = [group.policy.next_preemption(group.running_jobs(), now)]
        if len(group.policy):
            out += [b.rate_wait_until for b in group.backends.values() if b.rate_wait_until > now]
            out += [b.breaker.reopens_at() for b in group.backends.values()]
        return out

    def _start(self, group: Group, backend: BackendState, held: Held, now: float) -> None:
        held.dispatched = now
        held.wait_s += now - (held.job.queued_at or now)
        held.backend = backend.entry.name
        held.runs += 1
        held.job.preemptible = backend.entry.continue_partial
        backend.running[held.call.id] = held
        backend.max_running_seen = max(backend.max_running_seen, len(backend.running))
        backend.breaker.on_dispatch(now)
        group.remember(held.job.program, backend.entry.name)
        details: dict[str, JsonValue] = {"backend": backend.entry.name, "run": held.runs}
        self._event(held, "resumed" if held.resume else "dispatched", details)
        held.task = self.bus.spawn(self._run(group, backend, held))

    async def _run(self, group: Group, backend: BackendState, held: Held) -> None:
        # The run continues the agent's trace (traceparent came in the syscall's NATS headers);
        # bus.request passes it on to the worker.
        with tracer.start_as_current_span(
            f"run {held.call.kind}", context=held.trace, kind=trace.SpanKind.INTERNAL
        ) as span:
            span.set_attribute("aios.syscall.id", held.call.id)
            span.set_attribute("aios.backend", backend.entry.name)
            span.set_attribute("aios.run", held.runs)
            await self._run_traced(group, backend, held)

    async def _run_traced(self, group: Group, backend: BackendState, held: Held) -> None:
        call = held.call
        req = ExecRequest(
            syscall=call,
            resource=group.name,
            deadline=held.deadline,
            priority=group.policy.backend_priority(held.job, time.monotonic()),
            backend=backend.entry.name,
            resume=held.resume,
            preemptible=held.job.preemptible and group.policy.name in PREEMPTING_POLICIES,
        )
        backoff = 0.05
        try:
            while True:
                remaining = held.deadline - time.time()
                if remaining <= 0:
                    raise AiosError("deadline_exceeded", "deadline passed while running")
                try:
                    maybe = await self._request_exec(held.service, req, remaining)
                    if maybe is None:  # the bus reconnected: our reply may be lost, ask again
                        continue
                    reply = maybe
                    break
                except nats.errors.NoRespondersError:
                    # No worker for this service right now (starting or restarting): the syscall is
                    # accepted, so wait for one until the deadline instead of failing it.
                    await asyncio.sleep(min(backoff, max(0.0, held.deadline - time.time())))
                    backoff = min(backoff * 2, 1.0)
                except nats.errors.TimeoutError as exc:
                    raise AiosError("deadline_exceeded", "no answer before the deadline") from exc
        except AiosError as exc:
            if exc.code == "deadline_exceeded":  # stop the backend work nobody waits for any more
                await self.bus.publish(
                    self.ns.ctl("llm", "control"), ControlRequest(id=call.id, action="cancel")
                )
            reply = ExecReply(outcome="done", result=SyscallResult.fail(call.id, exc.to_reply()))
        except Exception as exc:
            log.exception("dispatch of %s failed", call.id)
            reply = ExecReply(
                outcome="done", result=SyscallResult.fail(call.id, AiosError("internal", str(exc)).to_reply())
            )
        await self._after_run(group, backend, held, reply)

    async def _request_exec(self, service: str, req: ExecRequest, timeout: float) -> ExecReply | None:
        """One exec request; None if the bus reconnected meanwhile (the reply may have been lost).
        Re-sending is safe: the worker de-duplicates exec requests by syscall id."""
        reconnect = self.bus.next_reconnect()
        request = asyncio.ensure_future(
            self.bus.request(self.ns.exec(service), req, ExecReply, timeout=timeout)
        )
        waiters: set[asyncio.Future[Any]] = {request, reconnect}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if request.done():
            return request.result()
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, AiosError):
            await request
        log.info("bus reconnected while %s ran: asking its worker again", req.syscall.id)
        return None

    async def _after_run(self, group: Group, backend: BackendState, held: Held, reply: ExecReply) -> None:
        now = time.monotonic()
        ran = now - (held.dispatched or now)
        held.service_s += ran
        held.tokens += reply.usage.total_tokens
        backend.running.pop(held.call.id, None)
        held.released = time.time()
        group.wake.set()
        if held.call.id not in self.held:  # cancelled while running: already answered
            return
        if reply.outcome == "suspended":
            held.suspending, held.resume, held.dispatched = False, True, None
            group.policy.on_suspended(held.job, ran, now)
            self.accounts.record(held, suspended=True)
            self._event(held, "suspended", {"backend": backend.entry.name, "ran_s": ran})
            group.policy.push(held.job, now)
            self._event(held, "queued")
            return
        res = reply.result
        assert res is not None
        err = res.error
        if err is None:
            backend.breaker.on_success()
        elif err.code in FALLBACK_CODES:
            backend.breaker.on_failure(now, hard=err.code == "backend_unavailable")
            retry = err.details.get("retry_after_s")
            if err.code == "rate_limited" and isinstance(retry, int | float):
                backend.rate_wait_until = now + float(retry)
            if err.details.get("resumable"):  # output was produced (and maybe streamed): continue it
                held.resume = True
            held.failed_backends.add(backend.entry.name)
            if (
                held.runs < self.settings.max_attempts
                and held.deadline > time.time()
                and group.can_fall_back(held, now)
            ):
                # Fall back: the call goes back to the head of the line for another backend.
                held.dispatched = None
                group.policy.on_suspended(held.job, ran, now)
                group.policy.push(held.job, now)
                self._event(held, "queued", {"fallback_from": backend.entry.name, "code": err.code})
                return
        group.policy.on_finished(held.job, ran, now)
        await self._complete(held, group, res)

    async def _complete(self, held: Held, group: Group | None, res: SyscallResult) -> None:
        dispatched_wall = held.accepted + held.wait_s
        res = res.model_copy(
            update={"queued_ms": held.wait_s * 1000.0, "service_ms": held.service_s * 1000.0}
        )
        del dispatched_wall
        self.held.pop(held.call.id, None)
        self.parked.pop(held.call.id, None)
        self._progress.set()
        try:
            await self._store(held.call, res)
            await self._deliver(res, held.msg)  # type: ignore[arg-type]
        finally:
            if group is not None:
                group.wake.set()
        code = res.error.code if res.error else None
        state: SyscallState = "done" if code is None else ("cancelled" if code == "cancelled" else "failed")
        self.counters[state] += 1
        if res.result is not None:
            held.tokens = max(held.tokens, res.result.usage.total_tokens)
        self.accounts.record(held)
        await self.quotas.charge(held.call.agent, held.tokens)
        details: dict[str, JsonValue] = {
            "queued_ms": res.queued_ms,
            "service_ms": res.service_ms,
            "tokens": held.tokens,
            "runs": held.runs,
        }
        ran_to_end = held.dispatched is not None  # it held a slot until now (not queued)
        if held.backend and ran_to_end:
            details["backend"] = held.backend
        if code:
            details["code"] = code
        # Stamped when the slot was freed, so events alone show capacity was never exceeded.
        self._event(held, state, details, ts=held.released if ran_to_end else None)

    # --- results ---------------------------------------------------------------------------------
    async def _stored(self, syscall_id: str) -> StoredResult | None:
        try:
            entry = await self.results.get(syscall_id)
        except KeyNotFoundError:
            return None
        return StoredResult.model_validate_json(entry.value) if entry.value else None

    async def _store(self, call: Syscall, res: SyscallResult) -> None:
        await self.results.put(call.id, encode(StoredResult(agent=call.agent, result=res)))

    async def _deliver(self, res: SyscallResult, msg: Msg | None) -> None:
        await self.bus.nc.publish(self.ns.result(res.id), encode(res))
        if msg is not None:
            with contextlib.suppress(nats.errors.Error):
                await msg.ack()

    # --- control-plane handlers -----------------------------------------------------------------
    async def query(self, q: ResultQuery) -> SyscallResult:
        """`ctl.scheduler.result`: an agent fetches its own stored result."""
        self.tokens.authenticate(q.token, q.agent)
        stored = await self._stored(q.id)
        if stored is None or stored.agent != q.agent:  # someone else's result does not exist for you
            held = self.held.get(q.id)
            state = "pending" if held is not None and held.call.agent == q.agent else "unknown"
            raise AiosError("not_found", f"no result for {q.id}", details={"state": state})
        return stored.result

    async def cancel(self, req: CancelRequest) -> CancelReply:
        """`ctl.scheduler.cancel`: stop a syscall wherever it is (queued or running), free its slot."""
        self.tokens.authenticate(req.token, req.agent)
        held = self.held.get(req.id)
        if held is None or held.call.agent != req.agent:
            stored = await self._stored(req.id)
            if stored is not None and stored.agent == req.agent:
                return CancelReply(id=req.id, state="finished")
            raise AiosError("not_found", f"no syscall {req.id} of agent {req.agent!r}")
        group = self.groups.get(held.group)
        err = AiosError("cancelled", "cancelled by the agent").to_reply()
        if held.dispatched is None:
            if group is not None:
                group.policy.remove(held.call.id)
        else:
            await self.bus.publish(
                self.ns.ctl("llm", "control"), ControlRequest(id=held.call.id, action="cancel")
            )
            if held.task is not None:
                held.task.cancel()
            if group is not None:
                now = time.monotonic()
                for b in group.backends.values():
                    b.running.pop(held.call.id, None)
                held.released = time.time()
                held.service_s += now - held.dispatched
                group.policy.on_finished(held.job, now - held.dispatched, now)
        await self._complete(held, group, SyscallResult.fail(held.call.id, err))
        return CancelReply(id=req.id, state="cancelled")

    async def stats(self, q: StatsQuery) -> SchedulerStats:
        now = time.monotonic()
        resources = []
        for g in self.groups.values():
            by_agent: dict[str, list[int]] = defaultdict(lambda: [0, 0])
            for h in g.running():
                by_agent[h.call.agent][0] += 1
            for j in g.policy.jobs(now):
                by_agent[j.agent][1] += 1
            resources.append(
                ResourceStats(
                    name=g.name,
                    policy=g.policy.name,
                    capacity=g.capacity,
                    running=len(g.running()),
                    queued=len(g.policy),
                    by_agent=dict(by_agent),
                    backends=[
                        BackendStats(
                            name=b.entry.name,
                            slots=b.slots,
                            running=len(b.running),
                            max_running_seen=b.max_running_seen,
                            breaker=b.breaker.state(now),
                        )
                        for b in g.backends.values()
                    ],
                )
            )
        return SchedulerStats(
            instance=self.settings.instance,
            held=len(self.held),
            replicas=list(self.replicas.live) if self.replicas else [self.settings.instance],
            sharing=not self.replicas.in_grace if self.replicas else True,
            counters=dict(self.counters),
            resources=resources,
            agents=list(self.accounts.items.values()) if q.agents else [],
        )

    # --- housekeeping ----------------------------------------------------------------------------
    async def heartbeat_forever(self) -> None:
        """Keep held syscalls from being redelivered while we work on them; expire waiting ones."""
        interval = max(0.2, self.settings.ack_wait_s / 3)
        last_beat = 0.0
        while True:
            await asyncio.sleep(min(interval, 0.25))
            now = time.time()
            for held in list(self.held.values()):
                if held.dispatched is None and held.deadline <= now:
                    await self._expire_waiting(held)
            if now - last_beat >= interval:
                last_beat = now
                for held in list(self.held.values()):
                    if held.msg is not None:
                        with contextlib.suppress(nats.errors.Error):
                            await held.msg.in_progress()  # type: ignore[attr-defined]

    async def _expire_waiting(self, held: Held) -> None:
        group = self.groups.get(held.group)
        code: ErrorCode
        if held.call.id in self.parked:
            code, why = "deadline_exceeded", "deadline passed waiting for the llm service"
        elif group is not None and group.policy.remove(held.call.id) is not None:
            code, why = "deadline_exceeded", "deadline passed while queued"
            mono = time.monotonic()
            if any(b.rate_wait_until > mono for b in group.backends.values()):
                code, why = "rate_limited", "the backends' rate limits left no room before the deadline"
            elif held.failed_backends:  # it was waiting for a working backend
                code, why = (
                    "backend_unavailable",
                    f"no backend could serve it ({sorted(held.failed_backends)})",
                )
        else:
            return
        await self._complete(held, group, SyscallResult.fail(held.call.id, AiosError(code, why).to_reply()))

    async def release_queued(self) -> None:
        """On graceful shutdown: hand waiting syscalls back to JetStream at once, so another replica
        picks them up without waiting for the ack timeout."""
        for task in self.loops.values():
            task.cancel()
        for held in list(self.held.values()):
            if held.dispatched is None and held.msg is not None:
                with contextlib.suppress(nats.errors.Error):
                    await held.msg.nak()  # type: ignore[attr-defined]

    # --- events ----------------------------------------------------------------------------------
    def _event(
        self,
        held: Held,
        state: SyscallState,
        details: dict[str, JsonValue] | None = None,
        ts: float | None = None,
    ) -> None:
        c = held.call
        self._publish(
            SyscallEvent(
                ts=ts or time.time(),
                id=c.id,
                state=state,
                agent=c.agent,
                session=c.session,
                kind=c.kind,
                resource=held.group,
                details=details or {},
            )
        )

    def _publish(self, evt: SyscallEvent) -> None:
        async def send() -> None:
            with contextlib.suppress(nats.errors.Error):
                await self.bus.nc.publish(self.ns.event(evt.state), encode(evt))

        self.bus.spawn(send())

    def snapshot(self) -> dict[str, JsonValue]:
        groups: list[JsonValue] = [g for g in sorted(self.groups)]
        counters: dict[str, JsonValue] = dict(self.counters)
        return {"held": len(self.held), "counters": counters, "groups": groups}
