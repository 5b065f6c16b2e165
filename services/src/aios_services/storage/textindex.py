"""Vectors of text files for `files.search` in semantic mode, made in the background after a write
(a write never waits for an embedder), keyed by content hash so versions with the same bytes (a
rollback, a move, a copy) share them. The embedders are the memory service's (one implementation
of each: hashing for tests, local ONNX MiniLM, any `/v1/embeddings` endpoint)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Sequence

from ..memory.embedders import Embedder
from .meta import Meta

log = logging.getLogger(__name__)
CHUNK_CHARS = 1000  # about what MiniLM reads (256 tokens)
MAX_CHUNKS = 16  # the rest of a long text is found by keyword search only
_SPACE = re.compile(r"\s")


def chunks(text: str, size: int = CHUNK_CHARS, limit: int = MAX_CHUNKS) -> list[tuple[int, str]]:
    """(start, piece) of `text` in pieces of about `size` characters, cut at whitespace."""
    out: list[tuple[int, str]] = []
    start = 0
    while start < len(text) and len(out) < limit:
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind(" ", start + size // 2, end)
            end = cut if cut > start else end
        piece = text[start:end].strip()
        if piece:
            out.append((start, piece))
        start = end
    return out


class TextIndex:
    def __init__(self, meta: Meta, embedder: Embedder) -> None:
        self.meta = meta
        self.embedder = embedder
        self._queue: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()
        self._waiting: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def name(self) -> str:
        return self.embedder.name

    def submit(self, sha256: str, text: str | None) -> None:
        """Queue a text for its vectors (None: read it from the store when its turn comes)."""
        if sha256 in self._waiting:
            return
        self._waiting.add(sha256)
        self._idle.clear()
        self._queue.put_nowait((sha256, text))

    async def settled(self, timeout: float) -> None:
        """Wait (at most `timeout`) until every text submitted so far has its vectors: a search
        then sees the caller's own earlier writes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def embed_query(self, text: str) -> list[float]:
        return (await self.embedder.embed([text]))[0]

    async def catch_up(self) -> None:
        """Texts written while no index ran (or with another embedder): queued at start."""
        for sha in await self.meta.run(lambda: self.meta.unembedded(self.name, 100_000)):
            self.submit(sha, None)

    async def run_forever(self) -> None:
        while True:
            sha, text = await self._queue.get()
            try:
                await self._index(sha, text)
            except Exception:
                log.exception("could not index text %s", sha[:12])
            finally:
                self._waiting.discard(sha)
                if self._queue.empty() and not self._waiting:
                    self._idle.set()

    async def _index(self, sha: str, text: str | None) -> None:
        if await self.meta.run(lambda: self.meta.has_vectors(sha, self.name)):
            return
        if text is None:
            text = await self.meta.run(lambda: self.meta.text_by_hash(sha))
            if text is None:
                return
        pieces = chunks(text)
        started = time.monotonic()
        vectors = await self.embedder.embed([p for _, p in pieces]) if pieces else []
        rows: Sequence[tuple[int, list[float]]] = [(s, v) for (s, _), v in zip(pieces, vectors, strict=True)]
        await self.meta.run(lambda: self.meta.add_vectors(sha, self.name, rows))
        log.debug(
            "indexed %s: %d chunks in %.1f ms", sha[:12], len(rows), (time.monotonic() - started) * 1000
        )
