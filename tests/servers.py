"""Real servers for tests: nats-server (JetStream) and weed mini, on free loopback ports.

They are launched with the same command lines `aios up` uses (aios_services.cli.procs).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from aios_services.cli.home import Home
from aios_services.cli.procs import S3Ports, Spec, free_port, nats_spec, s3_spec


@dataclass(frozen=True)
class Server:
    spec: Spec
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        assert self.spec.address
        return self.spec.address


@contextmanager
def running(spec: Spec, log: Path) -> Iterator[Server]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            spec.argv,
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **spec.env},
            cwd=spec.cwd,
        )
    try:
        deadline = time.monotonic() + spec.ready_timeout_s
        while not asyncio.run(spec.ready()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{spec.name} failed to start: {log.read_text()[-2000:]}")
            time.sleep(0.02)
        yield Server(spec, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if spec.cleanup:
            spec.cleanup()


def nats_server(root: Path, port: int | None = None) -> Spec:
    return nats_spec(Home(root), port or free_port(), free_port())


def s3_server(root: Path, access_key: str, secret_key: str) -> Spec:
    return s3_spec(Home(root), S3Ports.allocate(), access_key, secret_key)
