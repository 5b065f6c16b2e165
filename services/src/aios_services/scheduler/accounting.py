"""What agents used: per agent/program totals, kept by each replica (for `aios top`)."""

from __future__ import annotations

from aios_schemas import AgentStats

from .groups import Held


class Accounts:
    """Totals per agent (program None) and per agent program, kept by this replica."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str | None], AgentStats] = {}

    def record(self, held: Held, *, suspended: bool = False) -> None:
        for key in ((held.call.agent, None), (held.call.agent, held.job.program)):
            acc = self.items.get(key) or AgentStats(agent=key[0], program=key[1])
            if suspended:
                acc = acc.model_copy(update={"suspensions": acc.suspensions + 1})
            else:
                acc = acc.model_copy(
                    update={
                        "calls": acc.calls + 1,
                        "tokens": acc.tokens + held.tokens,
                        "wait_s": acc.wait_s + held.wait_s,
                        "service_s": acc.service_s + held.service_s,
                    }
                )
            self.items[key] = acc
