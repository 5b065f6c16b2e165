"""Real servers for tests: nats-server (JetStream) and weed mini, on free loopback ports.

They are launched with the same command lines `aios up` uses (aios_services.cli.procs).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from aios_schemas import Namespace
from aios_services.cli.home import Home
from aios_services.cli.procs import S3Ports, Spec, free_port, nats_spec, s3_spec
from aios_services.runtime.natsauth import Identity, new_password, server_config, with_credentials
from aios_services.runtime.tokens import new_token

# The agents tests act as. The test nats-server knows them (each with its own token and only its own
# subjects, as `aios up` configures agents), plus an admin with the kernel's rights for the services
# and for tests that play a raw client.
TEST_AGENTS = ("agent-1", "agent-2", "agent-3", "agent-a", "agent-b", "agent-free", "agent-q1", "local")


class BusAuth:
    """The users of a test nats-server and their secrets."""

    def __init__(self, conf: Path, agents: tuple[str, ...] = TEST_AGENTS) -> None:
        self.conf = conf
        self.admin = Identity("admin", new_password(), "kernel")
        self.tokens = {agent: new_token() for agent in agents}
        conf.write_text(
            server_config([self.admin, *(Identity(a, t, "agent") for a, t in self.tokens.items())])
        )
        conf.chmod(0o600)

    def admin_url(self, url: str) -> str:
        return with_credentials(url, self.admin.user, self.admin.password)

    def token(self, agent: str) -> str:
        if agent not in self.tokens:
            raise KeyError(f"test agent {agent!r} is unknown to the test nats-server: add it to TEST_AGENTS")
        return self.tokens[agent]


# Each running test nats-server's users, by its admin URL (kernel helpers look them up from the URL
# the tests already pass around).
AUTH: dict[str, BusAuth] = {}


def auth_for(url: str) -> BusAuth:
    return AUTH[url]


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


def nats_server(root: Path, port: int | None = None, auth: BusAuth | None = None) -> Spec:
    return nats_spec(Home(root), port or free_port(), free_port(), auth.conf if auth else None)


@contextmanager
def authed_nats(root: Path, agents: tuple[str, ...] = TEST_AGENTS) -> Iterator[str]:
    """A nats-server with the users `aios up` would give, for benchmarks: yields the admin URL."""
    root.mkdir(parents=True, exist_ok=True)
    auth = BusAuth(root / "nats.conf", agents)
    with running(nats_server(root, auth=auth), root / "nats.log") as srv:
        url = auth.admin_url(srv.address)
        AUTH[url] = auth
        try:
            yield url
        finally:
            AUTH.pop(url, None)


def s3_server(root: Path, access_key: str, secret_key: str) -> Spec:
    return s3_spec(Home(root), S3Ports.allocate(), access_key, secret_key)


# A bus locked as `aios up` locks it, for one test: these service users (each only what its
# permissions give it), an admin, and agent-1; its URL, namespace and the identities by name.
LockedBus = tuple[str, Namespace, dict[str, Identity]]


@asynccontextmanager
async def locked_bus(root: Path, services: tuple[str, ...], admin: str = "admin") -> AsyncIterator[LockedBus]:
    ns = Namespace("t" + uuid.uuid4().hex[:8])
    who = {name: Identity(f"svc-{name}", new_password(), "service", ns.name) for name in services}
    who[admin] = Identity(admin, new_password(), "operator" if admin == "operator" else "kernel")
    who["agent-1"] = Identity("agent-1", new_password(), "agent")
    conf = root / "nats.conf"
    conf.write_text(server_config(list(who.values())))
    server = running(nats_server(root / "nats", free_port(), _ConfOnly(conf)), root / "nats.log")  # type: ignore[arg-type]
    srv = await asyncio.to_thread(server.__enter__)
    try:
        yield srv.address, ns, who
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


class _ConfOnly:
    """What nats_server() needs of a BusAuth: its config file."""

    def __init__(self, conf: Path) -> None:
        self.conf = conf
