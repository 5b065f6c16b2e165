"""The gateway acts for an agent over that agent's own bus connection, logged in with the token the
HTTP request carried. NATS authenticates the key (a wrong one is refused at connect: 401) and
confines everything the gateway does for the request to that agent's subjects, so no bug here can
act as another agent, and a revoked agent's key stops working with its NATS user. Connections are
cached (a login costs a bcrypt check at the server) and closed when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

from aios_sdk import AIOS

log = logging.getLogger(__name__)


@dataclass
class _Entry:
    client: AIOS
    stack: AsyncExitStack
    used: float
    active: int = 0  # requests in flight: never closed under them


class AgentClients:
    def __init__(self, url: str, namespace: str, *, idle_s: float, max_agents: int) -> None:
        self.url = url  # without credentials: each connection logs in as its agent
        self.namespace = namespace
        self.idle_s = idle_s
        self.max_agents = max_agents
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._opening: dict[tuple[str, str], asyncio.Lock] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def client(self, agent: str, token: str) -> AsyncIterator[AIOS]:
        """The agent's connection for one request (opened on first use; Unauthenticated if NATS
        refuses the token, BackendUnavailable if the bus is away)."""
        key = (agent, hashlib.sha256(token.encode()).hexdigest())
        entry = await self._get(key, agent, token)
        entry.active += 1
        try:
            yield entry.client
        finally:
            entry.active -= 1
            entry.used = time.monotonic()

    async def _get(self, key: tuple[str, str], agent: str, token: str) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None and not entry.client.closed:
            self._entries.move_to_end(key)
            return entry
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._entries.get(key)
            if entry is not None and entry.client.closed:  # revoked, or the bus closed it
                await self._close(key)
                entry = None
            if entry is None:
                stack = AsyncExitStack()
                try:
                    client = await stack.enter_async_context(
                        AIOS.connect(
                            url=self.url, token=token, agent=agent, namespace=self.namespace, traces=False
                        )
                    )
                except BaseException:
                    await stack.aclose()
                    raise
                entry = _Entry(client, stack, time.monotonic())
                self._entries[key] = entry
                await self._trim()
            self._opening.pop(key, None)
            return entry

    async def _trim(self) -> None:
        while len(self._entries) > self.max_agents:
            oldest = next((k for k, e in self._entries.items() if e.active == 0), None)
            if oldest is None:
                return
            await self._close(oldest)

    async def _close(self, key: tuple[str, str]) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            try:
                await entry.stack.aclose()
            except Exception as exc:  # a connection that is already gone
                log.debug("closing the connection of %s: %r", key[0], exc)

    async def close_idle_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_s / 2))
            cutoff = time.monotonic() - self.idle_s
            for key in [k for k, e in self._entries.items() if e.active == 0 and e.used < cutoff]:
                await self._close(key)

    async def close_all(self) -> None:
        for key in list(self._entries):
            await self._close(key)
