"""A kernel with the tools service (scheduler + tools; llm too when models are given), for `tools.*`
tests. Test tools are functions of `tests.tool_funcs`, run in the real sandbox."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aios_services.runtime import ServiceSettings
from aios_services.runtime.service import Starter
from aios_services.tools import main as tools_main
from aios_services.tools.settings import ToolsSettings
from tests.kernel import ExtraService, Kernel, running_kernel


def tools_service(**settings: object) -> ExtraService:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        s = ToolsSettings(**common, **settings)  # type: ignore[arg-type]
        return s, lambda bus, stack: tools_main.start(bus, stack, s)

    return make


@asynccontextmanager
async def tools_kernel(
    nats_url: str,
    root: Path,
    models: Mapping[str, Sequence[Mapping[str, object]]] | None = None,
    **settings: object,
) -> AsyncIterator[Kernel]:
    services = ("scheduler", "llm") if models else ("scheduler",)
    extra = {"tools": tools_service(**settings)}
    async with running_kernel(nats_url, root, models or {}, services=services, extra=extra) as k:
        yield k
