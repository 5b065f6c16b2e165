"""Access control: identities, privilege groups, rules, approvals and audit events (DESIGN §6).

Rules are `(who, action, resource) -> effect`:
- `who`: `agent:NAME`, `group:NAME` or `*` (every agent);
- `action`: a syscall kind pattern (fnmatch: `llm.*`, `files.delete`, `*`);
- `resource`: a pattern on the resource the scheduler charges the call to (`llm.<model>`,
  `tools.<tool>`, `memory`, `files`), e.g. `llm.gpt-4o*`;
- `effect`: `deny` (refused, `forbidden`), `approve` (held until an operator decides), `allow`.

Evaluation (the scheduler, at admission, from an in-memory copy of KV `AIOS_ACCESS`): deny wins; then
allow-lists (an `allow` rule for an action makes it an allow-list: the agent may use, for that
action, only resources some allow rule of it names); then approve; then allow. No rule for the
action: allowed (an agent owns its namespace; the owning services refuse other agents' objects unless
shared). Everything here crosses the bus on `ctl.access.*` (operator only) or sits in the KV bucket.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from .envelope import AGENT_PATTERN, ID_PATTERN

Effect = Literal["allow", "deny", "approve"]
WHO_PATTERN = r"^(\*|agent:[A-Za-z0-9][A-Za-z0-9_-]{0,63}|group:[A-Za-z0-9][A-Za-z0-9_-]{0,63})$"
GROUP_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
PATTERN_CHARS = r"^[A-Za-z0-9_.*?\[\]!/:-]{1,200}$"
ApprovalState = Literal["pending", "approved", "rejected"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccessRule(_Frozen):
    """One rule (KV `rule.<id>`)."""

    id: str = Field(pattern=RULE_ID_PATTERN, description="Rule id: named in refusals and audit events.")
    who: str = Field(pattern=WHO_PATTERN, description="`agent:NAME`, `group:NAME` or `*`.")
    action: str = Field(pattern=PATTERN_CHARS, description="Syscall kind pattern (fnmatch), e.g. `llm.*`.")
    resource: str = Field(
        "*",
        pattern=PATTERN_CHARS,
        description="Resource pattern (fnmatch), e.g. `llm.gpt-4o*`, `tools.shell`.",
    )
    effect: Effect = Field(description="allow | deny | approve.")
    note: str = Field("", max_length=500, description="Why the rule exists (shown in refusals).")
    created: float = Field(default_factory=time.time, description="Unix time it was added.")


class AgentAccess(_Frozen):
    """What the scheduler needs to know of an agent (KV `agent.<name>`): its groups, and whether its
    identity was revoked (then its syscalls still in the stream are refused `unauthenticated`)."""

    name: str = Field(pattern=AGENT_PATTERN, description="Agent name.")
    groups: list[str] = Field(default_factory=list, description="Privilege groups it belongs to.")
    revoked: bool = Field(False, description="Its identity was revoked.")


class GroupInfo(_Frozen):
    """A privilege group (KV `group.<name>`)."""

    name: str = Field(pattern=GROUP_PATTERN, description="Group name.")
    description: str = Field("", max_length=500, description="What the group is for.")
    created: float = Field(default_factory=time.time, description="Unix time it was added.")


class Approval(_Frozen):
    """A syscall waiting for an operator's decision (KV `approval.<syscall id>`), then the decision.
    The scheduler writes it pending; the access service writes the decision; the scheduler acts on
    it and deletes the key once the syscall is answered."""

    id: str = Field(pattern=ID_PATTERN, description="The syscall id.")
    agent: str = Field(pattern=AGENT_PATTERN, description="The agent that made the syscall.")
    kind: str = Field(description="Syscall kind.")
    resource: str = Field(description="The resource it uses.")
    rule: str = Field(description="The rule that asked for approval.")
    payload: dict[str, JsonValue] = Field(description="The syscall's arguments (its payload).")
    requested: float = Field(default_factory=time.time, description="Unix time it was held.")
    deadline: float = Field(description="Unix time after which it is denied (`approval_denied`).")
    state: ApprovalState = Field("pending", description="pending | approved | rejected.")
    args: dict[str, JsonValue] | None = Field(
        None, description="Arguments the operator put in place of the agent's (approved with edits)."
    )
    reason: str = Field("", max_length=1000, description="The operator's reason (rejections).")
    decided_by: str | None = Field(None, description="Who decided.")
    decided_at: float | None = Field(None, description="Unix time of the decision.")


AuditWhat = Literal[
    "allowed",
    "denied",
    "approval_requested",
    "approved",
    "edited",
    "rejected",
    "expired",
    "agent_added",
    "agent_revoked",
    "agent_groups",
    "group_added",
    "rule_added",
    "rule_removed",
]


class AuditEvent(_Frozen):
    """One access decision, on `aios.v1.evt.audit.<what>` (kept in the events stream)."""

    what: AuditWhat = Field(description="The decision or change.")
    actor: str = Field(description="Who decided: `scheduler` (a rule), or the operator.")
    agent: str | None = Field(None, description="The agent concerned.")
    action: str | None = Field(None, description="Syscall kind, for syscall decisions.")
    resource: str | None = Field(None, description="Resource, for syscall decisions.")
    syscall: str | None = Field(None, description="Syscall id, for syscall decisions.")
    rule: str | None = Field(None, description="The rule that decided, if one did.")
    why: str = Field("", description="Why (the rule's note, the operator's reason).")
    ts: float = Field(default_factory=time.time, description="Unix time.")
    details: dict[str, JsonValue] = Field(default_factory=dict, description="What else is worth keeping.")


# --- ctl.access.* (operator) -------------------------------------------------------------------
class AgentAdd(_Frozen):
    name: str = Field(pattern=AGENT_PATTERN, description="New agent's name.")
    groups: list[str] = Field(default_factory=list, description="Groups it joins (must exist).")


class AgentAdded(_Frozen):
    name: str = Field(description="Agent name (its NATS user).")
    token: str = Field(description="Its token (NATS password): shown once, stored only hashed.")
    groups: list[str] = Field(description="Its groups.")


class AgentInfo(_Frozen):
    name: str = Field(description="Agent name.")
    groups: list[str] = Field(description="Its groups.")
    created: float = Field(description="Unix time it was added.")
    revoked: float | None = Field(None, description="Unix time it was revoked, if it was.")


class AgentList(_Frozen):
    revoked: bool = Field(False, description="Include revoked agents.")


class AgentListReply(_Frozen):
    agents: list[AgentInfo] = Field(description="Agents the access service added.")


class AgentRevoke(_Frozen):
    name: str = Field(pattern=AGENT_PATTERN, description="Agent to revoke.")


class AgentGroups(_Frozen):
    """Set the groups of an agent: one the access service added, or one of the deployment's config."""

    name: str = Field(pattern=AGENT_PATTERN, description="Agent name.")
    groups: list[str] = Field(description="Its groups from now on (each must exist; empty: none).")


