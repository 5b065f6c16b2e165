"""Replicas that differ: llm replicas with different catalogues each get only the calls for what they
serve, and a replica that is gone stops being listed; with two scheduler replicas, cancel and stats
are right whichever replica holds the syscall."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest

from aios_schemas import (
    BackendEntry,
    ModelEntry,
    SchedulerStats,
    StatsQuery,
    decode_reply,
    encode,
    model_key,
    new_id,
)
from aios_sdk import Cancelled, NotFound
from aios_services.llm import main as llm_main
from aios_services.llm.settings import LlmSettings
from aios_services.runtime import run_service
from aios_services.scheduler import main as sched_main
from aios_services.scheduler.settings import SchedulerSettings
from aios_services.sim.runner import run_sim
from tests.kernel import Kernel, running_kernel, write_llm_config


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def until(pred: object, what: str, timeout: float = 15.0) -> None:
    """Poll an async condition with a deadline (the catalogue and replicas converge by messages)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await pred():  # type: ignore[operator]
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@asynccontextmanager
async def service(name: str, settings: object, start: object) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_service(name, settings, start, stop=stop))  # type: ignore[arg-type]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


@asynccontextmanager
async def llm_replica(
    k: Kernel, root: Path, instance: str, models: dict[str, list[dict[str, object]]]
) -> AsyncIterator[None]:
    root.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240  (a test's temp dir, instant)
    write_llm_config(root / "llm.toml", models)
    settings = LlmSettings(  # type: ignore[call-arg]
        nats_url=k.nats_url, namespace=k.ns.name, llm_config=root / "llm.toml", instance=instance
    )
    async with service("llm", settings, lambda b, st: llm_main.start(b, st, settings)):
        yield


@asynccontextmanager
async def scheduler_replica(k: Kernel, instance: str) -> AsyncIterator[None]:
    settings = SchedulerSettings(  # type: ignore[call-arg]
        nats_url=k.nats_url,
        namespace=k.ns.name,
        policy="fifo",
        instance=instance,
    )
    async with service("scheduler", settings, lambda b, st: sched_main.start(b, st, settings)):
        yield


async def test_llm_replicas_with_different_catalogues_answer_every_model(
    nats_url: str, tmp_path: Path
) -> None:
    async with run_sim("fixed", models=("m-common", "my-llama")) as sim:
        common = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
        async with running_kernel(nats_url, tmp_path, {"m-common": common}, catalog_ttl_s=1.0) as k:
            mine = [{"name": "vllm", "base_url": sim.base_url, "slots": 4, "model": "my-llama"}]
            async with k.connect() as aios:
                async with llm_replica(k, tmp_path / "l2", "llm-2", {"my-llama": mine, "m-common": common}):

                    async def served() -> bool:
                        try:
                            return bool((await aios.llm.chat("my-llama", ask("hi"), max_tokens=5)).content)
                        except NotFound:
                            return False

                    await until(served, "my-llama to be served")
                    calls = [
                        aios.llm.chat(m, ask(f"q{i}"), max_tokens=8)
                        for i in range(10)
                        for m in ("my-llama", "m-common")
                    ]
                    replies = await asyncio.gather(*calls)
                    assert all(r.content for r in replies)  # no `not_found` from the replica without my-llama
                    assert {r.backend for r in replies if r.model == "my-llama"} == {"vllm"}
                # The replica stopped (and withdrew its entry): its model is no longer served.
                with pytest.raises(NotFound):
                    await aios.llm.chat("my-llama", ask("hi"), max_tokens=5)
                assert (await aios.llm.chat("m-common", ask("hi"), max_tokens=5)).content


async def test_a_catalogue_entry_nobody_confirms_expires(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    async with run_sim("fixed", models=("m-common",)) as sim:
        common = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
        async with (
            running_kernel(nats_url, tmp_path, {"m-common": common}, catalog_ttl_s=1.0) as k,
            k.connect() as aios,
        ):
            # What a replica killed with SIGKILL leaves behind: an entry nobody refreshes.
            kv = await nc.jetstream().key_value(k.ns.limits_bucket)
            ghost = ModelEntry(
                name="ghost", backends=[BackendEntry(name="g", slots=1)], replica="dead", ts=time.time()
            )
            await kv.put(model_key("ghost", "dead"), encode(ghost))

            async def gone() -> bool:
                try:
                    await aios.llm.chat("ghost", ask("hi"), max_tokens=5, timeout=0.5)
                except NotFound:
                    return True
                except Exception:  # accepted and waiting for a worker that never comes
                    return False
                return False

            await until(gone, "the ghost model to expire")


async def stats(nc: nats.NATS, k: Kernel, *, local: bool = False) -> SchedulerStats:
    msg = await nc.request(k.ns.ctl("scheduler", "stats"), encode(StatsQuery(local=local)), timeout=5)
    return decode_reply(msg.data, msg.headers, SchedulerStats)


async def test_cancel_and_stats_are_right_with_two_scheduler_replicas(
    nats_url: str, tmp_path: Path, nc: nats.NATS
) -> None:
    async with run_sim("fixed", models=("m",), decode_ms=5.0) as sim:
        backends = [{"name": "sim", "base_url": sim.base_url, "slots": 4}]
        kernel = running_kernel(nats_url, tmp_path, {"m": backends}, policy="fifo", instance="s-1")
        async with kernel as k, scheduler_replica(k, "s-2"), k.connect() as aios:

            async def both_live() -> bool:
                views = [await stats(nc, k, local=True) for _ in range(4)]
                return all(v.replicas == ["s-1", "s-2"] and v.sharing for v in views)

            await until(both_live, "both scheduler replicas to know each other")
            ids = [new_id() for _ in range(8)]  # within what the two replicas may hold at once
            tasks = [
                asyncio.create_task(
                    aios.llm.chat("m", ask("long [sim:tokens=20000]"), id=i, max_tokens=20000)
                )
                for i in ids
            ]

            views: list[SchedulerStats] = []

            async def all_held() -> bool:
                # A merged view waits a bounded time for each replica's part: poll until one has both.
                views.append(await stats(nc, k))
                return views[-1].instance == "s-1+s-2" and views[-1].held == len(ids)

            try:
                await until(all_held, "every call to be held by a replica", timeout=30)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last views: {views[-3:]}") from exc
            merged = views[-1]
            assert merged.replicas == ["s-1", "s-2"]
            assert merged.counters.get("accepted", 0) >= len(ids)
            (res,) = merged.resources
            assert res.running + res.queued == len(ids) and res.running <= 4
            replies = await asyncio.gather(*(aios.cancel(i) for i in ids))
            assert [r.state for r in replies] == ["cancelled"] * len(ids)
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(o, Cancelled) for o in outcomes), outcomes
            again = await aios.cancel(ids[0])  # already over: both replicas agree
            assert again.state == "cancelled"
