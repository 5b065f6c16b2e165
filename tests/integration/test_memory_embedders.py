"""Embedders in the running service: vectors of two embedders never meet (a new embedder re-embeds
what the old one stored, in a table of its own), an OpenAI-compatible /v1/embeddings endpoint (the
simulator's), and an embedder that goes away (writes still succeed; a search says why it cannot)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import duckdb
import pytest

from aios_sdk import BackendUnavailable
from aios_services.sim.runner import run_sim
from tests.integration.memory_kernel import memory_kernel

FACTS = ["the cat sleeps on the sofa", "tax return due in april", "the dog barks at night"]


async def test_a_new_embedder_re_embeds_and_never_mixes_spaces(nats_url: str, tmp_path: Path) -> None:
    async with memory_kernel(nats_url, tmp_path, memory_hashing_dim=64) as k, k.connect() as aios:
        ids = [(await aios.memory.add(t)).record.id for t in FACTS]
        first = await aios.memory.search("cat sofa", k=1)
        assert first.embedder == "hashing-64" and first.hits[0].record.id == ids[0]
    async with memory_kernel(nats_url, tmp_path, memory_hashing_dim=128) as k, k.connect() as aios:
        again = await aios.memory.search("cat sofa", k=1)  # stored as hashing-64: embedded again
        assert again.embedder == "hashing-128" and again.hits[0].record.id == ids[0]
        await aios.memory.update(ids[1], text="tax return due in may")
        assert (await aios.memory.search("tax may", k=1)).hits[0].record.id == ids[1]
    con = duckdb.connect(str(tmp_path / "memory.duckdb"), read_only=True)
    try:
        spaces = dict(con.execute("SELECT embedder, name FROM spaces").fetchall())
        assert set(spaces) == {"hashing-64", "hashing-128"}
        counts = {e: con.execute(f"SELECT count(*) FROM {t}").fetchone() for e, t in spaces.items()}
        assert counts == {"hashing-64": (3,), "hashing-128": (4,)}  # 3 records + 1 new version
        dims = {e: con.execute(f"SELECT DISTINCT len(vec) FROM {t}").fetchall() for e, t in spaces.items()}
        assert dims == {"hashing-64": [(64,)], "hashing-128": [(128,)]}
    finally:
        con.close()


async def test_http_embedder_and_an_embedder_that_goes_away(nats_url: str, tmp_path: Path) -> None:
    sim_running = AsyncExitStack()
    sim = await sim_running.enter_async_context(run_sim("fixed", models=("sim-llama-8b",)))
    try:
        http = {
            "memory_embedder": "http",
            "memory_embed_url": sim.base_url,
            "memory_embed_model": "sim-embed",
        }
        async with memory_kernel(nats_url, tmp_path, **http) as k, k.connect() as aios:
            ids = [(await aios.memory.add(t)).record.id for t in FACTS]
            found = await aios.memory.search(FACTS[2], k=3)  # the simulator: same text, same vector
            assert found.embedder == "http:sim-embed" and found.hits[0].record.id == ids[2]

            await sim_running.aclose()  # the endpoint goes away under the running service
            kept = (await aios.memory.add("written while the embedder is away")).record
            assert (await aios.memory.get(kept.id)).record.text == "written while the embedder is away"
            assert (await aios.memory.search("away", mode="keyword")).hits[0].record.id == kept.id
            with pytest.raises(BackendUnavailable) as err:
                await aios.memory.search("away")
            assert "http:sim-embed" in err.value.message
    finally:
        await sim_running.aclose()
