"""The operator's access commands, each one request to the access service on `ctl.access.*` (the
operator's user only): `aios agent add|list|revoke`, `aios group add|list`, `aios rule add|list|rm`,
`aios approvals`, `aios approve ID [--args JSON]`, `aios reject ID --reason TEXT`, and `aios audit`
(the recent audit events, read from the events stream)."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from typing import Annotated, TypeVar

import nats
import typer
from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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
    Approval,
    ApprovalDecide,
    ApprovalList,
    ApprovalListReply,
    AuditEvent,
    GroupAdd,
    GroupInfo,
    GroupList,
    GroupListReply,
    Namespace,
    RuleAdd,
    RuleList,
    RuleListReply,
    RuleRemove,
    decode_reply,
    encode,
)
from aios_sdk.config import server_urls

from ..runtime.natsauth import OPERATOR_INBOX
from .operator import bad_input, run_against_stack

console = Console()
HomeOpt = Annotated[str | None, typer.Option("--home", help="AIOS home (default $AIOS_HOME, else ./.aios).")]
agent_app = typer.Typer(
    no_args_is_help=True, help="Agents' identities: add (prints a token once), list, revoke."
)
group_app = typer.Typer(no_args_is_help=True, help="Privilege groups.")
rule_app = typer.Typer(
    no_args_is_help=True,
    help="Access rules (who, action, resource) -> allow | deny | approve. Deny wins; an allow rule makes"
    " an allow-list of its action; no rule: allowed.",
)
R = TypeVar("R", bound=BaseModel)
M = TypeVar("M", bound=BaseModel)
_ARGS: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


def _ask(home: str | None, command: str, op: str, req: BaseModel, reply: type[R]) -> R:
    async def work(url: str, ns: Namespace) -> R:
        # The access service may answer only the operator's own inbox (runtime/natsauth.py).
        nc = await nats.connect(
            server_urls(url), connect_timeout=2, allow_reconnect=False, inbox_prefix=OPERATOR_INBOX
        )
        try:
            msg = await nc.request(ns.ctl("access", op), encode(req), timeout=30.0)
            return decode_reply(msg.data, msg.headers, reply)
        finally:
            await nc.close()

    return run_against_stack(home, command, "access", work)


def _model(command: str, model: type[M], **fields: object) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        bad_input(command, exc)


def _by(by: str | None) -> str:
    return by or os.environ.get("USER") or "operator"


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


# --- agents -------------------------------------------------------------------------------------
@agent_app.command("add")
def agent_add(
    name: Annotated[str, typer.Argument(help="Agent name (its NATS user).")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="A group it joins (repeatable).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Add an agent: prints its token once (the SDK's AIOS_TOKEN; only its hash is kept)."""
    req = _model("agent add", AgentAdd, name=name, groups=group or [])
    added = _ask(home, "agent add", "agent_add", req, AgentAdded)
    print(added.token)
    print(
        f"agent {added.name} added{' to ' + ', '.join(added.groups) if added.groups else ''}: connect with"
        f" AIOS_AGENT={added.name} AIOS_TOKEN=<the token above> (shown only now)",
        file=sys.stderr,
    )


@agent_app.command("list")
def agent_list(
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked agents.")] = False,
    home: HomeOpt = None,
) -> None:
    """Agents added with `aios agent add` (those of aios.toml are in the config)."""
    reply = _ask(home, "agent list", "agent_list", AgentList(revoked=revoked), AgentListReply)
    table = Table("agent", "groups", "added", "revoked")
    for a in reply.agents:
        table.add_row(escape(a.name), ", ".join(a.groups), _when(a.created), _when(a.revoked))
    console.print(table)


@agent_app.command("revoke")
def agent_revoke(name: Annotated[str, typer.Argument(help="Agent name.")], home: HomeOpt = None) -> None:
    """Revoke an agent: the bus drops its connections and refuses it; its waiting syscalls fail."""
    info = _ask(
        home, "agent revoke", "agent_revoke", _model("agent revoke", AgentRevoke, name=name), AgentInfo
    )
    console.print(f"agent {escape(info.name)} revoked at {_when(info.revoked)}")


