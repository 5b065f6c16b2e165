"""The scheduler's state machine, put together: admission -> policy queue of the resource ->
dispatch within capacity -> completion (result stored, caller told, then acked).

A syscall is *accepted* when JetStream acks the client's publish. The scheduler holds the JetStream
message (unacked, heartbeated by the consumer helper) while the syscall is queued or running,
stores the result in KV `AIOS_RESULTS`, tells the caller, and only then acks: a crash at any point
leads to redelivery, and a redelivered syscall whose result exists is answered from KV instead of
being re-run. The parts live in their own modules: `admission`, `dispatch`, `outcomes` (results and
events), `control` (cancel, result queries, stats), `resources` (what a syscall competes for).

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

from nats.aio.msg import Msg
from nats.js.kv import KeyValue
from pydantic import JsonValue, ValidationError

from aios_schemas import (
    AiosError,
    BackendEntry,
    ChatReply,
    EmbedReply,
    ErrorCode,
    LlmChat,
    ModelEntry,
    ResourceEntry,
    Syscall,
    SyscallEvent,
    SyscallResult,
    SyscallState,
    ToolsListReply,
)
from aios_schemas.envelope import ID_PATTERN

from ..runtime import Bus
from ..runtime.consumer import Delivery, JsConsumer
from .access import AccessTable
from .accounting import Accounts
from .admission import Admission, Refuse, Replay
from .approvals import Approvals
from .dispatch import BusExecutor, Dispatcher, Executor
from .groups import BackendState, Group, Held
from .outcomes import Outbox, ResultStore
from .policies import Policy, make_policy
from .quotas import Quotas
from .ratelimit import RateLimiter
from .replicas import Replicas
from .resources import Catalog, prompt_chars, resource_of
from .settings import SchedulerSettings

log = logging.getLogger(__name__)
_ID = re.compile(ID_PATTERN)


class Scheduler:
    def __init__(
        self,
        bus: Bus,
        results: ResultStore,
        limits: KeyValue,
        settings: SchedulerSettings,
        *,
        executor: Executor | None = None,
    ) -> None:
        self.bus = bus
        self.ns = bus.ns
        self.results = results
        self.limits = limits
        self.settings = settings
        self.held: dict[str, Held] = {}
        self.groups: dict[str, Group] = {}
        self.catalog = Catalog()
        # Set once the catalogue's entries at start are in: before it, a restarted scheduler would
        # not know which resources need an approval, nor any backend to run on.
        self.catalog_loaded = asyncio.Event()
        self.parked: dict[str, Held] = {}  # waiting for their resource to appear in the catalogue
        self._entries: dict[
            str, tuple[str, list[BackendEntry], float]
        ] = {}  # KV key -> (resource, lanes, seen)
        self.loops: dict[str, asyncio.Task[None]] = {}
        self.counters: dict[str, int] = defaultdict(int)
        self._progress = asyncio.Event()
        self.replicas: Replicas | None = None  # set by main(): how slots are split between replicas
        self.accounts = Accounts()
        self.quotas = Quotas(limits, settings.quotas)
        self.outbox = Outbox(bus)
        self.executor = executor or BusExecutor(bus)
        # The consumer that delivered the syscalls; what we hold, it heartbeats (set by main()).
        self.holds: JsConsumer[Syscall] | None = None
        self.access = AccessTable()  # the access rules, kept current by main()'s watch of KV
        self.approvals = Approvals(
            bus, self.access, self._enqueue, lambda h, res: self.complete(h, self.groups.get(h.group), res)
        )
        self.admission = Admission(
            self.ns,
            self.results,
            self.quotas,
            self.catalog,
            default_deadline_s=settings.default_deadline_s,
            access=self.access,
        )
        self.dispatcher = Dispatcher(
            self.held,
            self.executor,
            self.outbox,
            self.accounts,
            settings,
            self.complete,
            bus.spawn,
            self.catalog.ratios,
        )

    # --- catalogue -----------------------------------------------------------------------------
    async def watch_catalog(self) -> None:
        """Follow the models the llm replicas publish (KV `model.*`, one entry per replica) and the
        other resources their worker services publish (`res.*`). Two watches, not one on the whole
        bucket: it also holds rate windows and reservations, written on every admission."""
        models, others = asyncio.Event(), asyncio.Event()
        await asyncio.gather(
            self._watch_entries("model.>", models),
            self._watch_entries("res.>", others),
            self._both_loaded(models, others),
        )

    async def _both_loaded(self, *events: asyncio.Event) -> None:
        for e in events:
            await e.wait()
        self.catalog_loaded.set()

    async def _watch_entries(self, keys: str, loaded: asyncio.Event) -> None:
        watcher = await self.limits.watch(keys)
        async for entry in watcher:
            if entry is None:  # the end of what the bucket held when the watch began
                loaded.set()
                continue
            if not entry.value:  # deleted: a replica withdrew (graceful stop)
                self.withdraw(entry.key)
                continue
            try:
                if entry.key.startswith("model."):
                    model = ModelEntry.model_validate_json(entry.value)
                    self.confirm(entry.key, f"llm.{model.name}", model.backends)
                else:
                    res = ResourceEntry.model_validate_json(entry.value)
                    if res.requires_approval:
                        self.catalog.approval.add(res.name)
                    else:
                        self.catalog.approval.discard(res.name)
                    self.confirm(entry.key, res.name, res.lanes)
            except ValidationError:
                log.warning("ignoring malformed catalogue entry %s", entry.key)

    def confirm(self, key: str, resource: str, lanes: list[BackendEntry]) -> None:
        """A worker replica (its catalogue entry `key`) serves `resource` on `lanes`."""
        self._entries[key] = (resource, lanes, time.monotonic())
        self._rebuild(resource)

    def withdraw(self, key: str) -> None:
        gone = self._entries.pop(key, None)
        if gone is not None:
            self._rebuild(gone[0])

    def expire_catalog(self) -> None:
        """Forget what replicas that stopped confirming their entries served (killed, partitioned)."""
        cutoff = time.monotonic() - self.settings.catalog_ttl_s
        for key, (_, _, seen) in list(self._entries.items()):
            if seen < cutoff:
                log.warning(
                    "catalogue entry %s not confirmed for %.0fs: dropped", key, self.settings.catalog_ttl_s
                )
                self.withdraw(key)

    async def expire_catalog_forever(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.settings.catalog_ttl_s / 4))
            self.expire_catalog()

    def _rebuild(self, resource: str) -> None:
        """The lanes of `resource`: the union of what its live replicas serve."""
        lanes: dict[str, BackendEntry] = {}
        for res, entries, _ in self._entries.values():
            if res == resource:
                lanes.update((b.name, b) for b in entries)
        if lanes:
            self.publish_lanes(resource, list(lanes.values()))
        else:
            self.catalog.remove(resource)
            self._apply_lanes(resource, [])

    def publish_lanes(self, resource: str, lanes: list[BackendEntry]) -> None:
        """The lanes that serve `resource` now (new, or changed)."""
        self.catalog.set(resource, lanes)
        self._apply_lanes(resource, lanes)
        for held in [h for h in self.parked.values() if h.group == resource]:
            del self.parked[held.call.id]
            self._enqueue(held)

    def _apply_lanes(self, resource: str, lanes: list[BackendEntry]) -> None:
        group = self.groups.get(resource)
        if group is None:
            return
        names = {b.name for b in lanes}
        for b in lanes:
            state = group.backends.get(b.name)
            if state is None:
                group.backends[b.name] = self._lane(b)
            else:
                state.entry = b
                state.retired = False
                state.capacity = self.share(b.usable)
                window = self.settings.rate_window_s
                state.limiter = RateLimiter(self.limits, b, window) if (b.rpm or b.tpm) else None
        for name, state in group.backends.items():
            state.retired = name not in names  # runs in progress finish; nothing new starts there
        group.wake.set()

    def fetch_room(self) -> int:
        """How many syscalls to pull now. Alone, everything (the policy sees the whole queue).
        With other replicas, only about twice this replica's share of slots may wait here, so a
        replica with few slots does not hoard work that another could run now."""
        batch = self.settings.fetch_batch
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
        """The set of replicas changed: recompute this replica's share of every lane."""
        for group in self.groups.values():
            for b in group.backends.values():
                b.capacity = self.share(b.entry.usable)
            group.wake.set()

    def _lane(self, entry: BackendEntry) -> BackendState:
        window = self.settings.rate_window_s
        st = BackendState(
            entry=entry, limiter=RateLimiter(self.limits, entry, window) if (entry.rpm or entry.tpm) else None
        )
        st.capacity = self.share(entry.usable)
        st.breaker.threshold = self.settings.breaker_threshold
        st.breaker.cooldown_s = self.settings.breaker_cooldown_s
        return st

    def _policy_for(self, resource: str) -> Policy:
        override = dict(self.settings.resource_policies.get(resource, {}))
        if override:
            name = str(override.pop("name", self.settings.policy))
            return make_policy(name, **override)
        return make_policy(self.settings.policy, **self.settings.policy_params)

    def _group(self, held: Held) -> Group | None:
        group = self.groups.get(held.group)
        if group is None:
            lanes = self.catalog.get(held.group)
            if lanes is None:
                return None
            group = Group(
                name=held.group,
                policy=self._policy_for(held.group),
                backends={b.name: self._lane(b) for b in lanes},
            )
            self.groups[held.group] = group
            self.loops[held.group] = asyncio.create_task(self.dispatcher.loop(group))
        return group

    # --- admission -----------------------------------------------------------------------------
    async def admit(self, d: Delivery[Syscall]) -> None:
        """Take one syscall off the stream: answer it, refuse it, or queue it."""
        call = d.value
        impostor = self.admission.impostor(call, d.subject)
        if impostor is not None:
            # Answered to the sender alone, before anything else: nothing of the agent it names
            # (its syscall in hand, its stored result) is touched.
            sender, err = impostor
            if sender:
                await self.outbox.answer(sender, call.id, SyscallResult.fail(call.id, err.to_reply()))
            await d.term()
            self.counters["refused"] += 1
            return
        mine = self.held.get(call.id)
        if mine is not None:
            reused = Admission.reused_while_held(mine, call)
            if reused is None:  # redelivered while we still hold it: keep the newest handle
                mine.delivery = d
                self._hold(d)
                return
            await self._refuse(call, d, reused, store=False)
            return
        decision = await self.admission.decide(call, d, d.subject)
        if isinstance(decision, Replay):
            self.counters["redelivered_answered"] += 1
            await self.outbox.deliver(call.agent, decision.result, d)
            return
        if decision.audit is not None:
            self.approvals.audit(decision.audit)
        if isinstance(decision, Refuse):
            await self._refuse(call, d, decision.error, store=decision.store)
            return
        held = decision.held
        self.held[call.id] = held
        self._hold(d)
        self.counters["accepted"] += 1
        self.outbox.event(held, "accepted")
        if held.approval is not None:  # waits for an operator first
            await self.approvals.hold(held)
            return
        if self.catalog.get(held.group) is None:  # its workers have published nothing yet
            self.parked[call.id] = held
            return
        self._enqueue(held)

    def _hold(self, d: Delivery[Syscall]) -> None:
        if self.holds is not None:
            self.holds.hold(d.value.id, d)

    def _enqueue(self, held: Held) -> None:
        group = self._group(held)
        if group is None:
            self.parked[held.call.id] = held
            return
        group.policy.push(held.job, time.monotonic())
        self.outbox.event(held, "queued")
        group.wake.set()

    async def reject_malformed(self, msg: Msg, err: AiosError) -> None:
        """A message that is no valid syscall: answer the caller if it names a valid id (the
        consumer then drops it for good). The answer goes to the agent the *subject* names (whom
        NATS let publish there), never to one the body claims, and never about a syscall in hand.
        The id is the body's `id`, or, for a body with none to read (not JSON, not UTF-8, nested too
        deep), its `Nats-Msg-Id`: the id its sender awaits a result under."""
        try:
            raw = json.loads(msg.data)
            sid = raw.get("id") if isinstance(raw, dict) else None
        except (ValueError, RecursionError):
            sid = None
        if not (isinstance(sid, str) and _ID.match(sid)):
            sid = (msg.headers or {}).get("Nats-Msg-Id")
        agent = self.ns.sys_agent(msg.subject)
        if agent and isinstance(sid, str) and _ID.match(sid) and sid not in self.held:
            await self.outbox.answer(agent, sid, SyscallResult.fail(sid, err.to_reply()))

    async def _refuse(self, call: Syscall, d: Delivery[Syscall], exc: AiosError, *, store: bool) -> None:
        res = SyscallResult.fail(call.id, exc.to_reply()).model_copy(update={"request": call.digest()})
        if store:
            await self.results.put(call, res)
            await self.outbox.deliver(call.agent, res, d)
        else:  # the id is another request's: answer this one, leave the stored result alone
            await self.outbox.answer(call.agent, call.id, res)
            await d.term()
        self.counters["failed"] += 1
        self.outbox.publish(
            SyscallEvent(
                id=call.id,
                state="failed",
                agent=call.agent,
                session=call.session,
                kind=call.kind,
                details={"code": exc.code},
            )
        )

    # --- completion ------------------------------------------------------------------------------
    def _callable_tools(self, agent: str, reply: ToolsListReply) -> ToolsListReply:
        """`tools.list` answers only the tools the agent's access rules let it call (a denied one
        would be `forbidden` at admission): the model is never offered what it may not use."""

        def callable_(name: str) -> bool:
            verdict = self.access.check(agent, "tools.call", f"tools.{name}")
            return verdict is None or verdict.effect != "deny"

        entries = [e for e in reply.entries if callable_(e.name)]
        if len(entries) == len(reply.entries):
            return reply
        keep = {e.name for e in entries}
        tools = [t for t in reply.tools if t.function.name in keep]
        return reply.model_copy(update={"tools": tools, "entries": entries})

    async def complete(self, held: Held, group: Group | None, res: SyscallResult) -> None:
        res = res.model_copy(
            update={
                "queued_ms": held.wait_s * 1000.0,
                "service_ms": held.service_s * 1000.0,
                "request": held.digest,
            }
        )
        if isinstance(res.result, ToolsListReply):
            res = res.model_copy(update={"result": self._callable_tools(held.call.agent, res.result)})
        self.held.pop(held.call.id, None)
        self.parked.pop(held.call.id, None)
        if held.approval is not None:
            self.approvals.answered(held)
        if self.holds is not None:
            self.holds.release(held.call.id)
        self._progress.set()
        code = res.error.code if res.error else None
        state: SyscallState = "done" if code is None else ("cancelled" if code == "cancelled" else "failed")
        if isinstance(res.result, ChatReply | EmbedReply):  # what costs tokens
            held.tokens = max(held.tokens, res.result.usage.total_tokens)
            payload = held.call.payload
            if isinstance(res.result, ChatReply) and isinstance(payload, LlmChat) and held.runs == 1:
                # One uninterrupted run: its prompt_tokens are the prompt's (a resumed run's
                # would include the partial answer it continued).
                self.catalog.ratios.learn(
                    payload.model, prompt_chars(payload), res.result.usage.prompt_tokens
                )
        try:
            # The caller hears its result in the same socket write that stores it (no round trip
            # in between); the syscall is acked only once the store confirmed it. A crash before
            # that redelivers it, and the worker answers from the reply it kept: not run twice.
            await self.outbox.send(held.call.agent, res)
            await self.results.put(held.call, res)
            self._completed_event(held, state, res, code)  # rides with the ack
            await self.outbox.ack(held.delivery)
        finally:
            if group is not None:
                group.wake.set()
        self.counters[state] += 1
        self.accounts.record(held)
        try:
            await self.quotas.settle(held.reservation, held.tokens)
        except Exception:  # the result is out; a lost correction only errs on the agent's side
            log.exception("settling the quota of %s failed", held.call.id)

    def _completed_event(self, held: Held, state: SyscallState, res: SyscallResult, code: str | None) -> None:
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
        self.outbox.event(held, state, details, ts=held.released if ran_to_end else None)

    # --- housekeeping ----------------------------------------------------------------------------
    async def expire_forever(self) -> None:
        """Answer waiting syscalls whose deadline passed (running ones are bounded by the worker)."""
        while True:
            await asyncio.sleep(0.25)
            now = time.time()
            for held in list(self.held.values()):
                if held.dispatched is None and held.deadline <= now:
                    await self._expire_waiting(held)

    async def _expire_waiting(self, held: Held) -> None:
        if held.call.id in self.approvals.pending:
            await self.approvals.expire(held)
            return
        group = self.groups.get(held.group)
        code: ErrorCode
        if held.call.id in self.parked:
            code, why = "deadline_exceeded", f"deadline passed waiting for the {held.service} service"
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
        await self.complete(held, group, SyscallResult.fail(held.call.id, AiosError(code, why).to_reply()))

    async def release_queued(self) -> None:
        """On graceful shutdown: hand waiting syscalls back to JetStream at once, so another replica
        picks them up without waiting for the ack timeout."""
        for task in self.loops.values():
            task.cancel()
        for held in list(self.held.values()):
            if held.dispatched is None and held.delivery is not None:
                await held.delivery.nak()

    def resource_of(self, call: Syscall) -> str:
        return resource_of(call).name

    def snapshot(self) -> dict[str, JsonValue]:
        groups: list[JsonValue] = [g for g in sorted(self.groups)]
        counters: dict[str, JsonValue] = dict(self.counters)
        return {"held": len(self.held), "counters": counters, "groups": groups}
