"""Fixtures shared by integration tests: one simulated engine and a kernel with one 4-slot backend
on it (a module that needs another engine or catalogue defines its own `sim` or `kernel`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel

MODEL = "sim-llama-8b"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.5) as s:
        yield s


@pytest.fixture
async def kernel(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[Kernel]:
    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
    async with running_kernel(nats_url, tmp_path, models) as k:
        yield k
