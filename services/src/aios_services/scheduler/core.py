"""Admission, policy queues and dispatch: the scheduler's state machine.

A syscall is *accepted* when JetStream acks the client's publish. The scheduler holds the JetStream
message (unacked, heartbeated) while the syscall is queued or running, stores the result in KV
`AIOS_RESULTS`, tells the caller, and only then acks: a crash at any point leads to redelivery,
and a redelivered syscall whose result exists is answered from KV instead of being re-run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from dataclasses import dataclass, field

import nats
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue
from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from aios_schemas import (
    AiosError,
    ExecRequest,
    ResourceLimits,
    ResultQuery,
    Syscall,
    SyscallEvent,
    SyscallResult,
    SyscallState,
    encode,
    resource_key,
)
from aios_schemas.envelope import ID_PATTERN
from aios_schemas.wire import validation_error

from ..runtime import Bus
from ..runtime.tokens import TokenStore
from .policies import Job, Policy, make_policy
from .settings import SchedulerSettings

log = logging.getLogger(__name__)
_ID = re.compile(ID_PATTERN)


class StoredResult(BaseModel):
    """What the scheduler keeps in KV per syscall: the result and whose it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    agent: str
    result: SyscallResult


@dataclass
class Held:
    """An accepted syscall the scheduler holds until its result is stored."""

    call: Syscall
    msg: Msg | None
    resource: str
    service: str
    accepted: float
    deadline: float
    job: Job
    dispatched: float | None = None
    task: asyncio.Task[None] | None = None


@dataclass
class Resource:
    name: str
    capacity: int
    policy: Policy
    running: dict[str, Held] = field(default_factory=dict)

    @property
    def free(self) -> int:
        return self.capacity - len(self.running)


