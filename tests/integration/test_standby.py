"""A service with one DuckDB file that cannot be split (the recorder) runs as an active replica and
a standby: the standby serves nothing until the active one stops, then takes over on the same file
(what was recorded before is still there), and the replica that comes back waits as the standby."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from nats.aio.client import Client as NATS

from aios_schemas import Namespace, encode
from aios_schemas.traces import UsageQuery
from aios_services.recorder import main as recorder_main
from aios_services.recorder.settings import RecorderSettings
from aios_services.runtime import run_service
from aios_services.runtime.exclusive import exclusive
from tests.kernel import Kernel, replica_health, running_kernel


async def roles(nc: NATS, ns: Namespace, want: int) -> dict[str, str]:
    return {
        i: str(h.details.get("role")) for i, h in (await replica_health(nc, ns, "recorder", want)).items()
    }


async def until_roles(nc: NATS, ns: Namespace, want: dict[str, str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (got := await roles(nc, ns, len(want))) != want:
        assert time.monotonic() < deadline, f"roles {got}, not {want}"
        await asyncio.sleep(0.1)


def recorder(k: Kernel, db: Path, stop: asyncio.Event, instance: str) -> asyncio.Task[None]:
    s = RecorderSettings(  # type: ignore[call-arg]
        nats_url=k.nats_url, namespace=k.ns.name, recorder_db=db, instance=instance, partition_ttl_s=2.0
    )
    start = exclusive("recorder", instance, 2.0, lambda bus, st: recorder_main.start(bus, st, s))
    return asyncio.create_task(run_service("recorder", s, start, stop=stop))


async def test_a_standby_takes_over_when_the_active_replica_stops(
    nats_url: str, tmp_path: Path, nc: NATS
) -> None:
    db = tmp_path / "traces.duckdb"
    async with running_kernel(nats_url, tmp_path, {}, services=("scheduler",)) as k:
        stops = {"rec-a": asyncio.Event(), "rec-b": asyncio.Event()}
        tasks = {"rec-a": recorder(k, db, stops["rec-a"], "rec-a")}
        try:
            await until_roles(nc, k.ns, {"rec-a": "active"})
            tasks["rec-b"] = recorder(k, db, stops["rec-b"], "rec-b")
            await until_roles(nc, k.ns, {"rec-a": "active", "rec-b": "standby"})
            before = await nc.request(k.ns.ctl("recorder", "stats"), encode(UsageQuery()), timeout=5)
            assert before.data

            stops["rec-a"].set()  # the active one stops: the standby takes over at once
            t = time.monotonic()
            await asyncio.wait_for(tasks.pop("rec-a"), 30)
            await until_roles(nc, k.ns, {"rec-b": "active"})
            print(f"standby active {time.monotonic() - t:.2f}s after the active replica stopped")
            after = await nc.request(k.ns.ctl("recorder", "stats"), encode(UsageQuery()), timeout=5)
            assert after.data

            stops["rec-a"] = asyncio.Event()
            tasks["rec-a"] = recorder(k, db, stops["rec-a"], "rec-a")  # back: as the standby now
            await until_roles(nc, k.ns, {"rec-a": "standby", "rec-b": "active"})
        finally:
            for name, task in tasks.items():
                stops[name].set()
                await asyncio.wait_for(task, 30)
