"""Resource groups: one policy queue per model, slots counted per backend.

Agents compete for a *model* (its queue orders them by the policy); the calls then run on the
model's *backends*, each with its own slots, rate limits and circuit breaker. The scheduler picks
the backend: the program's last backend when it has room (prefix-cache reuse), else the least
loaded one.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

from opentelemetry.context import Context

from aios_schemas import AccessRule, BackendEntry, Syscall

from ..runtime.consumer import Delivery
from .breaker import CircuitBreaker
from .policies import Job, Policy, RunningJob
from .quotas import Reservation
from .ratelimit import RateLimiter

AFFINITY_SIZE = 10_000


@dataclass
class Held:
    """An accepted syscall the scheduler holds until its result is stored (its PCB)."""

    call: Syscall
    delivery: Delivery[Syscall] | None  # the JetStream message, acked once the result is stored
    group: str
    service: str
    accepted: float
    deadline: float
    job: Job
    trace: Context | None = None  # the agent's trace context, from the syscall's headers
    backend: str | None = None
    dispatched: float | None = None
    released: float | None = None  # unix time its last run gave its slot back (event timestamps)
    runs: int = 0
    resume: bool = False
    suspending: bool = False
    failed_backends: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    wait_s: float = 0.0
    service_s: float = 0.0
    tokens: int = 0
    reservation: Reservation | None = None  # quota set aside at admission, settled at completion
    redelivered: bool = False  # JetStream delivered it before: a crashed scheduler may have run it
    approval: AccessRule | None = None  # the rule that holds it for an operator's approval
    _digest: str | None = None

    @property
    def digest(self) -> str:
        """`call.digest()`, computed once (a JSON dump and a hash of the whole request)."""
        if self._digest is None:
            self._digest = self.call.digest()
        return self._digest


@dataclass
class BackendState:
    entry: BackendEntry
    limiter: RateLimiter | None
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    running: dict[str, Held] = field(default_factory=dict)
    rate_wait_until: float = 0.0
    max_running_seen: int = 0
    capacity: int = -1  # this replica's share of the slots (see replicas.py); -1: all of them
    retired: bool = False  # no worker serves it any more: nothing new starts on it

    @property
    def slots(self) -> int:
        if self.retired:
            return 0
        return self.entry.usable if self.capacity < 0 else self.capacity

    @property
    def free(self) -> int:
        return self.slots - len(self.running)


@dataclass
class Group:
    """The policy queue of one resource (e.g. `llm.<model>`) and the backends that serve it."""

    name: str
    policy: Policy
    backends: dict[str, BackendState]
    affinity: OrderedDict[str, str] = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def capacity(self) -> int:
        return sum(b.slots for b in self.backends.values())

    def running(self) -> list[Held]:
        return [h for b in self.backends.values() for h in b.running.values()]

    def running_jobs(self) -> list[RunningJob]:
        return [RunningJob(h.job, h.dispatched or 0.0) for h in self.running()]

    def free_slots(self) -> int:
        return sum(max(0, b.free) for b in self.backends.values())

    def choose(self, held: Held, now: float) -> BackendState | None:
        """A backend for `held` with a free slot that is healthy and not rate-limited, or None."""
        ok = [
            b
            for b in self.backends.values()
            if b.free > 0
            and b.breaker.allows(now)
            and b.rate_wait_until <= now
            and (not held.resume or b.entry.continue_partial)
        ]
        fresh = [b for b in ok if b.entry.name not in held.failed_backends]
        candidates = fresh or ok
        if not candidates:
            return None
        if held.resume and held.backend:  # continue where the partial output was made
            for b in candidates:
                if b.entry.name == held.backend:
                    return b
        preferred = self.affinity.get(held.job.program)
        for b in candidates:
            if b.entry.name == preferred:
                return b
        # Least loaded by share of slots in use; on a tie, the one with more room.
        return min(candidates, key=lambda b: (len(b.running) / max(1, b.slots), -b.free))

    def can_fall_back(self, held: Held, now: float) -> bool:
        """Whether another backend could take `held` now or once it has a free slot: one it has not
        failed on, whose breaker is not open. If none, waiting for breaker cooldowns would only
        delay the error the caller will get anyway."""
        return any(
            b.entry.name not in held.failed_backends
            and b.breaker.state(now) != "open"
            and (not held.resume or b.entry.continue_partial)
            for b in self.backends.values()
        )

    def remember(self, program: str, backend: str) -> None:
        self.affinity[program] = backend
        self.affinity.move_to_end(program)
        while len(self.affinity) > AFFINITY_SIZE:
            self.affinity.popitem(last=False)
