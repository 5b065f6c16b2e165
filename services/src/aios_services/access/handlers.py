"""`ctl.access.*` (the operator's user only): identities, groups, rules and approvals' decisions.
Rules, groups, agents' groups and approvals live in KV `AIOS_ACCESS`, which the scheduler follows;
every change and decision is an audit event."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue
from pydantic import JsonValue, TypeAdapter, ValidationError

from aios_schemas import (
    AccessRule,
    AgentAccess,
    AgentAdd,
    AgentAdded,
    AgentGroups,
    AgentInfo,
    AgentList,
    AgentListReply,
    AgentRevoke,
    AiosError,
    Approval,
    ApprovalDecide,
    ApprovalList,
    ApprovalListReply,
    AuditEvent,
    AuditWhat,
    GroupAdd,
    GroupInfo,
    GroupList,
    GroupListReply,
    RuleAdd,
    RuleList,
    RuleListReply,
    RuleRemove,
    SyscallPayload,
    encode,
)

from ..runtime import Bus
from ..runtime.natsauth import agent_user, hash_password
from ..runtime.tokens import new_token
from .bususers import BusUsers
from .store import Identities

_PAYLOAD: TypeAdapter[SyscallPayload] = TypeAdapter(SyscallPayload)


@dataclass
class AccessHandlers:
    bus: Bus
    kv: KeyValue
    ids: Identities
    users: BusUsers | None
    _lock: asyncio.Lock | None = None

    @property
    def lock(self) -> asyncio.Lock:  # identity changes one at a time (config rewrite + reload)
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def audit(self, evt: AuditEvent) -> None:
        self.bus.publish_soon(self.bus.ns.audit(evt.what), encode(evt))

    async def _items(self, prefix: str) -> list[bytes]:
        try:
            keys = await self.kv.keys()
        except NoKeysError:
            return []
        out = []
        for key in keys:
            if key.startswith(prefix):
                with contextlib.suppress(KeyNotFoundError):
                    entry = await self.kv.get(key)
                    if entry.value:
                        out.append(entry.value)
        return out

    async def _exists(self, key: str) -> bool:
        try:
            return bool((await self.kv.get(key)).value)
        except KeyNotFoundError:
            return False

    async def sync_bus_users(self) -> None:
        if self.users is None:
            raise AiosError("internal", "this access service does not manage the bus's users")
        live = await asyncio.to_thread(self.ids.live_hashes)
        await self.users.apply([agent_user(name, h) for name, h in live])

    # --- identities ----------------------------------------------------------------------------
    async def agent_add(self, req: AgentAdd) -> AgentAdded:
        if self.users is None:
            raise AiosError("invalid_request", "agents cannot be added here: the bus's users are static")
        async with self.lock:
            if req.name in self.users.static_names():
                raise AiosError("conflict", f"{req.name!r} is a user of the deployment's config")
            known = await asyncio.to_thread(self.ids.get, req.name)
            if known is not None and known.revoked is None:
                raise AiosError("conflict", f"agent {req.name!r} exists")
            for g in req.groups:
                if not await self._exists(f"group.{g}"):
                    raise AiosError("not_found", f"no group {g!r}", details={"group": g})
            token = new_token()
            await asyncio.to_thread(self.ids.put, req.name, hash_password(token), list(req.groups))
            await self.kv.put(
                f"agent.{req.name}", encode(AgentAccess(name=req.name, groups=list(req.groups)))
            )
            try:
                await self.sync_bus_users()
            except Exception:  # not on the bus: it must not exist half-way (its token is never shown)
                await asyncio.to_thread(self.ids.revoke, req.name)
                await self.kv.put(f"agent.{req.name}", encode(AgentAccess(name=req.name, revoked=True)))
                raise
        self.audit(
            AuditEvent(
                what="agent_added", actor="operator", agent=req.name, details={"groups": list(req.groups)}
            )
        )
        return AgentAdded(name=req.name, token=token, groups=list(req.groups))

    async def agent_list(self, req: AgentList) -> AgentListReply:
        return AgentListReply(agents=await asyncio.to_thread(self.ids.all, req.revoked))

    async def agent_revoke(self, req: AgentRevoke) -> AgentInfo:
        async with self.lock:
            known = await asyncio.to_thread(self.ids.get, req.name)
            if known is None:
                raise AiosError("not_found", f"no agent {req.name!r} added by the access service")
            if known.revoked is not None:
                return known
            info = await asyncio.to_thread(self.ids.revoke, req.name)
            assert info is not None
            # The scheduler refuses its syscalls still in the stream; the bus drops its connections.
            await self.kv.put(
                f"agent.{req.name}", encode(AgentAccess(name=req.name, groups=info.groups, revoked=True))
            )
            await self.sync_bus_users()
        self.audit(AuditEvent(what="agent_revoked", actor="operator", agent=req.name))
        return info

    async def agent_groups(self, req: AgentGroups) -> AgentAccess:
        """An agent's groups (the scheduler's copy follows KV `agent.<name>`)."""
        for g in req.groups:
            if not await self._exists(f"group.{g}"):
                raise AiosError("not_found", f"no group {g!r}", details={"group": g})
        async with self.lock:
            known = await asyncio.to_thread(self.ids.get, req.name)
            static = self.users is not None and req.name in self.users.static_names()
            if known is not None and known.revoked is not None:
                raise AiosError("conflict", f"agent {req.name!r} was revoked")
            if known is None and not static and self.users is not None:
                raise AiosError("not_found", f"no agent {req.name!r}")
            if known is not None:
                await asyncio.to_thread(self.ids.set_groups, req.name, list(req.groups))
            access = AgentAccess(name=req.name, groups=list(req.groups))
            await self.kv.put(f"agent.{req.name}", encode(access))
        self.audit(
            AuditEvent(
                what="agent_groups", actor="operator", agent=req.name, details={"groups": list(req.groups)}
            )
        )
        return access

    # --- groups and rules ----------------------------------------------------------------------
    async def group_add(self, req: GroupAdd) -> GroupInfo:
        group = GroupInfo(name=req.name, description=req.description)
        try:
            await self.kv.create(f"group.{req.name}", encode(group))
        except KeyWrongLastSequenceError as exc:
            raise AiosError("conflict", f"group {req.name!r} exists") from exc
        self.audit(
            AuditEvent(what="group_added", actor="operator", why=req.description, details={"group": req.name})
        )
        return group

    async def group_list(self, req: GroupList) -> GroupListReply:
        groups = [GroupInfo.model_validate_json(v) for v in await self._items("group.")]
        return GroupListReply(groups=sorted(groups, key=lambda g: g.name))

    async def rule_add(self, req: RuleAdd) -> AccessRule:
        if req.who.startswith("group:") and not await self._exists(f"group.{req.who[6:]}"):
            raise AiosError("not_found", f"no group {req.who[6:]!r}")
        rule = AccessRule(
            id=req.id or "r-" + uuid.uuid4().hex[:8],
            who=req.who,
            action=req.action,
            resource=req.resource,
            effect=req.effect,
            note=req.note,
        )
        try:
            await self.kv.create(f"rule.{rule.id}", encode(rule))
        except KeyWrongLastSequenceError as exc:
            raise AiosError("conflict", f"rule {rule.id!r} exists") from exc
        self.audit(_rule_event("rule_added", rule))
        return rule

    async def rule_list(self, req: RuleList) -> RuleListReply:
        rules = [AccessRule.model_validate_json(v) for v in await self._items("rule.")]
        return RuleListReply(rules=sorted(rules, key=lambda r: r.created))

    async def rule_remove(self, req: RuleRemove) -> AccessRule:
        try:
            entry = await self.kv.get(f"rule.{req.id}")
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise AiosError("not_found", f"no rule {req.id!r}")
        rule = AccessRule.model_validate_json(entry.value)
        await self.kv.delete(f"rule.{req.id}")
        self.audit(_rule_event("rule_removed", rule))
        return rule

    # --- approvals -----------------------------------------------------------------------------
    async def approvals(self, req: ApprovalList) -> ApprovalListReply:
        found = [Approval.model_validate_json(v) for v in await self._items("approval.")]
        return ApprovalListReply(
            approvals=sorted((a for a in found if a.state == "pending"), key=lambda a: a.requested)
        )

    async def decide(self, req: ApprovalDecide) -> Approval:
        key = f"approval.{req.id}"
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            entry = None
        if entry is None or not entry.value:
            raise AiosError("not_found", f"no syscall {req.id} waits for approval")
        a = Approval.model_validate_json(entry.value)
        if a.state != "pending":
            raise AiosError("conflict", f"syscall {req.id} was {a.state} already")
        if not req.approve and not req.reason.strip():
            raise AiosError("invalid_request", "a rejection needs a reason")
        if req.args is not None:
            if not req.approve:
                raise AiosError("invalid_request", "arguments are given with an approval, not a rejection")
            try:
                _PAYLOAD.validate_python({**req.args, "kind": a.kind})
            except ValidationError as exc:
                errors: list[JsonValue] = [
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
                ]
                raise AiosError(
                    "invalid_request",
                    f"the arguments are not a valid {a.kind} payload: {exc.error_count()} error(s)",
                    details={"errors": errors[:10]},
                ) from exc
        decided = a.model_copy(
            update={
                "state": "approved" if req.approve else "rejected",
                "args": req.args,
                "reason": req.reason,
                "decided_by": req.by,
                "decided_at": time.time(),
            }
        )
        try:
            await self.kv.update(key, encode(decided), last=entry.revision)
        except KeyWrongLastSequenceError as exc:  # another operator, or its deadline, came first
            raise AiosError("conflict", f"syscall {req.id} was decided meanwhile") from exc
        what: AuditWhat = (
            "rejected" if not req.approve else ("edited" if req.args is not None else "approved")
        )
        self.audit(
            AuditEvent(
                what=what,
                actor=req.by,
                agent=a.agent,
                action=a.kind,
                resource=a.resource,
                syscall=a.id,
                rule=a.rule,
                why=req.reason,
                details={"args": req.args} if req.args is not None else {},
            )
        )
        return decided


def _rule_event(what: AuditWhat, rule: AccessRule) -> AuditEvent:
    return AuditEvent(
        what=what,
        actor="operator",
        rule=rule.id,
        why=rule.note,
        details={"who": rule.who, "action": rule.action, "resource": rule.resource, "effect": rule.effect},
    )
