"""The scheduler's copy of the access rules (KV `AIOS_ACCESS`, kept current by a watch) and their
evaluation at admission: no KV read and no round trip per syscall.

A call is checked against the rules of its agent, of the agent's groups and of `*` only (an index by
`who`), so its cost grows with the rules that could match it, not with all the rules. Patterns are
fnmatch's, compiled once when the rule arrives. Order (aios_schemas.access): deny, then allow-lists,
then approve, then allow; nothing matching: allowed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from nats.js.kv import KeyValue
from pydantic import ValidationError

from aios_schemas import AccessRule, AgentAccess, AiosError, Approval

log = logging.getLogger(__name__)

Matcher = Callable[[str], bool]
_MAX_CACHED = 100_000


def matcher(pattern: str) -> Matcher:
    """A compiled fnmatch pattern (case-sensitive); a plain string is compared, not matched."""
    if pattern == "*":
        return lambda _s: True
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    rx = re.compile(fnmatch.translate(pattern))
    return lambda s: rx.match(s) is not None


@dataclass(frozen=True)
class Compiled:
    rule: AccessRule
    action: Matcher
    resource: Matcher


@dataclass(frozen=True)
class Verdict:
    """What a matching rule decided (no verdict at all: allowed by default)."""

    effect: Literal["allow", "deny", "approve"]
    rule: AccessRule | None  # None: refused by allow-lists that do not name the resource
    listed: tuple[str, ...] = ()  # the allow-list rules of the action, when none names the resource

    def error(self, agent: str, action: str, resource: str) -> AiosError:
        if self.rule is not None:
            why = f": {self.rule.note}" if self.rule.note else ""
            return AiosError(
                "forbidden",
                f"{action} on {resource} is denied to {agent!r} by rule {self.rule.id}{why}",
                details={"rule": self.rule.id, "action": action, "resource": resource},
            )
        return AiosError(
            "forbidden",
            f"{action} on {resource} is not on the allow-list of {agent!r} (rules {', '.join(self.listed)})",
            details={"rules": list(self.listed), "action": action, "resource": resource},
        )


def flagged(agent: str, action: str, resource: str) -> AccessRule:
    """The rule a resource flagged `requires_approval` stands for (its service's config says so)."""
    return AccessRule.model_construct(  # (resource names are the services', not an operator's input)
        id="requires-approval",
        who=f"agent:{agent}",
        action=action,
        resource=resource,
        effect="approve",
        note=f"{resource} requires an operator's approval",
    )


class AccessTable:
    """Rules by `who`, agents' groups and revocations, and approvals in flight."""

    def __init__(self) -> None:
        self.rules: dict[str, Compiled] = {}
        self.by_who: dict[str, list[Compiled]] = {}
        self.agents: dict[str, AgentAccess] = {}
        self.approvals: dict[str, Approval] = {}
        self.on_decision: Callable[[Approval], None] | None = None
        self.loaded = asyncio.Event()  # the bucket's content was read once (set by the watch)
        # Verdicts by (agent, action, resource): an agent calls the same few things again and again.
        # Emptied whenever a rule or an agent's groups change.
        self._verdicts: dict[tuple[str, str, str], Verdict | None] = {}

    # --- updates (from the watch) --------------------------------------------------------------
    def changed(self) -> None:
        self._verdicts.clear()

    def put_rule(self, rule: AccessRule) -> None:
        self.drop_rule(rule.id)
        self.changed()
        c = Compiled(rule, matcher(rule.action), matcher(rule.resource))
        self.rules[rule.id] = c
        self.by_who.setdefault(rule.who, []).append(c)

    def drop_rule(self, rule_id: str) -> None:
        old = self.rules.pop(rule_id, None)
        if old is None:
            return
        self.changed()
        rest = [c for c in self.by_who.get(old.rule.who, []) if c.rule.id != rule_id]
        if rest:
            self.by_who[old.rule.who] = rest
        else:
            self.by_who.pop(old.rule.who, None)

    def put_approval(self, a: Approval) -> None:
        self.approvals[a.id] = a
        if a.state != "pending" and self.on_decision is not None:
            self.on_decision(a)

    # --- evaluation (the hot path) -------------------------------------------------------------
    def revoked(self, agent: str) -> bool:
        a = self.agents.get(agent)
        return a is not None and a.revoked

    def check(self, agent: str, action: str, resource: str) -> Verdict | None:
        if not self.by_who:
            return None
        key = (agent, action, resource)
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        if len(self._verdicts) >= _MAX_CACHED:
            self._verdicts.clear()
        verdict = self._verdicts[key] = self.evaluate(agent, action, resource)
        return verdict

    def evaluate(self, agent: str, action: str, resource: str) -> Verdict | None:
        """The rules of the agent, its groups and `*` that match the call, in order of precedence."""
        by_who = self.by_who
        cands: list[Compiled] = []
        for who in self._whos(agent):
            found = by_who.get(who)
            if found:
                cands += found
        if not cands:
            return None
        deny = approve = allow = None
        listed: list[str] = []
        for c in cands:
            if not c.action(action):
                continue
            hit = c.resource(resource)
            effect = c.rule.effect
            if effect == "allow":
                if hit:
                    allow = c.rule
                else:
                    listed.append(c.rule.id)
            elif hit:
                if effect == "deny":
                    deny = c.rule
                    break
                approve = c.rule
        if deny is not None:
            return Verdict("deny", deny)
        if allow is None and listed:
            return Verdict("deny", None, tuple(listed))
        if approve is not None:
            return Verdict("approve", approve)
        if allow is not None:
            return Verdict("allow", allow)
        return None

    def _whos(self, agent: str) -> list[str]:
        a = self.agents.get(agent)
        whos = [f"agent:{agent}", "*"]
        if a is not None:
            whos += [f"group:{g}" for g in a.groups]
        return whos

    # --- the watch -----------------------------------------------------------------------------
    async def watch(self, kv: KeyValue) -> None:
        """Follow the bucket: rules, agents and approvals, as they change (a deleted key: gone)."""
        watcher = await kv.watchall()
        seen: set[str] | None = set()  # keys of the initial values (a restarted watch: drop the rest)
        async for entry in watcher:
            if entry is None:  # the end of what the bucket held when the watch began
                if seen is not None:
                    self._forget_all_but(seen)
                    seen = None
                self.loaded.set()
                continue
            if seen is not None:
                seen.add(entry.key)
            kind, _, name = entry.key.partition(".")
            try:
                self.apply(kind, name, entry.value or b"")
            except ValidationError:
                log.warning("ignoring malformed access entry %s", entry.key)

    def _forget_all_but(self, keys: set[str]) -> None:
        """What was deleted while no watch ran (this one restarted after an error)."""
        for rule_id in [r for r in self.rules if f"rule.{r}" not in keys]:
            self.drop_rule(rule_id)
        for name in [a for a in self.agents if f"agent.{a}" not in keys]:
            del self.agents[name]
            self.changed()
        for sid in [a for a in self.approvals if f"approval.{a}" not in keys]:
            del self.approvals[sid]

    def apply(self, kind: str, name: str, value: bytes) -> None:
        if kind == "rule":
            if value:
                self.put_rule(AccessRule.model_validate_json(value))
            else:
                self.drop_rule(name)
        elif kind == "agent":
            if value:
                self.agents[name] = AgentAccess.model_validate_json(value)
            else:
                self.agents.pop(name, None)
            self.changed()
        elif kind == "approval":
            if value:
                self.put_approval(Approval.model_validate_json(value))
            else:
                self.approvals.pop(name, None)
