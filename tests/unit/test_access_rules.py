"""The access rules' evaluation (scheduler/access.py): deny wins, allow-lists, approve, groups."""

from __future__ import annotations

from aios_schemas import AccessRule, AgentAccess
from aios_services.scheduler.access import AccessTable


def table(*rules: AccessRule, agents: tuple[AgentAccess, ...] = ()) -> AccessTable:
    t = AccessTable()
    for r in rules:
        t.put_rule(r)
    for a in agents:
        t.agents[a.name] = a
    return t


def rule(id: str, who: str, action: str, resource: str, effect: str) -> AccessRule:
    return AccessRule.model_validate(
        {"id": id, "who": who, "action": action, "resource": resource, "effect": effect}
    )


def test_no_rule_allows() -> None:
    assert table().check("a", "llm.chat", "llm.m") is None
    assert table(rule("r1", "agent:b", "*", "*", "deny")).check("a", "llm.chat", "llm.m") is None


def test_deny_wins_over_allow_and_approve() -> None:
    t = table(
        rule("ok", "*", "llm.*", "*", "allow"),
        rule("ask", "group:g", "llm.chat", "*", "approve"),
        rule("no", "group:g", "llm.chat", "llm.gpt-4o*", "deny"),
        agents=(AgentAccess(name="a", groups=["g"]),),
    )
    v = t.check("a", "llm.chat", "llm.gpt-4o-mini")
    assert v is not None and v.effect == "deny" and v.rule is not None and v.rule.id == "no"
    assert "rule no" in v.error("a", "llm.chat", "llm.gpt-4o-mini").message
    v = t.check("a", "llm.chat", "llm.small")
    assert v is not None and v.effect == "approve"
    v = t.check("other", "llm.chat", "llm.gpt-4o")  # not in the group: only `*`'s allow
    assert v is not None and v.effect == "allow"


def test_allow_list_per_group() -> None:
    t = table(
        rule("interns-models", "group:interns", "llm.*", "llm.small*", "allow"),
        agents=(AgentAccess(name="i", groups=["interns"]),),
    )
    v = t.check("i", "llm.chat", "llm.big")
    assert v is not None and v.effect == "deny" and v.listed == ("interns-models",)
    assert v.error("i", "llm.chat", "llm.big").details["rules"] == ["interns-models"]
    v = t.check("i", "llm.chat", "llm.small-1")
    assert v is not None and v.effect == "allow"
    assert t.check("i", "memory.add", "memory") is None  # the list covers llm.* only
    assert t.check("x", "llm.chat", "llm.big") is None  # nor other agents


def test_rules_replaced_and_dropped() -> None:
    t = table(rule("r", "agent:a", "files.delete", "*", "approve"))
    v = t.check("a", "files.delete", "files")
    assert v is not None and v.effect == "approve"
    t.put_rule(rule("r", "agent:a", "files.delete", "*", "deny"))
    v = t.check("a", "files.delete", "files")
    assert v is not None and v.effect == "deny"
    t.drop_rule("r")
    assert t.check("a", "files.delete", "files") is None and not t.by_who


def test_revoked() -> None:
    t = table(agents=(AgentAccess(name="gone", revoked=True), AgentAccess(name="here")))
    assert t.revoked("gone") and not t.revoked("here") and not t.revoked("static")
