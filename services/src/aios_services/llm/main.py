"""`python -m aios_services.llm`: load the model catalogue, publish capacities, serve `exec.llm`."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack

from aios_schemas import ExecRequest, ResourceLimits, encode, resource_key

from ..runtime import Bus, HealthDetails, main_for
from .backends import Backend
from .config import ConfigError, load_config
from .handlers import LlmHandlers
from .settings import LlmSettings


async def start(bus: Bus, stack: AsyncExitStack, settings: LlmSettings) -> HealthDetails:
    cfg = load_config(settings.llm_config)
    models = {name: [Backend(name, b) for b in m.backends] for name, m in cfg.models.items()}
    for backends in models.values():
        for b in backends:
            stack.push_async_callback(b.close)
    # Tell the scheduler how much each model can take (sum of its backends' slots).
    limits = await bus.ensure_kv(bus.ns.limits_bucket)
    for name, m in cfg.models.items():
        cap = ResourceLimits(capacity=sum(b.slots for b in m.backends))
        await limits.put(resource_key(f"llm.{name}"), encode(cap))
    handlers = LlmHandlers(bus, models)
    await bus.serve(
        bus.ns.exec("llm"), ExecRequest, handlers.exec, queue="llm", max_concurrency=settings.max_concurrency
    )
    return lambda: {"models": {n: [b.name for b in bs] for n, bs in models.items()}}


def main() -> None:
    settings = LlmSettings()
    try:
        load_config(settings.llm_config)
    except ConfigError as exc:
        sys.exit(f"aios llm: bad config: {exc}")
    main_for("llm", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
