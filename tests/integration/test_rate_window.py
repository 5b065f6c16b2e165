"""The scheduler's `rate_window_s`: a backend's rpm/tpm budget refills over that many seconds (a
simulator whose time is scaled has a shorter minute), so calls queue for the window, not a minute."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aios_services.sim.runner import run_sim
from tests.kernel import running_kernel

MODEL = "sim-llama-8b"


async def test_rpm_refills_over_the_configured_window(nats_url: str, tmp_path: Path) -> None:
    # The simulator's "minute" is 1 second of 3 requests; the kernel's window is 1.5 s, a margin so
    # that no jitter of a loaded machine (a request delayed on its way, the next one not) makes
    # the kernel send faster than the simulator refills. 5 calls all answer (2 of them after about
    # 1/2 s each), and the simulator never answers 429; with the default window of 60 s the last
    # two would wait 30 s each.
    async with run_sim(
        "hosted-api", models=(MODEL,), rpm=3, tpm=0, ttft_ms=0, decode_ms=0.1, time_scale=1 / 60
    ) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 8, "rpm": 3}]
        async with (
            running_kernel(nats_url, tmp_path, {MODEL: backends}, rate_window_s=1.5) as k,
            k.connect() as aios,
        ):
            msgs = [{"role": "user", "content": "hi [sim:tokens=2]"}]
            replies = await asyncio.gather(*(aios.llm.chat(MODEL, msgs, timeout=5.0) for _ in range(5)))
    assert all(r.content for r in replies)
    assert sim.stats()["429s"] == 0
    assert sim.stats()["completed"] == 5
