"""The protocol for clients in any language: the JSON Schema of every message model, and an AsyncAPI 3.0
document of the subjects that carry them, generated from the models and `Namespace` (`aios schema export`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, JsonValue
from pydantic.json_schema import models_json_schema

from .access import (
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
    AuditWhat,
    GroupAdd,
    GroupInfo,
    GroupList,
    GroupListReply,
    RuleAdd,
    RuleList,
    RuleListReply,
    RuleRemove,
)
from .envelope import (
    AGENT_PATTERN,
    ID_PATTERN,
    CancelReply,
    CancelRequest,
    ControlRequest,
    ExecReply,
    ExecRequest,
    Health,
    HealthQuery,
    HoldQuery,
    HoldReply,
    ResultQuery,
    Syscall,
    SyscallEvent,
    SyscallKind,
    SyscallResult,
    SyscallState,
)
from .errors import ErrorReply
from .explore import SeriesQuery, SeriesReply, SyscallListQuery, SyscallListReply
from .files import FilesInspect, FilesInspectReply, FilesReindex, FilesReindexReply
from .llm import LlmChat, StreamChunk
from .memory import MemoryEvicted, MemoryInspect, MemoryInspectReply
from .stats import QuotaQuery, QuotaReply, SchedulerStats, StatsQuery
from .subjects import DEFAULT, Namespace
from .tools import ToolRegister, ToolRegistered, ToolsInspect, ToolsListReply
from .traces import SpanBatch, TraceQuery, TraceReply, UsageQuery, UsageReply
from .wire import ERROR_HEADER

ASYNCAPI_VERSION = "3.0.0"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_FILE = "asyncapi.json"
SCHEMAS_DIR = "schemas"

_Json = dict[str, Any]  # a JSON document being built (the public functions return JsonValue dicts)
Action = Literal["send", "receive"]


def message_models() -> dict[str, type[BaseModel]]:
    """Every public model of this package, by class name (unique across its modules): whatever a
    module defines is exported, so a new model needs no registration here."""
    package = __name__.rpartition(".")[0]
    found: dict[str, type[BaseModel]] = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for name, obj in vars(module).items():
            if not (inspect.isclass(obj) and issubclass(obj, BaseModel)) or name.startswith("_"):
                continue
            if obj.__module__ != module.__name__:
                continue  # imported from a sibling: counted there
            if name in found:
                raise RuntimeError(f"two protocol models are named {name}: {found[name]} and {obj}")
            found[name] = obj
    return dict(sorted(found.items()))


def json_schemas() -> dict[str, dict[str, JsonValue]]:
    """Each model's standalone JSON Schema (2020-12, what the model accepts), by model name."""
    return {
        name: {"$schema": JSON_SCHEMA_DIALECT, **model.model_json_schema(mode="validation")}
        for name, model in message_models().items()
    }


# --- subjects ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Channel:
    """One subject (with `{parameters}`), what travels on it and what the kernel does there."""

    key: str
    address: str | None  # None: the requester's reply subject (its inbox)
    messages: tuple[type[BaseModel], ...]
    action: Action  # the kernel's side: `receive` = it listens (clients publish), `send` = it publishes
    description: str
    reply: tuple[type[BaseModel], ...] = ()  # request/reply: the answer (or an ErrorReply)


@dataclass(frozen=True)
class Control:
    """A request/reply control subject a service serves: `ctl.<service>.<op>` (`ns.ctl`), or with
    `per_agent` `ctl.<service>.<op>.<agent>` (`ns.ctl_for`), which an agent may call about itself."""

    service: str
    op: str
    request: type[BaseModel]
    reply: type[BaseModel]
    who: str
    per_agent: bool = False


