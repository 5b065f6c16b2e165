"""Every subject, stream and bucket name, in one place (DESIGN §4: versioned prefix `aios.v1`).

A `Namespace` isolates one deployment (or one test) from another on the same NATS server: with
name "t1234" subjects become `t1234.aios.v1.*` and streams/buckets get a `_t1234` suffix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^[A-Za-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Namespace:
    name: str = ""

    def __post_init__(self) -> None:
        if not _TOKEN.match(self.name):
            raise ValueError(f"namespace must match {_TOKEN.pattern}: {self.name!r}")

    @property
    def root(self) -> str:
        return f"{self.name}.aios.v1" if self.name else "aios.v1"

    def _bucket(self, base: str) -> str:
        return f"{base}_{self.name}" if self.name else base

    # --- streams and buckets ---------------------------------------------------------------
    @property
    def syscalls_stream(self) -> str:
        return self._bucket("AIOS_SYSCALLS")

    @property
    def events_stream(self) -> str:
        return self._bucket("AIOS_EVENTS")

    @property
    def results_bucket(self) -> str:
        return self._bucket("AIOS_RESULTS")

    @property
    def contexts_bucket(self) -> str:
        return self._bucket("AIOS_CONTEXTS")

    @property
    def finished_bucket(self) -> str:
        return self._bucket("AIOS_FINISHED")

    @property
    def replicas_bucket(self) -> str:
        return self._bucket("AIOS_REPLICAS")

    @property
    def owners_bucket(self) -> str:
        """Which replica of a partitioned service owns each partition of its data (leases, TTL)."""
        return self._bucket("AIOS_OWNERS")

    @property
    def limits_bucket(self) -> str:
        return self._bucket("AIOS_LIMITS")

    @property
    def access_bucket(self) -> str:
        """Rules, groups, agents' groups and revocations, pending approvals (owned by `access`)."""
        return self._bucket("AIOS_ACCESS")

    # --- subjects -----------------------------------------------------------------------------
    # Subjects an agent uses carry its name, so that a NATS permission can name it: an agent may
    # publish only on its own `sys.<agent>.>` and hear only its own `res.<agent>.>`/`stream.<agent>.>`.
    def sys(self, kind: str, agent: str) -> str:
        """Where an agent publishes a syscall (JetStream)."""
        return f"{self.root}.sys.{agent}.{kind}"

    @staticmethod
    def sys_agent(subject: str) -> str | None:
        """The agent a syscall subject names (`[ns.]aios.v1.sys.<agent>.<kind...>`)."""
        parts = subject.split(".")
        try:
            i = parts.index("sys", 2)
        except ValueError:
            return None
        return parts[i + 1] if len(parts) > i + 2 else None

    @property
    def sys_all(self) -> str:
        return f"{self.root}.sys.>"

    def result(self, agent: str, syscall_id: str) -> str:
        """Where the caller hears its result (core NATS; also kept in KV)."""
        return f"{self.root}.res.{agent}.{syscall_id}"

    def exec(self, service: str) -> str:
        """Scheduler -> worker dispatch (request/reply to a queue group)."""
        return f"{self.root}.exec.{service}"

    def exec_lane(self, service: str, resource: str, lane: str) -> str:
        """Dispatch to the workers that serve one lane of a resource (e.g. one backend of a model):
        replicas with different configs each take only what they serve."""
        readable = _UNSAFE.sub("_", f"{resource}--{lane}")[:64]
        digest = hashlib.sha256(f"{resource}\0{lane}".encode()).hexdigest()[:10]
        return f"{self.root}.exec.{service}.{readable}-{digest}"

    def exec_partition(self, service: str, partition: int) -> str:
        """To the one replica that owns `partition` of a partitioned service's data (the replica
        that took a call on the service's lane forwards it here)."""
        return f"{self.root}.exec.{service}.part.{int(partition)}"

    def stream(self, agent: str, syscall_id: str) -> str:
        """LLM tokens of a running syscall."""
        return f"{self.root}.stream.{agent}.{syscall_id}"

    def event(self, state: str) -> str:
        return f"{self.root}.evt.syscall.{state}"

    def service_event(self, service: str, what: str) -> str:
        """Something a service reports (e.g. `memory`, `evicted`); kept in the events stream too."""
        return f"{self.root}.evt.{service}.{what}"

    def agent_spans(self, agent: str) -> str:
        """An agent process's OpenTelemetry spans, for the recorder (each agent may publish only its own)."""
        return f"{self.root}.evt.agent.{agent}.spans"

    @staticmethod
    def spans_agent(subject: str) -> str | None:
        """The agent whose spans `subject` carries (None: a kernel service's spans, or not spans)."""
        _, sep, tail = subject.partition(".evt.agent.")
        if not sep or not tail.endswith(".spans"):
            return None
        agent = tail.removesuffix(".spans")
        return agent if agent and "." not in agent else None

    def audit(self, what: str) -> str:
        """An access decision (allowed, denied, approval_requested, approved...), in the events stream."""
        return f"{self.root}.evt.audit.{what}"

    @property
    def events_all(self) -> str:
        return f"{self.root}.evt.>"

    def ctl(self, service: str, op: str) -> str:
        """Control plane: health, result queries, cancel, suspend."""
        return f"{self.root}.ctl.{service}.{op}"

    def ctl_for(self, service: str, op: str, agent: str) -> str:
        """An agent's own request to a service (cancel, result): the subject names the agent."""
        return f"{self.root}.ctl.{service}.{op}.{agent}"

    @staticmethod
    def inbox_prefix(agent: str) -> str:
        """An agent's private reply subjects (its NATS connection's inbox prefix)."""
        return f"_INBOX.{agent}"


DEFAULT = Namespace()
