"""Several independent engine simulators in one process, each its own engine and port (a benchmark's
modes each need a fresh engine; one process starts in a second where one per engine would take one
each). Idle engines cost nothing: their loop waits for a request.

`python -m bench.simhost SPEC_JSON`: SPEC_JSON maps a name to `{"profile": NAME, "fields": {...}}`
(profile overrides, as `run_sim` takes them); prints `AIOS-SIM NAME http://127.0.0.1:PORT` for each,
then `AIOS-SIM READY`, and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys

from aios_services.sim.runner import build_profile, serve


async def _serve(spec: dict[str, dict[str, object]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        for name, one in spec.items():
            fields = one.get("fields", {})
            assert isinstance(fields, dict)
            sim = await stack.enter_async_context(serve(build_profile(str(one["profile"]), **fields)))
            print(f"AIOS-SIM {name} {sim.root_url}", flush=True)
        print("AIOS-SIM READY", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    asyncio.run(_serve(json.loads(args[0])))


if __name__ == "__main__":
    main()