# The control operations the services serve, as they register them (`bus.serve(ns.ctl(...))` and
# `serve_agent_requests` in each service's `main.py`); tests/unit/test_schema_export.py checks this
# table against the services' code. Health and control (below) are served by every service.
CONTROLS: tuple[Control, ...] = (
    Control("scheduler", "cancel", CancelRequest, CancelReply, "the agent itself", per_agent=True),
    Control("scheduler", "result", ResultQuery, SyscallResult, "the agent itself", per_agent=True),
    Control("scheduler", "stats", StatsQuery, SchedulerStats, "the operator (`aios top`)"),
    Control("scheduler", "quotas", QuotaQuery, QuotaReply, "the operator (the web console)"),
    Control("scheduler", "stats_local", StatsQuery, SchedulerStats, "scheduler replicas (each answers)"),
    Control("scheduler", "holds", HoldQuery, HoldReply, "scheduler replicas (each answers)"),
    Control("access", "agent_add", AgentAdd, AgentAdded, "the operator (`aios agent add`)"),
    Control("access", "agent_list", AgentList, AgentListReply, "the operator (`aios agent list`)"),
    Control("access", "agent_revoke", AgentRevoke, AgentInfo, "the operator (`aios agent revoke`)"),
    Control("access", "agent_groups", AgentGroups, AgentAccess, "the operator (`aios agent groups`)"),
    Control("access", "group_add", GroupAdd, GroupInfo, "the operator (`aios group add`)"),
    Control("access", "group_list", GroupList, GroupListReply, "the operator (`aios group list`)"),
    Control("access", "rule_add", RuleAdd, AccessRule, "the operator (`aios rule add`)"),
    Control("access", "rule_list", RuleList, RuleListReply, "the operator (`aios rule list`)"),
    Control("access", "rule_rm", RuleRemove, AccessRule, "the operator (`aios rule rm`)"),
    Control("access", "approvals", ApprovalList, ApprovalListReply, "the operator (`aios approvals`)"),
    Control("access", "decide", ApprovalDecide, Approval, "the operator (`aios approve|reject`)"),
    Control("memory", "inspect", MemoryInspect, MemoryInspectReply, "the operator (`aios memory`)"),
    Control("storage", "inspect", FilesInspect, FilesInspectReply, "the operator (`aios files`)"),
    Control("storage", "reindex", FilesReindex, FilesReindexReply, "the operator (`aios storage reindex`)"),
    Control("tools", "inspect", ToolsInspect, ToolsListReply, "the operator (`aios tools`)"),
    Control("tools", "register", ToolRegister, ToolRegistered, "an external tool worker"),
    Control("recorder", "trace", TraceQuery, TraceReply, "the operator (`aios trace`)"),
    Control("recorder", "stats", UsageQuery, UsageReply, "the operator (`aios stats`)"),
    Control("recorder", "syscalls", SyscallListQuery, SyscallListReply, "the operator (web console)"),
    Control("recorder", "series", SeriesQuery, SeriesReply, "the operator (web console)"),
)


def _literals(tp: object) -> list[str]:
    """The strings of a `Literal` (or of a union of them), in order."""
    out: list[str] = []
    for arg in get_args(tp):
        out.extend([arg] if isinstance(arg, str) else _literals(arg))
    return out


def syscall_kinds() -> list[str]:
    """Every syscall kind (the registry `SyscallKind`)."""
    return _literals(SyscallKind)