class Scheduler:
    def __init__(
        self, bus: Bus, results: KeyValue, limits: KeyValue, tokens: TokenStore, settings: SchedulerSettings
    ) -> None:
        self.bus = bus
        self.ns = bus.ns
        self.results = results
        self.limits = limits
        self.tokens = tokens
        self.settings = settings
        self.held: dict[str, Held] = {}
        self.resources: dict[str, Resource] = {}
        self.counters = {"accepted": 0, "done": 0, "failed": 0, "redelivered_answered": 0}

    # --- admission ---------------------------------------------------------------------------
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
        except AiosError as exc:
            await self._finish_early(call, msg, exc)
            return
        service = call.kind.split(".", 1)[0]
        resource = await self._resource(call)
        held = Held(
            call=call,
            msg=msg,
            resource=resource.name,
            service=service,
            accepted=now,
            deadline=deadline,
            job=Job(
                id=call.id,
                agent=call.agent,
                program=call.session or call.agent,
                arrival=now,
                priority=call.priority,
            ),
        )
        self.held[call.id] = held
        self.counters["accepted"] += 1
        self._event(held, "accepted")
        resource.policy.push(held.job, now)
        self._event(held, "queued")
        self.dispatch(resource)

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
        self.bus.spawn(self._publish_event(call, "failed", None, {"code": exc.code}))

    async def _resource(self, call: Syscall) -> Resource:
        # One resource per model for now; the LLM-core issue splits it per backend.
        name = f"llm.{call.payload.model}"
        res = self.resources.get(name)
        if res is None:
            capacity = self.settings.llm_slots
            with contextlib.suppress(KeyNotFoundError):
                entry = await self.limits.get(resource_key(name))
                if entry.value:
                    capacity = ResourceLimits.model_validate_json(entry.value).capacity
            res = Resource(name=name, capacity=capacity, policy=make_policy(self.settings.policy))
            self.resources[name] = res
        return res

    # --- dispatch ----------------------------------------------------------------------------
    def dispatch(self, resource: Resource) -> None:
        """Start as many queued syscalls as the resource has free slots."""
        now = time.time()
        while resource.free > 0:
            job = resource.policy.pop(now)
            if job is None:
                return
            held = self.held[job.id]
            held.dispatched = now
            resource.running[job.id] = held
            self._event(held, "dispatched")
            held.task = self.bus.spawn(self._run(held, resource))

    async def _run(self, held: Held, resource: Resource) -> None:
        call = held.call
        req = ExecRequest(
            syscall=call, resource=resource.name, deadline=held.deadline, priority=call.priority
        )
        backoff = 0.05
        try:
            while True:
                remaining = held.deadline - time.time()
                if remaining <= 0:
                    raise AiosError("deadline_exceeded", "deadline passed while running")
                try:
                    res = await self.bus.request(
                        self.ns.exec(held.service), req, SyscallResult, timeout=remaining
                    )
                    break
                except nats.errors.NoRespondersError:
                    # No worker for this service right now (starting or restarting): the syscall is
                    # accepted, so wait for one until the deadline instead of failing it.
                    await asyncio.sleep(min(backoff, max(0.0, held.deadline - time.time())))
                    backoff = min(backoff * 2, 1.0)
                except nats.errors.TimeoutError as exc:
                    raise AiosError("deadline_exceeded", "no answer before the deadline") from exc
        except AiosError as exc:
            res = SyscallResult.fail(call.id, exc.to_reply())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("dispatch of %s failed", call.id)
            res = SyscallResult.fail(call.id, AiosError("internal", str(exc)).to_reply())
        await self._complete(held, resource, res)

    async def _complete(self, held: Held, resource: Resource, res: SyscallResult) -> None:
        now = time.time()
        dispatched = held.dispatched or now
        res = res.model_copy(
            update={
                "queued_ms": (dispatched - held.accepted) * 1000.0,
                "service_ms": (now - dispatched) * 1000.0,
            }
        )
        resource.running.pop(held.call.id, None)
        resource.policy.on_finished(held.job, now - dispatched, now)
        try:
            await self._store(held.call, res)
            await self._deliver(res, held.msg)
        finally:
            self.held.pop(held.call.id, None)
            self.dispatch(resource)
        ok = res.status == "ok"
        self.counters["done" if ok else "failed"] += 1
        details: dict[str, JsonValue] = {"queued_ms": res.queued_ms, "service_ms": res.service_ms}
        if res.error is not None:
            details["code"] = res.error.code
        self._event(held, "done" if ok else "failed", details)

    # --- results -----------------------------------------------------------------------------
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

    async def query(self, q: ResultQuery) -> SyscallResult:
        """Handler of `ctl.scheduler.result`: an agent fetches its own stored result."""
        self.tokens.authenticate(q.token, q.agent)
        stored = await self._stored(q.id)
        if stored is None or stored.agent != q.agent:  # someone else's result does not exist for you
            state = "pending" if q.id in self.held and self.held[q.id].call.agent == q.agent else "unknown"
            raise AiosError("not_found", f"no result for {q.id}", details={"state": state})
        return stored.result

    # --- housekeeping ------------------------------------------------------------------------
    async def heartbeat_forever(self) -> None:
        """Keep held syscalls from being redelivered while we work on them; expire queued ones."""
        interval = max(0.2, self.settings.ack_wait_s / 3)
        while True:
            await asyncio.sleep(min(interval, 0.5))
            now = time.time()
            for held in list(self.held.values()):
                if held.dispatched is None and held.deadline <= now:
                    await self._expire_queued(held)
            if now - getattr(self, "_last_beat", 0.0) >= interval:
                self._last_beat = now
                for held in list(self.held.values()):
                    if held.msg is not None:
                        with contextlib.suppress(nats.errors.Error):
                            await held.msg.in_progress()

    async def _expire_queued(self, held: Held) -> None:
        resource = self.resources[held.resource]
        if resource.policy.remove(held.call.id) is None:
            return
        err = AiosError("deadline_exceeded", "deadline passed while queued")
        await self._complete(held, resource, SyscallResult.fail(held.call.id, err.to_reply()))

    async def release_queued(self) -> None:
        """On graceful shutdown: hand queued (not running) syscalls back to JetStream at once, so
        another replica picks them up without waiting for the ack timeout."""
        for held in list(self.held.values()):
            if held.dispatched is None and held.msg is not None:
                with contextlib.suppress(nats.errors.Error):
                    await held.msg.nak()

    def _event(self, held: Held, state: SyscallState, details: dict[str, JsonValue] | None = None) -> None:
        self.bus.spawn(self._publish_event(held.call, state, held.resource, details))

    async def _publish_event(
        self, call: Syscall, state: SyscallState, resource: str | None, details: dict[str, JsonValue] | None
    ) -> None:
        evt = SyscallEvent(
            id=call.id,
            state=state,
            agent=call.agent,
            session=call.session,
            kind=call.kind,
            resource=resource,
            details=details or {},
        )
        with contextlib.suppress(nats.errors.Error):
            await self.bus.nc.publish(self.ns.event(state), encode(evt))

    def snapshot(self) -> dict[str, JsonValue]:
        return {
            "held": len(self.held),
            "counters": dict(self.counters),
            "resources": {
                r.name: {"capacity": r.capacity, "running": len(r.running), "queued": len(r.policy)}
                for r in self.resources.values()
            },
        }
