"""Memory through the kernel on a real `aios up` stack (every service its own process): add, get,
update, semantic search (filtered) and keyword search round trips (latency p50/p99, ops/s sequential
and with many in flight), against the same calls made on the memory handlers in this process on a
DuckDB file of its own (the baseline: the store and the embedder without the bus, the scheduler and
the SDK). Then the embedders' own speed (sentences/s).

Run: `.venv/bin/python -m bench.memory_bench [--n 300] [--concurrency 16] [--embedder hashing|minilm]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aios_schemas import Syscall, new_id
from aios_schemas.memory import (
    MemoryAdd,
    MemoryAddReply,
    MemoryEvicted,
    MemoryGet,
    MemorySearch,
    MemoryUpdate,
)
from aios_sdk import AIOS, where
from aios_services.memory.embedders import Embedder, HashingEmbedder, MiniLMEmbedder
from aios_services.memory.handlers import Deps, MemoryHandlers
from aios_services.memory.lruk import Quota
from aios_services.memory.store import Db, Space

TOPICS = ["cats", "taxes", "travel", "cooking", "music", "gardening", "finance", "health", "sports", "books"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def text(i: int) -> str:
    t = TOPICS[i % len(TOPICS)]
    return f"note {i}: the agent learned something about {t}, detail number {i * 7 % 101}"


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def parallel(n: int, conc: int, op: Callable[[int], Awaitable[object]]) -> float:
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            await op(i)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


def line(name: str, xs: list[float]) -> str:
    return (
        f"  {name:<24} p50 {pct(xs, 50):6.2f} ms  p99 {pct(xs, 99):6.2f} ms"
        f"  mean {statistics.fmean(xs):6.2f} ms  ({1000 / statistics.fmean(xs):6.0f} ops/s sequential)"
    )


Ops = dict[str, Callable[[int], Awaitable[object]]]


async def run_ops(title: str, ops: Ops, n: int, conc: int) -> None:
    print(title)
    for name, op in ops.items():
        if name.startswith("par:"):
            continue
        print(line(name, await timed(n, op)))
    rates = [
        f"{name[4:]} {await parallel(n, conc, op):5.0f} ops/s"
        for name, op in ops.items()
        if name.startswith("par:")
    ]
    print(f"  with {conc} in flight: " + ", ".join(rates))


async def through_kernel(home: Path, n: int, conc: int) -> None:
    async with AIOS.connect(home=home) as aios:
        ids = [
            (await aios.memory.add(text(i), metadata={"topic": TOPICS[i % 10], "i": i})).record.id
            for i in range(30)
        ]
        added: list[str] = []

        async def add(i: int) -> None:
            added.append(
                (await aios.memory.add(text(i), metadata={"topic": TOPICS[i % 10], "i": i})).record.id
            )

        ops: Ops = {
            "memory.add": add,
            "memory.get": lambda i: aios.memory.get(added[i % len(added)]),
            "memory.update": lambda i: aios.memory.update(added[i % len(added)], text=text(i) + " (revised)"),
            "memory.search semantic": lambda i: aios.memory.search(
                f"what about {TOPICS[i % 10]}", k=5, filter=where.eq("metadata.topic", TOPICS[i % 10])
            ),
            "memory.search keyword": lambda i: aios.memory.search(f"detail {i % 101}", k=5, mode="keyword"),
            "par:add": lambda i: aios.memory.add(text(i)),
            "par:search": lambda i: aios.memory.search(f"what about {TOPICS[i % 10]}", k=5),
        }
        assert ids
        await run_ops(f"memory through the kernel (aios up, n={n}):", ops, n, conc)


async def in_process(work: Path, embedder: Embedder, n: int, conc: int) -> None:
    db = Db(work / "baseline.duckdb", Space(embedder.name, embedder.dim))
    await db.run(db.open)

    async def publish(ev: MemoryEvicted) -> None:
        pass

    h = MemoryHandlers(
        Deps(db=db, blobs=None, embedder=embedder, quota=lambda a: Quota(1000, 1 << 24), publish=publish)
    )
    added: list[str] = []

    async def call(payload: MemoryAdd | MemoryGet | MemoryUpdate | MemorySearch) -> object:
        return await h.handle(Syscall(id=new_id(), agent="local", payload=payload))

    async def add(i: int) -> None:
        r = await call(MemoryAdd(text=text(i), metadata={"topic": TOPICS[i % 10], "i": i}))
        assert isinstance(r, MemoryAddReply)
        added.append(r.record.id)

    ops: Ops = {
        "memory.add": add,
        "memory.get": lambda i: call(MemoryGet(id=added[i % len(added)])),
        "memory.update": lambda i: call(MemoryUpdate(id=added[i % len(added)], text=text(i) + " (revised)")),
        "memory.search semantic": lambda i: call(
            MemorySearch(
                query=f"what about {TOPICS[i % 10]}", k=5, filter=where.eq("metadata.topic", TOPICS[i % 10])
            )
        ),
        "memory.search keyword": lambda i: call(MemorySearch(query=f"detail {i % 101}", k=5, mode="keyword")),
        "par:add": lambda i: call(MemoryAdd(text=text(i))),
        "par:search": lambda i: call(MemorySearch(query=f"what about {TOPICS[i % 10]}", k=5)),
    }
    try:
        await run_ops(
            f"baseline: the memory handlers in this process, no bus ({embedder.name}):", ops, n, conc
        )
    finally:
        await db.aclose()


async def embedder_speed(e: Embedder, n: int = 512) -> None:
    texts = [text(i) for i in range(n)]
    await e.embed(texts[:8])
    t = time.perf_counter()
    for i in range(0, n, 32):
        await e.embed(texts[i : i + 32])
    print(f"  {e.name:<24} {n / (time.perf_counter() - t):8.0f} sentences/s (batches of 32)")


def make_embedder(name: str) -> Embedder:
    return MiniLMEmbedder() if name == "minilm" else HashingEmbedder()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--embedder", choices=("hashing", "minilm"), default="hashing")
    args = ap.parse_args(argv)
    aios = [sys.executable, "-m", "aios_services.cli.main"]
    env = {**os.environ, "AIOS_MEMORY_EMBEDDER": args.embedder}
    with tempfile.TemporaryDirectory(prefix="aios-memory-bench-") as d:
        home = Path(d) / "home"
        subprocess.run(
            [*aios, "up", "--detach", "--home", str(home)], check=True, stdout=subprocess.DEVNULL, env=env
        )
        try:
            asyncio.run(through_kernel(home, args.n, args.concurrency))
        finally:
            subprocess.run([*aios, "down", "--home", str(home)], check=False, stdout=subprocess.DEVNULL)
        asyncio.run(in_process(Path(d), make_embedder(args.embedder), args.n, args.concurrency))
    print("embedders (this process, one thread):")
    asyncio.run(embedder_speed(HashingEmbedder()))
    try:
        asyncio.run(embedder_speed(MiniLMEmbedder()))
    except Exception as exc:  # the extra is optional
        print(f"  all-MiniLM-L6-v2-int8     not measured: {exc}")


if __name__ == "__main__":
    main()