def channels(ns: Namespace = DEFAULT) -> list[Channel]:
    """Every subject of the bus, from `ns`'s own subject functions with `{parameters}` for the
    variable parts."""
    agent, sid, service = "{agent}", "{id}", "{service}"
    sys_subject = ns.sys("{kind}", agent)
    res_subject = ns.result(agent, sid)
    chans = [
        Channel(
            "sys",
            sys_subject,
            (Syscall,),
            "receive",
            f"An agent's syscall (JetStream stream `{ns.syscalls_stream}`). Publish it as a JetStream"
            " publish (a request: the stream answers with its PubAck `{stream, seq, duplicate}`, which"
            " means accepted) with header `Nats-Msg-Id` = the syscall's `id` (deduplication). The"
            " subject's `{kind}` is the payload's `kind` and `{agent}` the connection's NATS user (its"
            " name): the kernel takes the agent from the subject. Subscribe to the result subject"
            f" `{res_subject}` before publishing.",
        ),
        Channel(
            "res",
            res_subject,
            (SyscallResult,),
            "send",
            "The result of a syscall, to its agent alone (core NATS; also kept by the scheduler: ask"
            " `ctl.scheduler.result.{agent}` after a reconnect). `status` ok: `result` (tagged by"
            " `kind`); status error: `error`, an ErrorReply with a stable `code`.",
        ),
        Channel(
            "stream",
            ns.stream(agent, sid),
            (StreamChunk,),
            "send",
            "Tokens of a running `llm.chat` syscall with `stream: true` (core NATS), in `seq` order;"
            " the last has `done: true`. The full reply still comes on the result subject.",
        ),
        Channel(
            "evt.syscall",
            ns.event("{state}"),
            (SyscallEvent,),
            "send",
            f"A syscall changed state (JetStream stream `{ns.events_stream}`; kernel and operator only).",
        ),
        Channel(
            "evt.audit",
            ns.audit("{what}"),
            (AuditEvent,),
            "send",
            f"An access decision or change (stream `{ns.events_stream}`; kernel and operator only).",
        ),
        Channel(
            "evt.memory.evicted",
            ns.service_event("memory", "evicted"),
            (MemoryEvicted,),
            "send",
            f"The memory service moved records out of its working set (stream `{ns.events_stream}`).",
        ),
        Channel(
            "evt.spans",
            ns.service_event(service, "spans"),
            (SpanBatch,),
            "send",
            f"OpenTelemetry spans a kernel process finished (stream `{ns.events_stream}`; the recorder"
            " stores them).",
        ),
        Channel(
            "evt.agent.spans",
            ns.agent_spans(agent),
            (SpanBatch,),
            "receive",
            f"OpenTelemetry spans an agent's process finished (stream `{ns.events_stream}`; an agent may"
            " publish only its own; the recorder stores them).",
        ),
        Channel(
            "ctl.health",
            ns.ctl(service, "health"),
            (HealthQuery,),
            "receive",
            "Every service's health (request/reply; kernel and operator only).",
            reply=(Health,),
        ),
        Channel(
            "ctl.control",
            ns.ctl(service, "control"),
            (ControlRequest,),
            "receive",
            "Scheduler -> workers of a service (broadcast, no reply): suspend or cancel a run.",
        ),
    ]
    for c in CONTROLS:
        address = ns.ctl_for(c.service, c.op, agent) if c.per_agent else ns.ctl(c.service, c.op)
        chans.append(
            Channel(
                f"ctl.{c.service}.{c.op}",
                address,
                (c.request,),
                "receive",
                f"{_summary(c.request) or c.request.__name__} (request/reply; asked by {c.who}).",
                reply=(c.reply,),
            )
        )
    chans += [
        Channel(
            "exec",
            ns.exec(service),
            (ExecRequest,),
            "receive",
            "Scheduler -> a service's workers (request/reply to a queue group; kernel only): run this"
            " admitted syscall now.",
            reply=(ExecReply,),
        ),
        Channel(
            "exec.lane",
            ns.exec(service) + ".{lane}",
            (ExecRequest,),
            "receive",
            "The same, to the workers that serve one lane of a resource (e.g. one backend of a model);"
            " `{lane}` is made by `Namespace.exec_lane` from the resource and lane names.",
            reply=(ExecReply,),
        ),
        Channel(
            "inbox",
            None,
            (),
            "send",
            "The requester's reply subject (its NATS inbox: an agent's is under"
            f" `{Namespace.inbox_prefix(agent)}.`). A failed request is answered with an ErrorReply and"
            f" header `{ERROR_HEADER}: 1`.",
        ),
    ]
    return chans


