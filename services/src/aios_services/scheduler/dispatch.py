"""Dispatch: start what fits on a resource's lanes, run it on its worker, and decide what its reply
means (done, suspended and queued again, or fall back to another lane).

One loop per resource. It knows resources, lanes and policies, not what a syscall does: the worker
subject comes from the resource, and a worker answers every kind of syscall with an `ExecReply`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import nats
from opentelemetry import trace
from pydantic import JsonValue

from aios_schemas import AiosError, ControlRequest, ExecReply, ExecRequest, SyscallResult

from ..runtime import Bus
from ..runtime.bus import WORKER_SILENCE_S, WorkerGone
from .accounting import Accounts
from .breaker import CircuitBreaker
from .groups import BackendState, Group, Held
from .outcomes import Outbox
from .resources import TokenRatios, cost_of
from .settings import SchedulerSettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
FALLBACK_CODES = frozenset({"backend_unavailable", "rate_limited"})
PREEMPTING_POLICIES = frozenset({"rr", "priority", "las"})

Complete = Callable[[Held, Group | None, SyscallResult], Awaitable[None]]


class NoWorker(Exception):
    """No worker answers the resource's exec subject right now (starting or restarting)."""


class Executor(Protocol):
    """How dispatch reaches the workers (the bus in production, a fake in unit tests)."""

    async def exec(self, service: str, req: ExecRequest, timeout: float) -> ExecReply | None:
        """Run `req`; None if the answer may have been lost (ask again: workers de-duplicate)."""
        ...

    async def control(self, service: str, syscall_id: str, action: Literal["suspend", "cancel"]) -> None: ...


class BusExecutor:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def exec(self, service: str, req: ExecRequest, timeout: float) -> ExecReply | None:
        reconnect = self.bus.next_reconnect()
        # To the workers that serve the chosen lane (replicas may serve different lanes).
        ns = self.bus.ns
        subject = ns.exec_lane(service, req.resource, req.backend) if req.backend else ns.exec(service)
        # Watched: the worker that takes it says so every second; one that falls silent (killed,
        # cut off) is noticed within WORKER_SILENCE_S, and the call is sent again, to any worker.
        request = asyncio.ensure_future(
            self.bus.request_watched(
                subject, req, ExecReply, timeout=timeout, heartbeat_s=1.0, silence_s=WORKER_SILENCE_S
            )
        )
        waiters: set[asyncio.Future[Any]] = {request, reconnect}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if request.done():
            try:
                return request.result()
            except nats.errors.NoRespondersError as exc:
                raise NoWorker(service) from exc
            except nats.errors.TimeoutError as exc:
                raise AiosError("deadline_exceeded", "no answer before the deadline") from exc
            except WorkerGone as exc:
                log.warning("%s went silent while running %s: asking again", exc, req.syscall.id)
                return None
        # The bus reconnected: replies addressed to us during the outage are lost.
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, nats.errors.Error, AiosError):
            await request
        log.info("bus reconnected while %s ran: asking its worker again", req.syscall.id)
        return None

    async def control(self, service: str, syscall_id: str, action: Literal["suspend", "cancel"]) -> None:
        with contextlib.suppress(nats.errors.Error):
            await self.bus.publish(
                self.bus.ns.ctl(service, "control"), ControlRequest(id=syscall_id, action=action)
            )


