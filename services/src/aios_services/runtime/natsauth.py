"""Who may publish and subscribe where on the bus: the NATS users of a deployment and their subject
permissions, written into the nats-server config by `aios up` (and by the test fixtures).

Choice: static users with per-user permissions in the server's `authorization` block. The bundled
nats-server enforces them on every message with no extra tool or service (decentralised JWT needs
an operator/account set-up and `nsc`; auth callout needs a service that signs user JWTs); the
password of an agent is its agent token, stored here only as a bcrypt hash; a new agent is a config
reload. When identities become dynamic (the access service), auth callout is the step up.

Roles:
- agent `A`: publishes only its own syscalls (`sys.A.>`) and its own cancel/result requests
  (`ctl.scheduler.{cancel,result}.A`); hears only its results, its token streams and its private
  inbox (`res.A.>`, `stream.A.>`, `_INBOX.A.>`). No JetStream API, no KV, no events, no exec or
  control subjects: nothing of another agent.
- a kernel service (`service` role, one user per service): only the subjects, streams and KV
  buckets it owns or serves (`service_permissions`), its own inbox, and replies to what it is asked.
- kernel (tests, tools) and operator (the CLI): the whole bus.
Every subject is allowed with and without a namespace prefix (`*.aios.v1...`), so the same rules
serve a deployment and the isolated namespaces of tests.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit, urlunsplit

import bcrypt

from aios_schemas import Namespace
from aios_schemas.envelope import AGENT_PATTERN
from aios_sdk.config import without_credentials

# What the web console (in the gateway) may ask on the bus: (service, op) of `ctl.<service>.<op>`.
CONSOLE_CTL: tuple[tuple[str, str], ...] = (
    ("scheduler", "stats"),
    ("scheduler", "quotas"),
    ("recorder", "trace"),
    ("recorder", "syscalls"),
    ("recorder", "series"),
    ("access", "approvals"),
    ("access", "decide"),
    ("memory", "inspect"),
    ("storage", "inspect"),
)
Role = Literal["agent", "service", "kernel", "operator"]
NATS_SERVER_NAME = "aios"
OPERATOR_INBOX = "_INBOX.operator"  # the inbox prefix of the operator's CLI connections
_AGENT = re.compile(AGENT_PATTERN)
# Agent tokens and kernel passwords are 256-bit random strings: a slow hash adds nothing against
# guessing them, and every connect (each SDK client, each service) pays its cost on the server.
_BCRYPT_ROUNDS = 4


@dataclass(frozen=True)
class Identity:
    user: str
    password: str  # the secret itself: only its hash goes into the server config
    role: Role
    namespace: str = ""  # for a service: the deployment whose streams and buckets it may use

    def __post_init__(self) -> None:
        if self.role == "agent" and not _AGENT.match(self.user):
            raise ValueError(f"agent name {self.user!r} must match {AGENT_PATTERN}")


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _both(subject: str) -> list[str]:
    """`subject` with and without a namespace prefix."""
    return [subject, "*." + subject]


def agent_permissions(agent: str) -> dict[str, dict[str, list[str]]]:
    publish = _both(f"aios.v1.sys.{agent}.>")
    for op in ("cancel", "result"):
        publish += _both(f"aios.v1.ctl.scheduler.{op}.{agent}")
    publish += _both(f"aios.v1.evt.agent.{agent}.spans")  # its process's spans, for the recorder
    subscribe = [f"_INBOX.{agent}.>", *_both(f"aios.v1.res.{agent}.>"), *_both(f"aios.v1.stream.{agent}.>")]
    return {"publish": {"allow": publish}, "subscribe": {"allow": subscribe}}


def kernel_inbox(service: str) -> str:
    """The inbox prefix of a kernel service's connections (its user may hear only these)."""
    return f"_INBOX.svc-{service}"


