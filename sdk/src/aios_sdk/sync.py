"""A synchronous twin of `AIOS` for scripts and notebooks: the same calls, blocking.

```python
from aios_sdk import AIOSSync
with AIOSSync.connect() as aios:                      # same arguments as AIOS.connect()
    print(aios.llm.chat("sim-llama-8b", [{"role": "user", "content": "hi"}]).content)
    for delta in aios.llm.stream("sim-llama-8b", [{"role": "user", "content": "hi"}]):
        print(delta, end="")
    aios.memory.add("a fact"); aios.files.write("notes.md", "text"); aios.tools.list()
```
Every method of `llm`, `memory`, `files` and `tools` is its async twin's, run to completion on a
private event loop in a daemon thread (the one the connection lives on); each takes the same
`timeout=` and raises the same typed errors. Not for use inside a running event loop (use `AIOS`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from typing import Any, TypeVar

from aios_schemas import ChatMessage, ChatReply, LlmChat

from .client import AIOS, ChatStream

T = TypeVar("T")
_END = object()


class _Loop:
    """An event loop running in its own daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="aios-sync", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if _in_this_loop(self.loop):
            raise RuntimeError("AIOSSync called from its own event loop: use the async AIOS there")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def _in_this_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class _Blocking:
    """Every coroutine method of `api`, blocking."""

    def __init__(self, api: object, loop: _Loop) -> None:
        self._api = api
        self._loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        attr = getattr(self._api, name)
        if not callable(attr) or name.startswith("_"):
            return attr  # type: ignore[no-any-return]

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return self._loop.run(result)
            return result

        call.__doc__ = attr.__doc__
        call.__name__ = name
        return call


class SyncStream:
    """Iterate for the text deltas; `reply` is the whole `ChatReply` once the iteration ended."""

    def __init__(self, loop: _Loop, opener: Callable[[], AbstractAsyncContextManager[ChatStream]]) -> None:
        self._loop = loop
        self._opener = opener
        self.reply: ChatReply | None = None

    def __iter__(self) -> Iterator[str]:
        items: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            try:
                async with self._opener() as s:
                    async for delta in s:
                        items.put(delta)
                    self.reply = s.reply
                items.put(_END)
            except BaseException as exc:
                items.put(exc)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop.loop)
        try:
            while True:
                item = items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, str)
                yield item
        finally:
            if not future.done():  # left early: leaving the stream cancels the syscall in the kernel
                future.cancel()
                with suppress(concurrent.futures.CancelledError, concurrent.futures.TimeoutError, Exception):
                    future.result(timeout=10)


class SyncLlm(_Blocking):
    def stream(
        self,
        model: str,
        messages: Sequence[ChatMessage | Mapping[str, object]],
        **params: Any,
    ) -> SyncStream:
        """`for delta in aios.llm.stream(...)`: the same parameters as `chat()`."""
        api = self._api
        return SyncStream(self._loop, lambda: api.stream(model, messages, **params))  # type: ignore[attr-defined]

    def stream_payload(self, payload: LlmChat, **options: Any) -> SyncStream:
        api = self._api
        return SyncStream(self._loop, lambda: api.stream_payload(payload, **options))  # type: ignore[attr-defined]


class AIOSSync:
    """A blocking connection to the AIOS kernel for one agent (see the module's docstring)."""

    def __init__(self, client: AIOS, loop: _Loop) -> None:
        self.client = client
        self.agent = client.agent
        self.conn = client.conn
        self.llm = SyncLlm(client.llm, loop)
        self.memory = _Blocking(client.memory, loop)
        self.files = _Blocking(client.files, loop)
        self.tools = _Blocking(client.tools, loop)
        self._loop = loop

    def syscall(self, payload: Any, **options: Any) -> Any:
        return self._loop.run(self.client.syscall(payload, **options))

    def cancel(self, syscall_id: str, *, timeout: float = 5.0) -> Any:
        return self._loop.run(self.client.cancel(syscall_id, timeout=timeout))

    def result(self, syscall_id: str, *, timeout: float = 5.0) -> Any:
        return self._loop.run(self.client.result(syscall_id, timeout=timeout))

    @classmethod
    @contextmanager
    def connect(cls, **kwargs: Any) -> Iterator[AIOSSync]:
        """`with AIOSSync.connect(...) as aios:`, with `AIOS.connect`'s arguments."""
        loop = _Loop()
        manager = AIOS.connect(**kwargs)
        try:
            client = loop.run(manager.__aenter__())
            try:
                yield cls(client, loop)
            finally:
                loop.run(manager.__aexit__(None, None, None))
        finally:
            loop.stop()
