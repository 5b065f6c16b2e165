"""What every operator command that talks to a kernel service shares: find the running stack of a
home, send one request on a service's `ctl` subject with the operator's credentials, and turn every
failure into a one-line message and an exit code (2 bad input, 3 not running, 1 the service said
no or could not be reached)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import nats
import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console

from aios_schemas import AiosError, Namespace, decode_reply, encode
from aios_schemas.wire import validation_error
from aios_sdk.config import server_urls

from .home import Home

R = TypeVar("R", bound=BaseModel)
T = TypeVar("T")
console = Console()


def bad_input(command: str, exc: ValidationError, what: str = "request") -> NoReturn:
    print(f"aios {command}: {validation_error(exc, what).message}", file=sys.stderr)
    raise typer.Exit(2)


async def request(url: str, subject: str, req: BaseModel, reply: type[R], timeout: float = 10.0) -> R:
    """One request; asked again while nobody serves the subject (the service is restarting, or a
    standby replica is taking over: nothing was delivered, so asking again is safe), up to `timeout`."""
    nc = await nats.connect(server_urls(url), connect_timeout=2, allow_reconnect=False)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                msg = await nc.request(subject, encode(req), timeout=max(deadline - loop.time(), 0.1))
            except nats.errors.NoRespondersError:
                if loop.time() + 0.25 >= deadline:
                    raise
                await asyncio.sleep(0.25)
                continue
            return decode_reply(msg.data, msg.headers, reply)
    finally:
        await nc.close()


def run_against_stack(
    home: str | None, command: str, service: str, work: Callable[[str, Namespace], Coroutine[Any, Any, T]]
) -> T:
    """`work(bus_url, namespace)` against the stack running in `home`, errors reported for `command`."""
    h = Home.resolve(home)
    state = h.read_state()
    if h.lock_holder() is None or state is None:
        console.print(f"AIOS is not running in {h.root}.")
        raise typer.Exit(3)
    ns = Namespace(os.environ.get("AIOS_NAMESPACE", ""))
    try:
        return asyncio.run(work(h.bus_url(state), ns))
    except AiosError as exc:
        print(f"aios {command}: {exc.code}: {exc.message}", file=sys.stderr)
        raise typer.Exit(1) from None
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        why = str(exc) or type(exc).__name__
        print(f"aios {command}: cannot reach the {service} service: {why}", file=sys.stderr)
        raise typer.Exit(1) from None


def ask(home: str | None, command: str, service: str, op: str, req: BaseModel, reply: type[R]) -> R:
    """One request to `ctl.<service>.<op>` of the stack in `home`."""

    async def work(url: str, ns: Namespace) -> R:
        return await request(url, ns.ctl(service, op), req, reply)

    return run_against_stack(home, command, service, work)