class GroupAdd(_Frozen):
    name: str = Field(pattern=GROUP_PATTERN, description="Group name.")
    description: str = Field("", max_length=500, description="What it is for.")


class GroupList(_Frozen):
    pass


class GroupListReply(_Frozen):
    groups: list[GroupInfo] = Field(description="Every group.")


class RuleAdd(_Frozen):
    who: str = Field(pattern=WHO_PATTERN, description="`agent:NAME`, `group:NAME` or `*`.")
    action: str = Field(pattern=PATTERN_CHARS, description="Syscall kind pattern.")
    resource: str = Field("*", pattern=PATTERN_CHARS, description="Resource pattern.")
    effect: Effect = Field(description="allow | deny | approve.")
    note: str = Field("", max_length=500, description="Why.")
    id: str | None = Field(None, pattern=RULE_ID_PATTERN, description="Rule id (generated if missing).")


class RuleList(_Frozen):
    pass


class RuleListReply(_Frozen):
    rules: list[AccessRule] = Field(description="Every rule.")


class RuleRemove(_Frozen):
    id: str = Field(pattern=RULE_ID_PATTERN, description="Rule id.")


class ApprovalList(_Frozen):
    pass


class ApprovalListReply(_Frozen):
    approvals: list[Approval] = Field(description="Syscalls waiting for a decision.")


class ApprovalDecide(_Frozen):
    id: str = Field(pattern=ID_PATTERN, description="Syscall id.")
    approve: bool = Field(description="True: approve; False: reject.")
    args: dict[str, JsonValue] | None = Field(
        None, description="Approve with these arguments instead (validated as the syscall's payload)."
    )
    reason: str = Field("", max_length=1000, description="Why (required to reject).")
    by: str = Field("operator", max_length=100, description="Who decides (for the audit trail).")