@agent_app.command("groups")
def agent_groups(
    name: Annotated[str, typer.Argument(help="Agent name (also one of aios.toml, or `local`).")],
    groups: Annotated[
        list[str] | None, typer.Argument(help="Its groups from now on (none: no group).")
    ] = None,
    home: HomeOpt = None,
) -> None:
    """Set an agent's groups."""
    req = _model("agent groups", AgentGroups, name=name, groups=groups or [])
    a = _ask(home, "agent groups", "agent_groups", req, AgentAccess)
    console.print(f"agent {escape(a.name)}: groups {', '.join(a.groups) or '(none)'}")


# --- groups -------------------------------------------------------------------------------------
@group_app.command("add")
def group_add(
    name: Annotated[str, typer.Argument(help="Group name.")],
    description: Annotated[str, typer.Option("--description", "-d", help="What it is for.")] = "",
    home: HomeOpt = None,
) -> None:
    """Add a privilege group (then `aios agent add NAME --group G`, `aios rule add group:G ...`)."""
    req = _model("group add", GroupAdd, name=name, description=description)
    g = _ask(home, "group add", "group_add", req, GroupInfo)
    console.print(f"group {escape(g.name)} added")


@group_app.command("list")
def group_list(home: HomeOpt = None) -> None:
    reply = _ask(home, "group list", "group_list", GroupList(), GroupListReply)
    table = Table("group", "description", "added")
    for g in reply.groups:
        table.add_row(escape(g.name), escape(g.description), _when(g.created))
    console.print(table)


# --- rules --------------------------------------------------------------------------------------
@rule_app.command("add")
def rule_add(
    who: Annotated[str, typer.Argument(help="agent:NAME | group:NAME | *")],
    action: Annotated[str, typer.Argument(help="Syscall kind pattern, e.g. 'llm.*', 'files.delete'.")],
    effect: Annotated[str, typer.Argument(help="allow | deny | approve")],
    resource: Annotated[
        str, typer.Option("--resource", "-r", help="Resource pattern, e.g. 'llm.gpt-4o*'.")
    ] = "*",
    note: Annotated[str, typer.Option("--note", help="Why (shown in refusals).")] = "",
    rule_id: Annotated[str | None, typer.Option("--id", help="Rule id (default: generated).")] = None,
    home: HomeOpt = None,
) -> None:
    """Add a rule; the scheduler applies it within moments (its copy follows KV)."""
    req = _model(
        "rule add", RuleAdd, who=who, action=action, resource=resource, effect=effect, note=note, id=rule_id
    )
    r = _ask(home, "rule add", "rule_add", req, AccessRule)
    console.print(f"rule {r.id}: ({escape(r.who)}, {escape(r.action)}, {escape(r.resource)}) -> {r.effect}")


@rule_app.command("list")
def rule_list(home: HomeOpt = None) -> None:
    reply = _ask(home, "rule list", "rule_list", RuleList(), RuleListReply)
    table = Table("id", "who", "action", "resource", "effect", "note")
    for r in reply.rules:
        table.add_row(r.id, escape(r.who), escape(r.action), escape(r.resource), r.effect, escape(r.note))
    console.print(table)


@rule_app.command("rm")
def rule_rm(rule_id: Annotated[str, typer.Argument(help="Rule id.")], home: HomeOpt = None) -> None:
    r = _ask(home, "rule rm", "rule_rm", _model("rule rm", RuleRemove, id=rule_id), AccessRule)
    console.print(f"rule {r.id} removed")


