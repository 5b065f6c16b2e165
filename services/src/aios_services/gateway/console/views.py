"""What each console page shows, shaped on the server from one snapshot of the kernel's state (so a
browser gets a page of agents, never 2,000 rows): pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import JsonValue

from aios_schemas import Approval, ModelEntry, QuotaLeft, SchedulerStats
from aios_schemas.explore import SeriesPoint, SyscallSummary
from aios_schemas.traces import TraceReply

AgentSort = Literal["calls", "tokens", "wait", "service", "running", "queued", "agent"]
AGENT_SORTS: tuple[AgentSort, ...] = ("calls", "tokens", "wait", "service", "running", "queued", "agent")
PAGE = 50


@dataclass
class Snapshot:
    """The kernel as the console last saw it."""

    ts: float = 0.0
    stats: SchedulerStats | None = None
    models: Mapping[str, ModelEntry] = field(default_factory=dict)
    approvals: list[Approval] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    errors: list[SyscallSummary] = field(default_factory=list)
    rate: float = 0.0  # finished syscalls per second, over the last few seconds
    problems: dict[str, str] = field(default_factory=dict)  # source -> why it could not be read


def resources(st: SchedulerStats | None, models: Mapping[str, ModelEntry]) -> list[JsonValue]:
    """Every resource the scheduler schedules, and every served model it has not seen a call for."""
    out: list[JsonValue] = []
    seen = set()
    for r in st.resources if st else []:
        seen.add(r.name)
        out.append(
            {
                "name": r.name,
                "policy": r.policy,
                "capacity": r.capacity,
                "running": r.running,
                "queued": r.queued,
                "backends": [
                    {"name": b.name, "slots": b.slots, "running": b.running, "breaker": b.breaker}
                    for b in r.backends
                ],
            }
        )
    for m in sorted(models.values(), key=lambda m: m.name):
        if f"llm.{m.name}" in seen:
            continue
        out.append(
            {
                "name": f"llm.{m.name}",
                "policy": "",
                "capacity": sum(b.slots for b in m.backends),
                "running": 0,
                "queued": 0,
                "backends": [
                    {"name": b.name, "slots": b.slots, "running": 0, "breaker": "closed"} for b in m.backends
                ],
            }
        )
    return out


def overview(s: Snapshot) -> dict[str, JsonValue]:
    st = s.stats
    res = resources(st, s.models)
    return {
        "ts": s.ts,
        "held": st.held if st else 0,
        "counters": dict(st.counters) if st else {},
        "rate": round(s.rate, 2),
        "running": sum(r.running for r in st.resources) if st else 0,
        "queued": sum(r.queued for r in st.resources) if st else 0,
        "agents": len([a for a in st.agents if a.program is None]) if st else 0,
        "resources": res,
        "series": [p.model_dump() for p in s.series],
        "errors": [e.model_dump() for e in s.errors],
        "approvals": len(s.approvals),
        "problems": dict(s.problems),
    }


def agents(s: Snapshot, *, page: int = 0, sort: str = "calls", q: str = "") -> dict[str, JsonValue]:
    """One page of agents, sorted and filtered (by a substring of the name) on the server."""
    st = s.stats
    live: dict[str, list[int]] = {}
    for r in st.resources if st else []:
        for agent, (running, queued) in r.by_agent.items():
            rq = live.setdefault(agent, [0, 0])
            rq[0] += running
            rq[1] += queued
    rows: dict[str, dict[str, JsonValue]] = {}
    for a in st.agents if st else []:
        if a.program is not None:
            continue
        rq = live.get(a.agent, [0, 0])
        rows[a.agent] = {
            "agent": a.agent,
            "calls": a.calls,
            "tokens": a.tokens,
            "wait": round(a.wait_s, 3),
            "service": round(a.service_s, 3),
            "suspensions": a.suspensions,
            "running": rq[0],
            "queued": rq[1],
        }
    for agent, rq in live.items():  # waiting for its first call to finish
        rows.setdefault(
            agent,
            {
                "agent": agent,
                "calls": 0,
                "tokens": 0,
                "wait": 0.0,
                "service": 0.0,
                "suspensions": 0,
                "running": rq[0],
                "queued": rq[1],
            },
        )
    key: AgentSort = next((k for k in AGENT_SORTS if k == sort), "calls")
    picked = [r for r in rows.values() if q.lower() in str(r["agent"]).lower()]
    if key == "agent":
        picked.sort(key=lambda r: str(r["agent"]))
    else:
        picked.sort(key=lambda r: (-float(r[key]), str(r["agent"])))  # type: ignore[arg-type]
    pages = max(1, -(-len(picked) // PAGE))
    page = min(max(page, 0), pages - 1)
    return {
        "total": len(picked),
        "page": page,
        "pages": pages,
        "sort": key,
        "q": q,
        "rows": list[JsonValue](picked[page * PAGE : (page + 1) * PAGE]),
    }


def approvals(s: Snapshot) -> dict[str, JsonValue]:
    pending = sorted(s.approvals, key=lambda a: a.requested)
    return {"approvals": [a.model_dump(mode="json") for a in pending[:200]], "total": len(pending)}


def timeline(sid: str, t: TraceReply) -> dict[str, JsonValue]:
    """A syscall's history: each state with its time from the first event, the phases between them
    (queued, running, suspended), and what it ran on and used."""
    if not t.events:
        return {"id": sid, "found": False, "events": [], "phases": [], "spans": []}
    t0 = t.events[0].ts
    events: list[JsonValue] = [
        {
            "state": e.state,
            "at_ms": round((e.ts - t0) * 1000, 3),
            "ts": e.ts,
            "resource": e.resource,
            "details": e.details,
        }
        for e in t.events
    ]
    phase_of = {
        "accepted": "admission",
        "queued": "queued",
        "dispatched": "running",
        "resumed": "running",
        "suspended": "suspended",
    }
    phases: list[JsonValue] = []
    for a, b in zip(t.events, t.events[1:], strict=False):
        name = phase_of.get(a.state)
        if name is not None:
            phases.append(
                {
                    "phase": name,
                    "from_ms": round((a.ts - t0) * 1000, 3),
                    "to_ms": round((b.ts - t0) * 1000, 3),
                    "backend": _str(a.details.get("backend")),
                }
            )
    last = t.events[-1]
    backends = [be for ev in t.events if (be := _str(ev.details.get("backend"))) is not None]
    spans: list[JsonValue] = [
        {
            "name": sp.name,
            "service": sp.service,
            "from_ms": round((sp.start - t0) * 1000, 3),
            "to_ms": round((sp.end - t0) * 1000, 3),
            "status": sp.status,
        }
        for sp in sorted(t.spans, key=lambda sp: sp.start)
    ]
    return {
        "id": sid,
        "found": True,
        "agent": last.agent,
        "kind": last.kind,
        "resource": next((e.resource for e in reversed(t.events) if e.resource), None),
        "state": last.state,
        "started": t0,
        "total_ms": round((last.ts - t0) * 1000, 3),
        "backend": backends[-1] if backends else None,
        "tokens": last.details.get("tokens"),
        "code": last.details.get("code"),
        "suspensions": sum(1 for e in t.events if e.state == "suspended"),
        "events": events,
        "phases": phases,
        "spans": spans,
    }


def _str(v: JsonValue) -> str | None:
    return v if isinstance(v, str) else None


def rate(history: Sequence[tuple[float, int]]) -> float:
    """Finished syscalls per second between the oldest and newest sample of `history`."""
    if len(history) < 2:
        return 0.0
    (t0, n0), (t1, n1) = history[0], history[-1]
    return max(0, n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def quota_text(periods: list[QuotaLeft]) -> str:
    """What an agent has left, one short line: `40 calls, 9,000 tokens left (day)`; `-`: no quota."""
    if not periods:
        return "-"
    parts = []
    for q in periods:
        left = []
        if q.calls is not None:
            left.append(f"{max(0, q.calls - q.calls_used):,} calls")
        if q.tokens is not None:
            left.append(f"{max(0, q.tokens - q.tokens_used):,} tokens")
        if left:
            parts.append(f"{', '.join(left)} left ({q.per})")
    return "; ".join(parts) or "-"
