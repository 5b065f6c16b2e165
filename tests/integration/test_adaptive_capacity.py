"""Capacity from the engine, on real parts: the llm service reads the simulated engine's `/metrics`
(vLLM's names), publishes an adaptive limit in the catalogue, and the scheduler never has more calls
at that backend than the highest limit it was given, with `slots` left high."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats
from nats.js.kv import KeyValue

from aios_schemas import ModelEntry, decode_reply, encode
from aios_schemas.envelope import Health, HealthQuery
from aios_services.sim.runner import run_sim
from tests.integration.test_scheduler import ask, stats
from tests.kernel import running_kernel

MODEL = "sim-llama-8b"


async def limits_seen(kv: KeyValue, seen: list[int], first: asyncio.Event) -> None:
    """Every limit the catalogue carries for backend `eng`, in order."""
    watcher = await kv.watch("model.>")
    async for entry in watcher:
        if entry is None or not entry.value:
            continue
        model = ModelEntry.model_validate_json(entry.value)
        for b in model.backends:
            if b.name == "eng" and b.limit is not None:
                seen.append(b.limit)
                first.set()


async def test_the_scheduler_keeps_within_the_engines_adaptive_limit(
    nats_url: str, nc: nats.NATS, tmp_path: Path
) -> None:
    # A small KV budget and many engine slots: sent everything, the engine would preempt.
    async with run_sim("h100-tiny", models=(MODEL,), time_scale=0.05, max_num_seqs=256) as sim:
        backend = {
            "name": "eng",
            "base_url": sim.base_url,
            "slots": 64,
            "adaptive": True,
            "adaptive_interval_s": 0.02,
        }
        async with running_kernel(nats_url, tmp_path, {MODEL: [backend]}, policy="fifo") as k:
            kv = await nc.jetstream().key_value(k.ns.limits_bucket)
            seen: list[int] = []
            first = asyncio.Event()
            watch = asyncio.create_task(limits_seen(kv, seen, first))
            try:
                await asyncio.wait_for(first.wait(), 10)
                assert seen[0] == 4  # slow start begins low, whatever `slots` says
                async with k.connect() as aios:
                    replies = await asyncio.gather(
                        *(aios.llm.chat(MODEL, ask(f"q{i}", 400)) for i in range(60))
                    )
                assert len(replies) == 60 and all(r.content for r in replies)
                st = await stats(nc, k)
                peak = next(b.max_running_seen for r in st.resources for b in r.backends if b.name == "eng")
                assert 1 <= peak <= max(seen), (peak, seen)
                assert len(set(seen)) > 1, seen  # the limit moved with the load
                assert all(1 <= v <= 64 for v in seen)
                msg = await nc.request(
                    k.ns.ctl("llm", "health"), encode(HealthQuery(verbose=True)), timeout=5
                )
                details = decode_reply(msg.data, msg.headers, Health).details
                assert details["adaptive"]["eng"]["readings"] > 0  # type: ignore[index]
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
