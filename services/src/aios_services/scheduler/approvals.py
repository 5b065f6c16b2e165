"""Syscalls held for an operator's approval (a rule with effect `approve`).

The syscall stays held like a queued one (its JetStream message unacked and heartbeated), and its
request is written to KV `AIOS_ACCESS` as `approval.<id>`, so it survives a scheduler restart: the
redelivered syscall finds its entry (the watch loaded it before the first fetch) and waits again,
with the same deadline, or acts on a decision taken meanwhile. The access service writes the
decision into that entry; the watch hands it here: approved (maybe with edited arguments, validated
again as the syscall's payload) -> queued like any other call; rejected -> `approval_denied` with the
reason; no decision by the deadline -> `approval_denied`. The entry is deleted once the syscall is
answered.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import nats
from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import TypeAdapter, ValidationError

from aios_schemas import AiosError, Approval, AuditEvent, SyscallPayload, SyscallResult, encode

from ..runtime import Bus
from .access import AccessTable
from .groups import Held

log = logging.getLogger(__name__)
_PAYLOAD: TypeAdapter[SyscallPayload] = TypeAdapter(SyscallPayload)


def approval_key(syscall_id: str) -> str:
    return f"approval.{syscall_id}"


class Approvals:
    def __init__(
        self,
        bus: Bus,
        table: AccessTable,
        enqueue: Callable[[Held], None],
        complete: Callable[[Held, SyscallResult], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.table = table
        self.enqueue = enqueue
        self.complete = complete
        self.kv: KeyValue | None = None  # set by main()
        self.pending: dict[str, Held] = {}
        table.on_decision = self._decided

    def audit(self, evt: AuditEvent) -> None:
        self.bus.publish_soon(self.bus.ns.audit(evt.what), encode(evt))

    async def hold(self, held: Held) -> None:
        """Wait for a decision (asking for one unless it was asked before a restart)."""
        call, rule = held.call, held.approval
        assert rule is not None
        held.digest  # noqa: B018  (the original request's digest, before any edit of its arguments)
        # Waiting from now on, before any await: a decision the watch brings while the entry is
        # being written or read below finds the call (else it would be dropped, the call denied at
        # its deadline although approved).
        self.pending[call.id] = held
        entry = self.table.approvals.get(call.id)
        if entry is None or entry.agent != call.agent:
            entry = Approval(
                id=call.id,
                agent=call.agent,
                kind=call.kind,
                resource=held.group,
                rule=rule.id,
                payload=call.payload.model_dump(mode="json"),
                deadline=held.deadline,
            )
            if self.kv is not None:
                try:
                    await self.kv.create(approval_key(call.id), encode(entry))
                except KeyWrongLastSequenceError:  # asked already (by a replica that crashed since)
                    got = await self.kv.get(approval_key(call.id))
                    if got.value:
                        entry = Approval.model_validate_json(got.value)
                else:
                    self.audit(
                        AuditEvent(
                            what="approval_requested",
                            actor="scheduler",
                            agent=call.agent,
                            action=call.kind,
                            resource=held.group,
                            syscall=call.id,
                            rule=rule.id,
                            why=rule.note,
                            details={"deadline": entry.deadline},
                        )
                    )
            if self.pending.get(call.id) is not held:  # decided (or expired) meanwhile: done
                return
            current = self.table.approvals.get(call.id)
            if current is None or current.agent != call.agent:
                self.table.approvals[call.id] = entry
            else:  # the watch's copy came meanwhile: as new as ours, or newer (a decision)
                entry = current
        if entry.state != "pending":
            self._decided(entry)

    def _decided(self, a: Approval) -> None:
        held = self.pending.pop(a.id, None)
        if held is None or held.call.agent != a.agent:
            if held is not None:
                self.pending[a.id] = held
            return
        if a.state == "approved":
            if a.args is not None:
                try:
                    payload = _PAYLOAD.validate_python({**a.args, "kind": held.call.kind})
                except ValidationError as exc:
                    err = AiosError("approval_denied", f"the approved arguments are invalid: {exc}")
                    self.bus.spawn(self.complete(held, SyscallResult.fail(held.call.id, err.to_reply())))
                    return
                held.call = held.call.model_copy(update={"payload": payload})
            self.enqueue(held)
            return
        why = f"rejected by {a.decided_by or 'the operator'}" + (f": {a.reason}" if a.reason else "")
        err = AiosError("approval_denied", why, details={"rule": a.rule, "reason": a.reason})
        self.bus.spawn(self.complete(held, SyscallResult.fail(held.call.id, err.to_reply())))

    async def expire(self, held: Held) -> None:
        """No decision by the deadline: denied."""
        if self.pending.pop(held.call.id, None) is None:
            return
        rule = held.approval.id if held.approval else None
        self.audit(
            AuditEvent(
                what="expired",
                actor="scheduler",
                agent=held.call.agent,
                action=held.call.kind,
                resource=held.group,
                syscall=held.call.id,
                rule=rule,
                why="no decision before the deadline",
            )
        )
        err = AiosError(
            "approval_denied", "no operator approved it before its deadline", details={"rule": rule}
        )
        await self.complete(held, SyscallResult.fail(held.call.id, err.to_reply()))

    def answered(self, held: Held) -> None:
        """The syscall is answered: its approval entry goes."""
        self.pending.pop(held.call.id, None)
        self.table.approvals.pop(held.call.id, None)
        if self.kv is not None:
            kv = self.kv

            async def delete() -> None:
                with contextlib.suppress(nats.errors.Error):
                    await kv.delete(approval_key(held.call.id))

            self.bus.spawn(delete())

    def waiting_past(self, now: float) -> list[Held]:
        return [h for h in self.pending.values() if h.deadline <= now]


__all__ = ["Approvals", "approval_key"]