def _js_stream(stream: str) -> list[str]:
    """The JetStream API of one stream (info, create, update, get, consumers, acks, flow control)."""
    return [
        f"$JS.API.*.*.{stream}",  # STREAM.INFO, STREAM.CREATE, DIRECT.GET...
        f"$JS.API.*.*.{stream}.>",  # CONSUMER.CREATE with a name, DIRECT.GET of a subject...
        f"$JS.API.*.*.*.{stream}",  # STREAM.MSG.GET, STREAM.MSG.DELETE
        f"$JS.API.*.*.*.{stream}.>",  # CONSUMER.MSG.NEXT, CONSUMER.DURABLE.CREATE
        f"$JS.ACK.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _kv(bucket: str, keys: str = ">") -> list[str]:
    return [*_js_stream(f"KV_{bucket}"), f"$KV.{bucket}.{keys}"]


def _leases(ns: Namespace, service: str) -> list[str]:
    """Its replicas' membership and leases in KV `AIOS_OWNERS` (runtime/partitions.py): it reads
    the bucket, and writes only its own service's keys."""
    bucket = ns.owners_bucket
    return [
        *_js_stream(f"KV_{bucket}"),
        f"$KV.{bucket}.member.{service}.>",
        f"$KV.{bucket}.lease.{service}.>",
    ]


# Worker services (runtime.worker) and the KV buckets each owns besides the shared ones.
WORKER_SERVICES: dict[str, Callable[[Namespace], list[str]]] = {
    "memory": lambda ns: [],
    "storage": lambda ns: [],
    "tools": lambda ns: [],
}


PARTITIONED_SERVICES = ("memory", "storage")  # their data split by agent between replicas


def service_permissions(service: str, namespace: str = "") -> dict[str, object]:
    """What one kernel service may do: least privilege among the services too, so a compromised or
    buggy llm worker cannot read results or rewrite quotas, and the scheduler cannot stream tokens."""
    ns = Namespace(namespace)
    root = ns.root
    common_pub = ["$JS.API.INFO", f"{root}.evt.{service}.spans"]  # its spans, for the recorder
    common_sub = [f"{kernel_inbox(service)}.>", f"{root}.ctl.{service}.>"]
    if service == "scheduler":
        pub = [
            f"{root}.res.>",
            f"{root}.evt.>",
            f"{root}.exec.>",
            f"{root}.ctl.llm.control",
            f"{root}.ctl.tools.control",  # stop a running tool call (cancel, deadline)
            f"{root}.ctl.scheduler.>",  # its replicas' stats and who holds a syscall
            *_js_stream(ns.syscalls_stream),
            *_js_stream(ns.events_stream),
            *_kv(ns.results_bucket),
            *_kv(ns.limits_bucket),
            *_kv(ns.replicas_bucket),
            *_kv(ns.access_bucket, "approval.>"),  # reads the rules; writes only pending approvals
        ]
        sub: list[str] = []
    elif service == "llm":
        pub = [
            f"{root}.stream.>",
            f"{kernel_inbox('scheduler')}.>",  # exec replies and heartbeats go to the scheduler
            *_kv(ns.contexts_bucket),
            *_kv(ns.finished_bucket),
            f"$JS.API.STREAM.INFO.KV_{ns.limits_bucket}",
            f"$KV.{ns.limits_bucket}.model.>",  # its catalogue entries, nothing else of that bucket
        ]
        sub = [f"{root}.exec.llm", f"{root}.exec.llm.>"]
    elif service == "access":  # identities, rules, approvals' decisions, audit events
        # Replies to the operator's inbox by name: a reload of the users (which this service
        # causes) forgets the replies a user was allowed to send, the one in flight among them.
        pub = [f"{root}.evt.audit.>", *_kv(ns.access_bucket), f"{OPERATOR_INBOX}.>", *_leases(ns, service)]
        sub = []
    elif service == "recorder":  # reads the events stream (its own durable consumer), nothing else
        pub = [*_js_stream(ns.events_stream), *_leases(ns, service)]
        sub = []
    elif service == "gateway":
        # It acts for agents over *their* connections (their tokens, their permissions); its own
        # user reads the model catalogue for /v1/models and asks the operator's read-only questions
        # of the web console at /ui, plus approval decisions: exactly these ctl subjects, not the
        # operator's whole bus (gateway/console/ops.py says why).
        pub = [*_js_stream(f"KV_{ns.limits_bucket}")]
        pub += [f"{root}.ctl.{svc}.{op}" for svc, op in CONSOLE_CTL]
        sub = []
    elif service in WORKER_SERVICES:  # runtime.worker: one resource, its exec lane, its own state
        pub = [
            f"{kernel_inbox('scheduler')}.>",
            *_kv(ns.finished_bucket),
            f"$JS.API.STREAM.INFO.KV_{ns.limits_bucket}",
            f"$KV.{ns.limits_bucket}.res.>",
            f"{root}.evt.{service}.>",  # what it reports (e.g. memory evictions), never syscall events
        ]
        for bucket in WORKER_SERVICES[service](ns):
            pub += _kv(bucket)
        if service in PARTITIONED_SERVICES:  # a call goes on to its partition's owner
            pub += [f"{root}.exec.{service}.part.>", *_leases(ns, service)]
        if service == "tools":  # each tool's flags for the scheduler; calls to external tool workers
            # (and, with these credentials, an external worker registers its tool)
            pub += [
                f"$KV.{ns.limits_bucket}.tool.>",
                f"{root}.exec.tools.ext.>",
                f"{root}.ctl.tools.register",
            ]
        sub = [f"{root}.exec.{service}", f"{root}.exec.{service}.>"]
    else:
        raise ValueError(f"no permissions defined for kernel service {service!r}")
    return {
        "publish": {"allow": [*common_pub, *pub]},
        "subscribe": {"allow": [*common_sub, *sub]},
        # Replies to requests it receives (health probes, exec requests, agents' requests).
        "allow_responses": {"max": 100000, "expires": "24h"},
    }


NatsUser = dict[str, object]  # one entry of the server's `users` list (hashed password, permissions)


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(_BCRYPT_ROUNDS)).decode()


