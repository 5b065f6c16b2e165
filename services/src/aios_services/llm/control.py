"""Runs in progress on this replica, and the control messages (suspend, cancel) that stop them.

Control requests are broadcast to every replica (no queue group): the replica running the syscall
acts on it, the others do not know the id and ignore it.

A suspend takes effect only once the run has earned it (`Run.suspend`): a scheduler's time slice is
counted from dispatch, and a resumed run first pays for the switch (snapshot, request, the engine's
queue and re-prefill of the whole context). Cut as soon as its slice ends, a run whose switch costs
more than the slice never reaches its first new token, and round-robin livelocks: calls trade places
forever, each resumed only to be suspended again with nothing produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
    started: float = field(default_factory=time.monotonic)
    first_output: float | None = None
    """When the run's backend call produced its first new token (None: not yet)."""
    suspend_asked: float | None = None
    """When a suspend arrived that the run has not yet earned (None: none pending)."""
    _timer: asyncio.TimerHandle | None = None

    def output(self) -> None:
        """The backend produced new output (a token or a piece of a tool call)."""
        if self.first_output is None:
            self.first_output = time.monotonic()
            if self.suspend_asked is not None:
                self._suspend_when_earned()

    def suspend(self) -> None:
        """Suspend the run once it has earned it: after its first new token, and once it has been
        producing output (1) for as long as it had run when the suspend came, so that the slice the
        scheduler meant counts output time only, and (2) for at least as long as it took to reach
        that first token, so that switching costs at most half of any run."""
        if self.suspend_asked is None:
            self.suspend_asked = time.monotonic()
            if self.first_output is not None:
                self._suspend_when_earned()

    def cancel(self) -> None:
        self._stop("cancel")

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _suspend_when_earned(self) -> None:
        assert self.first_output is not None and self.suspend_asked is not None
        to_first = self.first_output - self.started
        due = self.first_output + max(self.suspend_asked - self.started, to_first)
        delay = due - time.monotonic()
        if delay <= 0:
            self._stop("suspend")
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._stop, "suspend")

    def _stop(self, action: Action) -> None:
        self.close()
        if not self.stopped.done():
            self.stopped.set_result(action)


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
            run.close()
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
        if req.action == "suspend":
            run.suspend()
        else:
            run.cancel()
        return True

    def __len__(self) -> int:
        return len(self._runs)
