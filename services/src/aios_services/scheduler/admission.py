"""Admission: what happens to a syscall taken off the stream before it is queued.

Decides, without touching the queues: answer it from its stored result (a redelivery or a replay),
refuse it (`conflict`, `forbidden`, `deadline_exceeded`, `quota_exceeded`...), or accept it
as a `Held` syscall bound to its resource, with its quota reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aios_schemas import AiosError, AuditEvent, Namespace, Syscall, SyscallResult
from aios_schemas.ids import id_time

from ..runtime.consumer import Delivery
from ..runtime.telemetry import extract
from .access import AccessTable, Verdict, flagged
from .groups import Held
from .outcomes import ResultStore
from .policies import Job
from .quotas import Quotas
from .resources import Catalog, cost_of, resource_of
from .streams import DUPLICATE_WINDOW_S

# Which syscalls can skip the stored-result lookup (a KV read and a round trip on every admission).
# JetStream drops a syscall whose id (its Nats-Msg-Id) was published within DUPLICATE_WINDOW_S (W),
# so the scheduler sees an id again only if W or more passed between the two publications (or on a
# redelivery). A UUIDv7 id carries its creation time t. Admission refuses ids whose t lies more than
# CLOCK_SKEW_S (S) after the time the stream stored them (p), and looks up every id whose t is more
# than FRESH_S (F) before p. So a first delivery of an id with p - F <= t <= p + S whose Nats-Msg-Id is
# the id cannot have run before: an earlier publication p1 would have t <= p1 + S (or been refused,
# storing nothing), hence p - p1 <= F + S < W, and JetStream would have dropped this one.
FRESH_S = 300.0
CLOCK_SKEW_S = 120.0
assert FRESH_S + CLOCK_SKEW_S < DUPLICATE_WINDOW_S


@dataclass(frozen=True)
class Replay:
    """Already answered: send the stored result again (to its own agent, for the same request)."""

    result: SyscallResult


@dataclass(frozen=True)
class Refuse:
    """Answer with this error. `store`: keep it as the call's result (False when the id belongs
    to another request, whose stored result must not be overwritten)."""

    error: AiosError
    store: bool = True
    audit: AuditEvent | None = None  # a refusal by an access rule: what the audit trail gets


@dataclass(frozen=True)
class Accept:
    held: Held
    audit: AuditEvent | None = None  # an access rule matched: what the audit trail gets


Decision = Replay | Refuse | Accept


class Admission:
    def __init__(
        self,
        ns: Namespace,
        results: ResultStore,
        quotas: Quotas,
        catalog: Catalog,
        *,
        default_deadline_s: float,
        access: AccessTable | None = None,
    ) -> None:
        self.access = access or AccessTable()
        self.ns = ns
        self.catalog = catalog
        self.results = results
        self.quotas = quotas
        self.default_deadline_s = default_deadline_s

    async def decide(self, call: Syscall, delivery: Delivery[Syscall] | None, subject: str) -> Decision:
        skewed = _from_the_future(call, delivery)
        if skewed is not None:
            return Refuse(skewed, store=False)
        if self.access.revoked(call.agent):  # published before its identity was revoked
            return Refuse(AiosError("unauthenticated", f"agent {call.agent!r} was revoked"), store=False)
        stored = None if _surely_new(call, delivery) else await self.results.get(call.id)
        if stored is not None:
            if stored.agent != call.agent or (stored.digest is not None and stored.digest != call.digest()):
                return Refuse(_reused(call), store=False)
            return Replay(stored.result)
        now = time.time()
        # No deadline: the default, from when the call was made (a `created` in the future cannot
        # push it further away than from now).
        deadline = call.deadline or (min(call.created, now) + self.default_deadline_s)
        try:
            # (Who sent it was settled before: `impostor`.)
            if subject != self.ns.sys(call.kind, call.agent):
                raise AiosError("invalid_request", f"{call.kind} published on {subject}")
            if deadline <= now:
                raise AiosError("deadline_exceeded", "deadline passed before admission")
            ref = resource_of(call)
            if self.catalog.known(ref.service) and self.catalog.get(ref.name) is None:
                # Its workers are up and serve no such resource. (With no catalogue yet, the service
                # is starting: the call is accepted and waits for it, until its deadline.)
                raise self.catalog.unknown(ref)
            verdict = self.access.check(call.agent, call.kind, ref.name)
            if ref.name in self.catalog.approval and (verdict is None or verdict.effect == "allow"):
                verdict = Verdict("approve", flagged(call.agent, call.kind, ref.name))
            audit = None
            if verdict is not None and verdict.effect != "approve":  # (approvals audit themselves)
                audit = AuditEvent(
                    what="allowed" if verdict.effect == "allow" else "denied",
                    actor="scheduler",
                    agent=call.agent,
                    action=call.kind,
                    resource=ref.name,
                    syscall=call.id,
                    rule=verdict.rule.id if verdict.rule else None,
                    why=verdict.rule.note if verdict.rule else "not on the allow-list",
                    details={"rules": list(verdict.listed)} if verdict.listed else {},
                )
                if verdict.effect == "deny":
                    return Refuse(verdict.error(call.agent, call.kind, ref.name), audit=audit)
            reservation = await self.quotas.reserve(
                call.id, call.agent, cost_of(call, self.catalog.ratios), now
            )
        except AiosError as exc:
            return Refuse(exc)
        held = Held(
            call=call.model_copy(update={"token": None}),  # no secret travels past admission
            delivery=delivery,
            trace=extract(delivery.headers) if delivery is not None else None,
            group=ref.name,
            service=ref.service,
            accepted=now,
            deadline=deadline,
            job=Job(
                id=call.id,
                agent=call.agent,
                program=call.session or call.agent,
                arrival=time.monotonic(),
                priority=call.priority,
            ),
            reservation=reservation,
            redelivered=delivery is not None and delivery.delivered > 1,
            approval=verdict.rule if verdict is not None and verdict.effect == "approve" else None,
        )
        return Accept(held, audit)

    def impostor(self, call: Syscall, subject: str) -> tuple[str | None, AiosError] | None:
        """Who the agent is: NATS authenticated its connection and let it publish only on subjects
        that carry its name (runtime/natsauth.py), so the subject says who sent the syscall. A body
        naming someone else is refused: (the sender to answer, if any, and the error)."""
        sender = self.ns.sys_agent(subject)
        if sender == call.agent:
            return None
        return sender, AiosError("forbidden", f"agent {sender!r} may not make syscalls as {call.agent!r}")

    @staticmethod
    def reused_while_held(held: Held, call: Syscall) -> AiosError | None:
        """A message with the id of a syscall in hand: a redelivery (None) or another request."""
        if held.call.agent != call.agent or held.digest != call.digest():
            return _reused(call)
        return None


def _surely_new(call: Syscall, delivery: Delivery[Syscall] | None) -> bool:
    """No result can be stored for this id yet (see FRESH_S): no need to look."""
    if delivery is None or delivery.delivered > 1 or delivery.msg_id != call.id:
        return False
    t, p = id_time(call.id), delivery.stored_at
    return t is not None and p is not None and p - FRESH_S <= t <= p + CLOCK_SKEW_S


def _from_the_future(call: Syscall, delivery: Delivery[Syscall] | None) -> AiosError | None:
    t, p = id_time(call.id), delivery.stored_at if delivery is not None else None
    if t is None or p is None or t <= p + CLOCK_SKEW_S:
        return None
    return AiosError(
        "invalid_request",
        f"syscall id {call.id} was made {t - p:.0f}s after the kernel received it: the client's clock"
        f" is ahead by more than {CLOCK_SKEW_S:.0f}s (fix the clock, then use a new id)",
        retryable=False,
        details={"ahead_s": round(t - p, 3)},
    )


def _reused(call: Syscall) -> AiosError:
    return AiosError(
        "conflict",
        f"syscall id {call.id} was already used for another request: use a new id",
        retryable=False,
    )
