"""Files through the kernel on a real `aios up` stack (every service its own process): small-file
write/read round trips (latency p50/p99, ops/s sequential and with many in flight), against the
same operations made directly on the object store in the same run (the baseline); then one large
file (200 MB by default) written and read back through presigned URLs, with the peak RSS of the
storage service and of this client process.

Run: `.venv/bin/python -m bench.files_bench [--n 300] [--concurrency 32] [--big-mb 200]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from minio import Minio

from aios_schemas import FilesCommit, FilesUpload, FileUploadTicket
from aios_sdk import AIOS
from aios_services.cli.home import Home


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def rss_peak_mb(pid: int) -> float:
    """Peak resident set (VmHWM) of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rss_now_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def self_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> tuple[int, str]:
    return path.stat().st_size, sha256_of(path)


def put_file(url: str, path: Path, start: int, size: int) -> None:
    def blocks() -> Iterator[bytes]:
        left = size
        with open(path, "rb") as f:
            f.seek(start)
            while left and (block := f.read(min(1 << 20, left))):
                left -= len(block)
                yield block

    req = urllib.request.Request(url, data=blocks(), method="PUT", headers={"Content-Length": str(size)})
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()


async def timed(n: int, op: Callable[[int], Awaitable[object]]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        await op(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


async def parallel(n: int, conc: int, op: Callable[[int], Awaitable[object]]) -> float:
    """ops/s with `conc` calls in flight."""
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        async with sem:
            await op(i)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


def line(name: str, xs: list[float]) -> str:
    return (
        f"  {name:<22} p50 {pct(xs, 50):6.2f} ms  p99 {pct(xs, 99):6.2f} ms"
        f"  mean {statistics.fmean(xs):6.2f} ms  ({1000 / statistics.fmean(xs):6.0f} ops/s sequential)"
    )


def make_file(path: Path, mb: int) -> str:
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mb):
            chunk = block[i:] + block[:i]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


async def bench(home: Path, work: Path, n: int, conc: int, big_mb: int) -> None:
    state = Home(home).read_state()
    assert state is not None
    storage = next(p.pid for p in state.processes if p.name == "storage" and p.pid)
    data = os.urandom(1024)
    async with AIOS.connect(home=home) as aios:
        for i in range(30):  # warm up
            await aios.files.write(f"warm/{i}", data)
            await aios.files.read(f"warm/{i}")
        print(f"files through the kernel (aios up, 1 KiB files, n={n}):")
        w = await timed(n, lambda i: aios.files.write(f"small/{i}", data))
        r = await timed(n, lambda i: aios.files.read(f"small/{i}"))
        s = await timed(n, lambda i: aios.files.stat(f"small/{i}"))
        print(line("files.write", w))
        print(line("files.read", r))
        print(line("files.stat", s))
        wp = await parallel(n, conc, lambda i: aios.files.write(f"par/{i}", data))
        rp = await parallel(n, conc, lambda i: aios.files.read(f"par/{i}"))
        print(f"  with {conc} in flight: write {wp:6.0f} ops/s, read {rp:6.0f} ops/s")

        # Baseline: the same bytes straight to the object store (what the kernel adds is the rest).
        s3 = _direct_client(storage)
        if s3 is not None:
            client, bucket = s3

            def put(i: int) -> None:
                client.put_object(bucket, f"bench/{i}", io.BytesIO(data), len(data))

            def get(i: int) -> None:
                resp = client.get_object(bucket, f"bench/{i}")
                resp.read()
                resp.close()
                resp.release_conn()

            dw = await timed(n, lambda i: asyncio.to_thread(put, i))
            dr = await timed(n, lambda i: asyncio.to_thread(get, i))
            print("baseline, direct to S3 (minio SDK, same process, same bytes):")
            print(line("put_object", dw))
            print(line("get_object", dr))

        big = work / "big.bin"
        digest = await asyncio.to_thread(make_file, big, big_mb)
        svc_before, me_before = rss_now_mb(storage), self_peak_mb()
        t = time.perf_counter()
        info = await aios.files.write_file("big/file.bin", big)
        up_s = time.perf_counter() - t
        assert info.sha256 == digest
        t = time.perf_counter()
        await aios.files.read_file("big/file.bin", work / "back.bin")
        down_s = time.perf_counter() - t
        client_peak = self_peak_mb()
        assert await asyncio.to_thread(sha256_of, work / "back.bin") == digest
        # The same upload step by step: where the time goes.
        t0 = time.perf_counter()
        size, sha = await asyncio.to_thread(file_digest, big)
        t1 = time.perf_counter()
        ticket = await aios.syscall(FilesUpload(path="big/steps.bin", size=size, sha256=sha))
        assert isinstance(ticket, FileUploadTicket)
        for i, url in enumerate(ticket.parts):
            start = i * ticket.part_size
            await asyncio.to_thread(put_file, url, big, start, min(ticket.part_size, size - start))
        t2 = time.perf_counter()
        await aios.syscall(FilesCommit(upload=ticket.upload))
        t3 = time.perf_counter()
        print(f"large file ({big_mb} MB) through presigned URLs:")
        print(
            f"  steps: client sha256 {t1 - t0:4.2f} s, PUT to S3 (parts one at a time) {t2 - t1:4.2f} s,"
            f" commit (complete + streamed sha256) {t3 - t2:4.2f} s"
        )
        print(f"  write_file {up_s:5.2f} s ({big_mb / up_s:5.0f} MB/s, parts 4 at a time + commit)")
        print(f"  read_file  {down_s:5.2f} s ({big_mb / down_s:5.0f} MB/s, streamed to disk, hash checked)")
        print(
            f"  storage service RSS: {svc_before:.0f} MB before, peak {rss_peak_mb(storage):.0f} MB"
            f" (VmHWM over its whole life)"
        )
        print(f"  client process peak RSS: {me_before:.0f} MB before, {client_peak:.0f} MB after both")


def _direct_client(pid: int) -> tuple[Minio, str] | None:
    """A client of the stack's object store with the stack's keys (read from the storage service's
    environment, as the operator may), and a scratch bucket."""
    try:
        env = dict(
            kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in kv
        )
    except OSError:
        return None
    from urllib.parse import urlparse

    url = urlparse(env["AIOS_S3_ENDPOINT"])
    client = Minio(
        url.netloc, access_key=env["AIOS_S3_ACCESS_KEY"], secret_key=env["AIOS_S3_SECRET_KEY"], secure=False
    )
    bucket = "aios-bench"
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    return client, bucket


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--big-mb", type=int, default=200)
    args = ap.parse_args(argv)
    aios = [sys.executable, "-m", "aios_services.cli.main"]
    with tempfile.TemporaryDirectory(prefix="aios-files-bench-") as d:
        home = Path(d) / "home"
        subprocess.run([*aios, "up", "--detach", "--home", str(home)], check=True, stdout=subprocess.DEVNULL)
        try:
            asyncio.run(bench(home, Path(d), args.n, args.concurrency, args.big_mb))
        finally:
            subprocess.run([*aios, "down", "--home", str(home)], check=False, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
