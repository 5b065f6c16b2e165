"""Runs in progress on this replica, and the control messages (suspend, cancel) that stop them.

Control requests are broadcast to every replica (no queue group): the replica running the syscall
acts on it, the others do not know the id and ignore it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from aios_schemas import ControlRequest

log = logging.getLogger(__name__)

Action = Literal["suspend", "cancel"]


@dataclass(eq=False)
class Run:
    """One exec in progress. `stopped` resolves with the first control action that applies to it."""

    id: str
    preemptible: bool
    stopped: asyncio.Future[Action] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Runs:
    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}

    @contextmanager
    def open(self, syscall_id: str, *, preemptible: bool) -> Iterator[Run]:
        run = Run(syscall_id, preemptible)
        self._runs[syscall_id] = run
        try:
            yield run
        finally:
            if self._runs.get(syscall_id) is run:
                del self._runs[syscall_id]

    def control(self, req: ControlRequest) -> bool:
        """Apply `req` to the run it names, if that run is here; True if it took effect."""
        run = self._runs.get(req.id)
        if run is None or run.stopped.done():
            return False
        if req.action == "suspend" and not run.preemptible:
            # The scheduler dispatched it as not preemptible; a suspend for it is a stale message.
            log.warning("ignoring suspend of %s: the run is not preemptible", req.id)
            return False
        run.stopped.set_result(req.action)
        return True

    def __len__(self) -> int:
        return len(self._runs)
