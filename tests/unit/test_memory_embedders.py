"""Embedders: the hashing embedder is deterministic (across processes: no salted hash) and puts
texts that share words closer than texts that do not."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections.abc import Sequence

import pytest

from aios_services.memory.embedders import (
    BatchingEmbedder,
    EmbedderError,
    HashingEmbedder,
    MiniLMEmbedder,
    minilm_files,
)


def cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_is_deterministic_and_unit_length() -> None:
    e = HashingEmbedder(64)
    a, b = await e.embed(["The cat sat on the mat", "The cat sat on the mat"])
    assert a == b and len(a) == 64 == e.dim and e.name == "hashing-64"
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-9)
    assert (await e.embed([""]))[0] == [0.0] * 64


def test_hashing_is_the_same_in_another_process() -> None:
    code = (
        "from aios_services.memory.embedders import HashingEmbedder as H; "
        "print(H(32).embed_one('hello world'))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert other == str(HashingEmbedder(32).embed_one("hello world"))


async def test_shared_words_are_closer() -> None:
    e = HashingEmbedder()
    q, near, far = await e.embed(
        ["favourite colour blue", "my favourite colour is blue", "tax return deadline"]
    )
    assert cos(q, near) > cos(q, far)


def minilm_or_skip() -> MiniLMEmbedder:
    try:
        minilm_files()
        import onnxruntime  # type: ignore[import-untyped]  # noqa: F401
    except (FileNotFoundError, ImportError):
        pytest.skip("the MiniLM extra is not installed (make minilm)")
    return MiniLMEmbedder()


async def test_minilm_means_what_it_says() -> None:
    """The real model (no exact scores): a paraphrase is nearer than an unrelated sentence, vectors
    are unit length, and the same text embeds the same alone or in a batch."""
    e = minilm_or_skip()
    texts = ["A cat is sleeping on the sofa.", "The kitten naps on the couch.", "Quarterly taxes are due."]
    a, b, c = await e.embed(texts)
    assert len(a) == e.dim == 384
    assert math.isclose(math.sqrt(sum(x * x for x in a)), 1.0, rel_tol=1e-4)
    assert cos(a, b) > cos(a, c) + 0.2
    alone = (await e.embed([texts[0]]))[0]
    assert cos(alone, a) > 0.999


class Counting:
    """An embedder that records the batches it is given (and can fail)."""

    name = "counting-8"
    dim = 8

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.fail = False
        self.inner = HashingEmbedder(8)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.batches.append(len(texts))
        await asyncio.sleep(0)  # a real model yields while it works: others queue meanwhile
        if self.fail:
            raise EmbedderError("down")
        return await self.inner.embed(texts)


async def test_batching_embeds_concurrent_callers_together_in_order() -> None:
    inner = Counting()
    e = BatchingEmbedder(inner, max_batch=16)
    texts = [[f"text {i}", f"other {i}"] for i in range(20)]
    got = await asyncio.gather(*(e.embed(t) for t in texts))
    assert got == [await inner.inner.embed(t) for t in texts]  # each caller its own vectors
    assert sum(inner.batches) == 40 and len(inner.batches) < 20 and max(inner.batches) <= 16
    assert (e.name, e.dim) == ("counting-8", 8)
    inner.fail = True
    results = await asyncio.gather(e.embed(["a"]), e.embed(["b"]), return_exceptions=True)
    assert all(isinstance(r, EmbedderError) for r in results)
    inner.fail = False
    assert len((await e.embed(["after"]))[0]) == 8
