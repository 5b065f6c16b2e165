"""Stopping a service's background task (runtime/service.py `cancel_and_wait`): it ends even when
the first cancel is swallowed, which Python 3.11's `asyncio.wait_for` does when the cancel lands as
the awaited future completes (the bus watchdog's `flush` answered by a PONG at that moment)."""

from __future__ import annotations

import asyncio

from aios_services.runtime import cancel_and_wait


async def test_a_swallowed_cancel_does_not_hang_the_shutdown() -> None:
    pongs: asyncio.Queue[asyncio.Future[None]] = asyncio.Queue()

    async def watchdog() -> None:  # the shape of Bus.watch_connection
        while True:
            pong = asyncio.get_running_loop().create_future()
            await pongs.put(pong)
            try:
                await asyncio.wait_for(pong, 60)  # what nats-py's flush() awaits
            except asyncio.CancelledError:
                if not pong.done() or pong.cancelled():
                    raise
                # Python 3.11's wait_for returns the result here; do so on every version.

    task = asyncio.create_task(watchdog(), name="watchdog")
    pong = await pongs.get()  # (the task now waits in wait_for)
    pong.set_result(None)  # the PONG is read in the loop iteration the shutdown cancels the task
    stopping = asyncio.ensure_future(cancel_and_wait(task))
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done  # a single cancel and await would wait for the next PONG (60 s)
    assert task.cancelled()
    assert pongs.qsize() == 1  # the first cancel was swallowed: the loop went on, then stopped