def agent_user(agent: str, password_hash: str) -> NatsUser:
    """An agent's entry, from the hash of its token (the access service keeps only that)."""
    return {"user": agent, "password": password_hash, "permissions": agent_permissions(agent)}


def user_entries(identities: list[Identity]) -> list[NatsUser]:
    users: list[NatsUser] = []
    seen: set[str] = set()
    for ident in identities:
        if ident.user in seen:
            raise ValueError(f"NATS user {ident.user!r} defined twice")
        seen.add(ident.user)
        user: NatsUser = {"user": ident.user, "password": hash_password(ident.password)}
        if ident.role == "agent":
            user["permissions"] = agent_permissions(ident.user)
        elif ident.role == "service":
            user["permissions"] = service_permissions(ident.user.removeprefix("svc-"), ident.namespace)
        users.append(user)
    return users


def render_users(users: list[NatsUser], server_name: str = NATS_SERVER_NAME) -> str:
    """A nats-server config: the server's name and the `authorization` block (JSON values are valid
    there). The name is in the file too, not only on the command line (`-n`): a reload compares the
    file's with the running server's, and refuses to reload if they differ. No name (`""`): the
    users alone, for the nodes of a cluster to include (each node's own config names it)."""
    users_json = json.dumps(users, indent=2)
    name = f"server_name: {server_name}\n" if server_name else ""
    return f"{name}authorization {{\n  users = {users_json}\n}}\n"


def server_config(identities: list[Identity]) -> str:
    return render_users(user_entries(identities))


def merged_users(static: list[NatsUser], dynamic: list[NatsUser]) -> list[NatsUser]:
    """The deployment's users (services, operator, agents of the config) and the agents the access
    service added; a dynamic one never replaces a static one of the same name."""
    names = {u["user"] for u in static}
    return [*static, *(u for u in dynamic if u["user"] not in names)]


def with_credentials(url: str, user: str, password: str) -> str:
    """Each server URL of `url` (comma-separated) with `user:password@` in it."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        host = parts.netloc.rsplit("@", 1)[-1]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        out.append(urlunsplit(parts._replace(netloc=netloc)))
    return ",".join(out)


__all__ = [
    "Identity",
    "NatsUser",
    "agent_permissions",
    "agent_user",
    "hash_password",
    "merged_users",
    "new_password",
    "render_users",
    "server_config",
    "user_entries",
    "with_credentials",
    "without_credentials",
]