class Dispatcher:
    def __init__(
        self,
        held: dict[str, Held],
        executor: Executor,
        outbox: Outbox,
        accounts: Accounts,
        settings: SchedulerSettings,
        complete: Complete,
        spawn: Callable[[Awaitable[None]], asyncio.Task[None]],
        ratios: TokenRatios,
    ) -> None:
        self.held = held
        self.ratios = ratios
        self.executor = executor
        self.outbox = outbox
        self.accounts = accounts
        self.settings = settings
        self.complete = complete
        self.spawn = spawn

    async def loop(self, group: Group) -> None:
        while True:
            try:
                timeout = await self.dispatch(group)
            except Exception:
                log.exception("dispatch of %s failed", group.name)
                timeout = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.wake.wait(), timeout=timeout)
            group.wake.clear()

    async def dispatch(self, group: Group) -> float | None:
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
            lane = group.choose(held, now)
            if lane is None:
                break
            if lane.limiter is not None:
                wait = await lane.limiter.try_acquire(cost_of(held.call, self.ratios))
                if wait > 0:
                    lane.rate_wait_until = time.monotonic() + wait
                    continue
                now = time.monotonic()
            popped = group.policy.pop(now)
            if popped is None or popped.id != job.id:  # the order moved while we waited on KV
                if popped is not None:
                    group.policy.push(popped, now)
                continue
            self.start(group, lane, held, now)
        for job_id in group.policy.preempt(group.running_jobs(), now, free_slots=group.free_slots()):
            held = self.held.get(job_id)
            if held is not None and not held.suspending:
                held.suspending = True
                await self.executor.control(held.service, job_id, "suspend")
        timers = [t - now for t in self._timers(group, now) if t is not None]
        return max(0.001, min(timers)) if timers else None

    @staticmethod
    def _timers(group: Group, now: float) -> list[float | None]:
        out: list[float | None] = [group.policy.next_preemption(group.running_jobs(), now)]
        if len(group.policy):
            out += [b.rate_wait_until for b in group.backends.values() if b.rate_wait_until > now]
            out += [b.breaker.reopens_at() for b in group.backends.values()]
        return out

    def start(self, group: Group, lane: BackendState, held: Held, now: float) -> None:
        held.dispatched = now
        held.wait_s += now - (held.job.queued_at or now)
        held.backend = lane.entry.name
        held.runs += 1
        held.job.preemptible = lane.entry.continue_partial
        lane.running[held.call.id] = held
        lane.max_running_seen = max(lane.max_running_seen, len(lane.running))
        lane.breaker.on_dispatch(now, held.call.id)
        group.remember(held.job.program, lane.entry.name)
        details: dict[str, JsonValue] = {"backend": lane.entry.name, "run": held.runs}
        self.outbox.event(held, "resumed" if held.resume else "dispatched", details)
        held.task = self.spawn(self._run(group, lane, held))

    async def _run(self, group: Group, lane: BackendState, held: Held) -> None:
        # The run continues the agent's trace (traceparent came in the syscall's NATS headers);
        # the exec request passes it on to the worker.
        with tracer.start_as_current_span(
            f"run {held.call.kind}", context=held.trace, kind=trace.SpanKind.INTERNAL
        ) as span:
            span.set_attribute("aios.syscall.id", held.call.id)
            span.set_attribute("aios.backend", lane.entry.name)
            span.set_attribute("aios.run", held.runs)
            try:
                reply = await self._execute(group, lane, held)
            except asyncio.CancelledError:  # cancelled by its agent: it says nothing of the backend
                lane.breaker.on_inconclusive(held.call.id)
                raise
            try:
                await self.after_run(group, lane, held, reply)
            except (nats.errors.Error, OSError) as exc:
                # The result could not be stored or sent (the bus is away): the syscall stays unacked,
                # JetStream redelivers it, and the worker answers it with the reply it kept.
                log.warning("completing %s failed (%s); it will be redelivered", held.call.id, exc)

    async def _execute(self, group: Group, lane: BackendState, held: Held) -> ExecReply:
        call = held.call
        req = ExecRequest(
            syscall=call,
            resource=group.name,
            deadline=held.deadline,
            priority=group.policy.backend_priority(held.job, time.monotonic()),
            backend=lane.entry.name,
            resume=held.resume,
            preemptible=held.job.preemptible and group.policy.name in PREEMPTING_POLICIES,
            again=held.redelivered,
        )
        backoff = 0.05
        try:
            while True:
                remaining = held.deadline - time.time()
                if remaining <= 0:
                    raise AiosError("deadline_exceeded", "deadline passed while running")
                try:
                    reply = await self.executor.exec(held.service, req, remaining)
                except NoWorker:
                    # The syscall is accepted: wait for a worker until the deadline, do not fail it.
                    await asyncio.sleep(min(backoff, max(0.0, held.deadline - time.time())))
                    backoff = min(backoff * 2, 1.0)
                    continue
                if reply is not None:
                    return reply
                # The answer may be lost with its worker: ask again, saying so, so the worker that
                # gets it looks for a kept reply (or a started at-most-once run) before running it.
                req = req.model_copy(update={"again": True})
        except AiosError as exc:
            if exc.code == "deadline_exceeded":  # stop the work nobody waits for any more
                await self.executor.control(held.service, call.id, "cancel")
            return ExecReply(outcome="done", result=SyscallResult.fail(call.id, exc.to_reply()))
        except Exception as exc:
            log.exception("dispatch of %s failed", call.id)
            err = AiosError("internal", str(exc)).to_reply()
            return ExecReply(outcome="done", result=SyscallResult.fail(call.id, err))

    @staticmethod
    def _judge(breaker: CircuitBreaker, now: float, call: str, dispatched: float, reply: ExecReply) -> None:
        """What a run's end says of its backend: it works (done, or suspended after producing
        output), it fails (unreachable, rate-limited), or nothing (cancelled, deadline, bad request)."""
        err = reply.result.error if reply.result is not None else None
        if err is None:
            breaker.on_success(now, call, dispatched)
        elif err.code in FALLBACK_CODES:
            breaker.on_failure(now, call, dispatched, hard=err.code == "backend_unavailable")
        else:
            breaker.on_inconclusive(call)

    async def after_run(self, group: Group, lane: BackendState, held: Held, reply: ExecReply) -> None:
        now = time.monotonic()
        dispatched = held.dispatched or now
        ran = now - dispatched
        held.service_s += ran
        held.tokens += reply.usage.total_tokens
        lane.running.pop(held.call.id, None)
        held.released = time.time()
        self._judge(lane.breaker, now, held.call.id, dispatched, reply)
        group.wake.set()
        if held.call.id not in self.held:  # cancelled while running: already answered
            return
        if reply.outcome == "suspended":
            held.suspending, held.resume, held.dispatched = False, True, None
            group.policy.on_suspended(held.job, ran, now)
            self.accounts.record(held, suspended=True)
            self.outbox.event(held, "suspended", {"backend": lane.entry.name, "ran_s": ran})
            group.policy.push(held.job, now)
            self.outbox.event(held, "queued")
            return
        res = reply.result
        assert res is not None
        err = res.error
        if err is not None and err.code in FALLBACK_CODES:
            retry = err.details.get("retry_after_s")
            if err.code == "rate_limited" and isinstance(retry, int | float):
                lane.rate_wait_until = now + float(retry)
            if err.details.get("resumable"):  # output was produced (and maybe streamed): continue it
                held.resume = True
            held.failed_backends.add(lane.entry.name)
            if (
                held.runs < self.settings.max_attempts
                and held.deadline > time.time()
                and group.can_fall_back(held, now)
            ):
                # Fall back: the call goes back to the head of the line for another lane.
                held.dispatched = None
                group.policy.on_suspended(held.job, ran, now)
                group.policy.push(held.job, now)
                self.outbox.event(held, "queued", {"fallback_from": lane.entry.name, "code": err.code})
                return
        group.policy.on_finished(held.job, ran, now)
        await self.complete(held, group, res)
