"""The console's pages are shaped on the server: a page of 50 of 2,000 agents, sorted and filtered;
idle models listed; a syscall's events turned into timeline phases."""

from __future__ import annotations

from aios_schemas import AgentStats, BackendEntry, ModelEntry, QuotaLeft, ResourceStats, SchedulerStats
from aios_schemas.traces import TraceEvent, TraceReply
from aios_services.gateway.console import views


def test_agents_paged_sorted_filtered_on_the_server() -> None:
    agents = [AgentStats(agent=f"bot-{i:04d}", calls=i, tokens=2000 - i) for i in range(2000)]
    res = ResourceStats(
        name="llm.m",
        policy="las",
        capacity=8,
        running=1,
        queued=1,
        by_agent={"bot-0001": [1, 0], "new": [0, 1]},
    )
    snap = views.Snapshot(stats=SchedulerStats(instance="s", held=2, agents=agents, resources=[res]))
    first = views.agents(snap)
    assert (first["total"], first["pages"], len(first["rows"])) == (2001, 41, 50)  # type: ignore[arg-type]
    assert first["rows"][0]["agent"] == "bot-1999"  # type: ignore[index]
    by_tokens = views.agents(snap, sort="tokens", page=0)
    assert by_tokens["rows"][0]["agent"] == "bot-0000"  # type: ignore[index]
    found = views.agents(snap, q="new")
    assert found["rows"] == [  # waiting for its first call: listed with what it has queued
        {
            "agent": "new",
            "calls": 0,
            "tokens": 0,
            "wait": 0.0,
            "service": 0.0,
            "suspensions": 0,
            "running": 0,
            "queued": 1,
        }
    ]
    last = views.agents(snap, page=999, sort="bogus")
    assert (last["page"], last["sort"], len(last["rows"])) == (40, "calls", 1)  # type: ignore[arg-type]


def test_idle_models_and_timeline() -> None:
    models = {"idle": ModelEntry(name="idle", backends=[BackendEntry(name="b", slots=4)])}
    snap = views.Snapshot(models=models)
    assert [r["name"] for r in views.overview(snap)["resources"]] == ["llm.idle"]  # type: ignore[index, union-attr]

    def ev(state: str, ts: float, **details: object) -> TraceEvent:
        return TraceEvent(
            id="x", state=state, ts=ts, agent="a", kind="llm.chat", resource="llm.m", details=details
        )  # type: ignore[arg-type]

    t = TraceReply(
        events=[
            ev("accepted", 10.0),
            ev("queued", 10.001),
            ev("dispatched", 10.011, backend="sim"),
            ev("suspended", 10.05, backend="sim"),
            ev("resumed", 10.06, backend="sim"),
            ev("done", 10.1, tokens=40, backend="sim"),
        ]
    )
    tl = views.timeline("x", t)
    assert [p["phase"] for p in tl["phases"]] == ["admission", "queued", "running", "suspended", "running"]  # type: ignore[index, union-attr]
    assert (tl["backend"], tl["tokens"], tl["suspensions"], tl["total_ms"]) == ("sim", 40, 1, 100.0)
    assert views.timeline("y", TraceReply())["found"] is False


def test_quota_left_in_one_line() -> None:
    assert views.quota_text([]) == "-"
    periods = [
        QuotaLeft(per="lifetime", calls=10, calls_used=12),
        QuotaLeft(per="day", calls=None, tokens=10_000, tokens_used=1_000),
    ]
    assert views.quota_text(periods) == "0 calls left (lifetime); 9,000 tokens left (day)"