# --- approvals (top-level commands) ----------------------------------------------------------------
def approvals(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    home: HomeOpt = None,
) -> None:
    """Syscalls waiting for an operator's approval, with their arguments."""
    reply = _ask(home, "approvals", "approvals", ApprovalList(), ApprovalListReply)
    if as_json:
        for a in reply.approvals:
            print(a.model_dump_json())
        return
    table = Table("id", "agent", "kind", "resource", "rule", "waiting", "arguments")
    now = time.time()
    for a in reply.approvals:
        args = json.dumps({k: v for k, v in a.payload.items() if k != "kind"})
        table.add_row(
            a.id,
            escape(a.agent),
            a.kind,
            escape(a.resource),
            a.rule,
            f"{now - a.requested:.0f}s",
            escape(args[:200]),
        )
    console.print(table)


def approve(
    syscall_id: Annotated[str, typer.Argument(help="Syscall id (see `aios approvals`).")],
    args: Annotated[
        str | None, typer.Option("--args", help="JSON: the arguments to run it with instead.")
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit trail).")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who decides (default: $USER).")] = None,
    home: HomeOpt = None,
) -> None:
    """Approve a waiting syscall (optionally with edited arguments, validated as its payload)."""
    parsed = None
    if args is not None:
        try:
            parsed = _ARGS.validate_json(args)
        except ValidationError:
            print("aios approve: --args must be a JSON object", file=sys.stderr)
            raise typer.Exit(2) from None
    req = _model(
        "approve", ApprovalDecide, id=syscall_id, approve=True, args=parsed, reason=reason, by=_by(by)
    )
    a = _ask(home, "approve", "decide", req, Approval)
    console.print(f"{a.id} approved{' with edited arguments' if a.args is not None else ''}")


def reject(
    syscall_id: Annotated[str, typer.Argument(help="Syscall id (see `aios approvals`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (the agent gets it).")],
    by: Annotated[str | None, typer.Option("--by", help="Who decides (default: $USER).")] = None,
    home: HomeOpt = None,
) -> None:
    """Reject a waiting syscall: the agent gets `approval_denied` with the reason."""
    req = _model("reject", ApprovalDecide, id=syscall_id, approve=False, reason=reason, by=_by(by))
    a = _ask(home, "reject", "decide", req, Approval)
    console.print(f"{a.id} rejected")


async def recent_audit(url: str, ns: Namespace, last: int, since_s: float) -> list[AuditEvent]:
    """The last `last` audit events of the past `since_s` seconds in the events stream (an ordered,
    ephemeral consumer from that time: the stream may hold a day of them)."""
    nc = await nats.connect(server_urls(url), connect_timeout=2, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info(ns.events_stream)
        subject = ns.audit("*")
        start = datetime.datetime.fromtimestamp(time.time() - since_s, tz=datetime.UTC)
        config = nats.js.api.ConsumerConfig(
            deliver_policy=nats.js.api.DeliverPolicy.BY_START_TIME, opt_start_time=start
        )
        sub = await js.subscribe(subject, ordered_consumer=True, config=config)
        events: list[AuditEvent] = []
        try:
            left = info.state.messages
            while left > 0:
                try:
                    msg = await sub.next_msg(timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                left = msg.metadata.num_pending
                try:
                    events.append(AuditEvent.model_validate_json(msg.data))
                except ValidationError:
                    continue
                if left == 0:
                    break
        finally:
            await sub.unsubscribe()
        return events[-last:]
    finally:
        await nc.close()


def audit(
    last: Annotated[int, typer.Option("--last", "-n", min=1, help="How many of the most recent.")] = 50,
    since: Annotated[float, typer.Option("--since", min=0.01, help="From this many minutes ago.")] = 60.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    home: HomeOpt = None,
) -> None:
    """Recent access decisions (allowed by a rule, denied, approvals, identities), oldest first."""
    events = run_against_stack(home, "audit", "bus", lambda url, ns: recent_audit(url, ns, last, since * 60))
    if as_json:
        for e in events:
            print(e.model_dump_json())
        return
    table = Table("when", "what", "actor", "agent", "action", "resource", "rule", "why")
    for e in events:
        table.add_row(
            _when(e.ts),
            e.what,
            escape(e.actor),
            escape(e.agent or ""),
            e.action or "",
            escape(e.resource or ""),
            e.rule or "",
            escape(e.why),
        )
    console.print(table)
