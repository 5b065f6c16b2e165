"""Requests an agent makes about its own syscalls (cancel, result) on `ctl.<service>.<op>.<agent>`.

NATS lets an agent publish only on subjects that carry its own name, so the subject says who asks;
a body that claims another agent is refused (`forbidden`) before the handler sees it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel

from aios_schemas import AiosError, decode, encode, error_headers

from .bus import Bus, Silent

log = logging.getLogger(__name__)


Req = TypeVar("Req", bound=BaseModel)


async def serve_agent_requests(
    bus: Bus,
    service: str,
    op: str,
    model: type[Req],
    handler: Callable[[Req], Awaitable[BaseModel]],
    *,
    queue: str = "",
    max_concurrency: int = 256,
) -> Subscription:
    """Answer `ctl.<service>.<op>.<agent>` for every agent; `model` has an `agent` field."""
    sem = asyncio.Semaphore(max_concurrency)
    prefix = bus.ns.ctl_for(service, op, "")

    async def process(msg: Msg) -> None:
        async with sem:
            try:
                req = decode(msg.data, model)
                asker = msg.subject.removeprefix(prefix)
                if getattr(req, "agent", None) != asker:
                    raise AiosError("forbidden", f"agent {asker!r} may only ask about its own syscalls")
                body, headers = encode(await handler(req)), None
            except Silent:
                return
            except AiosError as exc:
                body, headers = encode(exc.to_reply()), error_headers()
            except Exception as exc:  # the last line of defence: report, never crash the service
                log.exception("handler for %s failed", msg.subject)
                body, headers = encode(AiosError("internal", type(exc).__name__).to_reply()), error_headers()
            if msg.reply:
                await bus.nc.publish(msg.reply, body, headers=headers)

    async def on_msg(msg: Msg) -> None:
        bus.spawn(process(msg))

    return await bus.nc.subscribe(bus.ns.ctl_for(service, op, "*"), queue=queue, cb=on_msg)
