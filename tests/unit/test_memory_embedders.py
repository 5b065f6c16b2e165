"""Embedders: the hashing embedder is deterministic (across processes: no salted hash) and puts
texts that share words closer than texts that do not."""

from __future__ import annotations

import math
import subprocess
import sys

from aios_services.memory.embedders import HashingEmbedder


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
