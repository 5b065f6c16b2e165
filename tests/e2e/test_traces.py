"""Traces end to end through `aios up`: one syscall made through the gateway is followed across the
gateway, the SDK inside it, the scheduler and the llm service (each its own process exporting its
spans), stored by the recorder in DuckDB, read back from it and from the Parquet archive on S3;
`aios stats` counts it. An agent's own process (the SDK) exports its spans to the recorder too."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from openai import OpenAI

from aios_schemas import Connection, new_id
from aios_sdk import AIOS
from tests.e2e.helpers import aios

pytestmark = pytest.mark.e2e


def trace(home: Path, sid: str, *extra: str) -> dict[str, list[dict[str, object]]]:
    out = aios(home, "trace", sid, "--json", *extra)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


async def sdk_call(home: Path) -> str:
    sid = new_id()
    async with AIOS.connect(home=home) as client:
        await client.llm.chat("sim-llama-8b", [{"role": "user", "content": "trace me too"}], id=sid)
    return sid  # leaving flushed the client's spans to the bus


def test_one_syscall_traced_across_processes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    up = aios(home, "up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        conn = Connection.model_validate_json((home / "connection.json").read_text())
        assert conn.gateway_url
        client = OpenAI(base_url=conn.gateway_url, api_key=f"{conn.agent}:{conn.token}", max_retries=0)
        r = client.chat.completions.create(
            model="sim-llama-8b", messages=[{"role": "user", "content": "trace me"}]
        )
        sid = r.id.removeprefix("chatcmpl-")
        # Spans arrive in batches (every ~0.5 s per process): wait for the four hops, bounded.
        wanted = ("POST /v1/chat/completions", "syscall llm.chat", "run llm.chat", "serve ")
        deadline = time.monotonic() + 30
        while True:
            got = trace(home, sid)
            names = [str(s["name"]) for s in got["spans"]]
            if all(any(n.startswith(w) for n in names) for w in wanted):
                break
            assert time.monotonic() < deadline, f"spans so far: {names}"
            time.sleep(0.3)
        by_id = {s["span_id"]: s for s in got["spans"]}
        post = next(s for s in got["spans"] if s["name"] == "POST /v1/chat/completions")
        call = next(s for s in got["spans"] if s["name"] == "syscall llm.chat")
        run = next(s for s in got["spans"] if s["name"] == "run llm.chat")
        serve = next(s for s in got["spans"] if str(s["name"]).startswith("serve "))
        assert len({s["trace_id"] for s in (post, call, run, serve)}) == 1
        assert post["parent_id"] is None or post["parent_id"] not in by_id
        assert call["parent_id"] == post["span_id"] and run["parent_id"] == call["span_id"]
        assert serve["parent_id"] == run["span_id"]
        assert (post["service"], call["service"], run["service"], serve["service"]) == (
            "aios-gateway",
            "aios-gateway",
            "aios-scheduler",
            "aios-llm",
        )
        states = [e["state"] for e in got["events"]]
        assert states[0] == "accepted" and states[-1] == "done" and "dispatched" in states
        # The same, from the Parquet archive on S3.
        archived = trace(home, sid, "--archive")
        assert {s["span_id"] for s in archived["spans"]} == {s["span_id"] for s in got["spans"]}
        assert [e["state"] for e in archived["events"]] == states
        stats = aios(home, "stats", "--json")
        assert stats.returncode == 0, stats.stderr
        rows = json.loads(stats.stdout)["rows"]
        row = next(r for r in rows if r["agent"] == conn.agent and r["resource"] == "llm.sim-llama-8b")
        assert row["calls"] >= 1 and row["tokens"] > 0 and row["latency_p50_ms"] is not None
        readable = aios(home, "trace", sid)
        assert readable.returncode == 0 and "run llm.chat" in readable.stdout
        # An agent's own process exports its spans too (over its own bus connection).
        sdk_sid = asyncio.run(sdk_call(home))
        deadline = time.monotonic() + 30
        while True:
            got = trace(home, sdk_sid)
            mine = [s for s in got["spans"] if s["name"] == "syscall llm.chat"]
            runs = [s for s in got["spans"] if s["name"] == "run llm.chat"]
            if mine and runs:
                break
            assert time.monotonic() < deadline, f"spans so far: {[s['name'] for s in got['spans']]}"
            time.sleep(0.3)
        assert mine[0]["service"] == f"agent:{conn.agent}"
        assert mine[0]["attributes"]["aios.sender"] == conn.agent
        assert runs[0]["parent_id"] == mine[0]["span_id"]
    finally:
        down = aios(home, "down")
    assert down.returncode == 0, down.stdout + down.stderr