# --- AsyncAPI --------------------------------------------------------------------------------------
_PARAMETERS: dict[str, _Json] = {
    "agent": {"description": f"The agent's name (its NATS user), one subject token: `{AGENT_PATTERN}`."},
    "id": {"description": f"The syscall id, made by the client (a UUIDv7 is best): `{ID_PATTERN}`."},
    "service": {"description": "A kernel service's name (e.g. `scheduler`, `llm`, `memory`)."},
    "lane": {"description": "A lane of a resource, as `Namespace.exec_lane` names it."},
}


def _parameters() -> dict[str, _Json]:
    return {
        **_PARAMETERS,
        "kind": {"enum": syscall_kinds(), "description": "The syscall kind (the payload's `kind`)."},
        "state": {"enum": _literals(SyscallState), "description": "The syscall's new state."},
        "what": {"enum": _literals(AuditWhat), "description": "The decision or change."},
    }


def _summary(model: type[BaseModel]) -> str:
    doc = vars(model).get("__doc__")  # its own docstring, not BaseModel's
    return inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ") if isinstance(doc, str) else ""


def _asyncapi_schema(node: object) -> object:
    """Pydantic's JSON Schema as an AsyncAPI Schema Object: `discriminator` there is the tag's
    property name (a string), not OpenAPI's {propertyName, mapping}."""
    if isinstance(node, dict):
        out = {k: _asyncapi_schema(v) for k, v in node.items()}
        disc = node.get("discriminator")
        if isinstance(disc, dict) and isinstance(disc.get("propertyName"), str):
            out["discriminator"] = disc["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_schema(v) for v in node]
    return node


def _headers(model: type[BaseModel]) -> _Json | None:
    if model is Syscall:
        return {
            "type": "object",
            "properties": {
                "Nats-Msg-Id": {
                    "type": "string",
                    "description": "The syscall's `id`: JetStream drops a second publication of it.",
                },
                "traceparent": {"type": "string", "description": "W3C trace context (optional)."},
            },
        }
    if model is ErrorReply:
        return {
            "type": "object",
            "properties": {ERROR_HEADER: {"const": "1", "description": "Marks a reply as an ErrorReply."}},
            "required": [ERROR_HEADER],
        }
    return None


def _examples(model: type[BaseModel]) -> list[_Json] | None:
    """One example of the messages a raw client writes or reads first, built from the models."""
    sid = "0190a5b2-7c1e-7d2f-8a3b-4c5d6e7f8091"
    if model is Syscall:
        call = Syscall(
            id=sid,
            agent="local",
            payload=LlmChat.model_validate(
                {"model": "sim-llama-8b", "messages": [{"role": "user", "content": "hi"}]}
            ),
            created=1_720_000_000.0,
            deadline=1_720_000_060.0,
        )
        return [{"name": "llm.chat", "payload": call.model_dump(mode="json", exclude_none=True)}]
    if model is SyscallResult:
        err = ErrorReply(code="not_found", message="unknown model 'no-such-model'")
        res = SyscallResult.fail(sid, err)
        return [{"name": "error", "payload": res.model_dump(mode="json", exclude_none=True)}]
    return None


def _message(model: type[BaseModel]) -> _Json:
    msg: _Json = {
        "name": model.__name__,
        "title": model.__name__,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
    }
    if summary := _summary(model):
        msg["summary"] = summary
    if (headers := _headers(model)) is not None:
        msg["headers"] = headers
    if "id" in model.model_fields and model in (Syscall, SyscallResult, StreamChunk):
        msg["correlationId"] = {"location": "$message.payload#/id"}
    if (examples := _examples(model)) is not None:
        msg["examples"] = examples
    return msg


def _schema_version() -> str:
    try:
        return version("aios-schemas")
    except PackageNotFoundError:
        return "0"


def asyncapi(ns: Namespace = DEFAULT) -> dict[str, JsonValue]:
    """The AsyncAPI 3.0 document of the bus: every subject as a channel, every model as a schema
    (`components.schemas`, generated by pydantic), and what the kernel does on each subject."""
    models = message_models()
    _, top = models_json_schema(
        [(m, "validation") for m in models.values()], ref_template="#/components/schemas/{model}"
    )
    schemas = _asyncapi_schema(top.get("$defs", {}))
    chans = channels(ns)
    replies = sorted({m for c in chans for m in c.reply} | {ErrorReply}, key=lambda m: m.__name__)
    used = sorted({m for c in chans for m in c.messages} | set(replies), key=lambda m: m.__name__)
    doc_channels: _Json = {}
    operations: _Json = {}
    for c in chans:
        carried = replies if c.address is None else list(c.messages)
        channel: _Json = {
            "address": c.address,
            "description": c.description,
            "messages": {m.__name__: {"$ref": f"#/components/messages/{m.__name__}"} for m in carried},
        }
        names = [p for p in _parameters() if c.address and "{" + p + "}" in c.address]
        if names:
            channel["parameters"] = {p: {"$ref": f"#/components/parameters/{p}"} for p in names}
        doc_channels[c.key] = channel
        if c.address is None:
            continue
        op: _Json = {
            "action": c.action,
            "channel": {"$ref": f"#/channels/{c.key}"},
            "summary": c.description.split(". ")[0].removesuffix("."),
            "messages": [{"$ref": f"#/channels/{c.key}/messages/{m.__name__}"} for m in c.messages],
        }
        if c.reply:
            answers: tuple[type[BaseModel], ...] = (*c.reply, ErrorReply)
            op["reply"] = {
                "channel": {"$ref": "#/channels/inbox"},
                "messages": [{"$ref": f"#/channels/inbox/messages/{m.__name__}"} for m in answers],
            }
        operations[c.key] = op
    prefix = f"`{ns.root}.`"
    doc: _Json = {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "AIOS kernel bus",
            "version": _schema_version(),
            "description": (
                "Every subject of the AIOS kernel on NATS, generated from the protocol package"
                f" (aios_schemas). Subjects start with {prefix} (a deployment with a namespace N:"
                " `N.aios.v1.`). Operations are the kernel's side: `receive` = a kernel service listens"
                " there (clients publish), `send` = the kernel publishes there (clients subscribe)."
                " An agent connects with its name as NATS user, its token as password and"
                f" `{Namespace.inbox_prefix('<agent>')}` as inbox prefix; NATS lets it publish only its own"
                " `sys.<agent>.>` and `ctl.scheduler.{cancel,result}.<agent>`, and hear only its own"
                " `res.<agent>.>`, `stream.<agent>.>` and inbox. Bodies are JSON (`components.schemas`);"
                " unknown fields are refused (`invalid_request`)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "{host}",
                "protocol": "nats",
                "description": "The stack `aios up` runs: the URL is `nats_url` in `.aios/connection.json`.",
                "variables": {"host": {"default": "127.0.0.1:4222", "description": "host:port of nats_url."}},
            }
        },
        "channels": doc_channels,
        "operations": operations,
        "components": {
            "schemas": schemas,
            "messages": {m.__name__: _message(m) for m in used},
            "parameters": _parameters(),
        },
    }
    return doc


def write(out: Path, ns: Namespace = DEFAULT) -> tuple[Path, list[Path]]:
    """Write `out/asyncapi.json` and `out/schemas/<Model>.json` (created, or overwritten); returns
    the AsyncAPI file and the schema files."""
    folder = out / SCHEMAS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2) + "\n")
        written.append(path)
    doc = out / ASYNCAPI_FILE
    doc.write_text(json.dumps(asyncapi(ns), indent=2) + "\n")
    return doc, written
