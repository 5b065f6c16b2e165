"""infra/'s NATS cluster as local processes: the nodes' config (`infra/nats/nats.conf`, only its
paths, ports and host names changed), certificates from `infra/gen-certs.sh` and users from
`aios_services.cli.credentials`, three real nats-server nodes; then a kernel service started with
its generated environment file alone (plus the common variables compose sets) reaches the cluster
over TLS, as its own user, and creates its streams with 3 replicas."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from aios_services.cli.credentials import generate
from aios_services.cli.procs import free_port, venv_bin

INFRA = Path(__file__).parents[2] / "infra"
NODES = ("nats-1", "nats-2", "nats-3")


def node_config(
    conf: str, certs: Path, store: Path, ports: dict[str, tuple[int, int, int]], node: str
) -> str:
    """`infra/nats/nats.conf` for `node` on this machine: its paths and every node's ports."""
    client, monitor, route = ports[node]
    conf = conf.replace("/etc/nats/certs/", f"{certs}/").replace("store_dir: /data", f"store_dir: {store}")
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}")
    conf = conf.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{monitor}")
    conf = conf.replace("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{route}")
    # Routes by name (the certificate's), to each node's port here.
    return re.sub(r"nats-route://(nats-\d):6222", lambda m: f"nats-route://localhost:{ports[m[1]][2]}", conf)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, Path, dict[str, tuple[int, int, int]]]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed by infra/gen-certs.sh")
    certs, secrets = tmp_path / "certs", tmp_path / "secrets"
    subprocess.run(["sh", str(INFRA / "gen-certs.sh"), str(certs)], check=True, capture_output=True)
    ports = {n: (free_port(), free_port(), free_port()) for n in NODES}
    url = ",".join(f"tls://localhost:{ports[n][0]}" for n in NODES)
    generate(secrets, nats_url=url, namespace="", agents=["alice"])
    template = (INFRA / "nats" / "nats.conf").read_text()
    procs = []
    try:
        for node in NODES:
            d = tmp_path / node
            d.mkdir()
            shutil.copy(secrets / "auth.conf", d / "auth.conf")
            (d / "nats.conf").write_text(node_config(template, certs, d / "js", ports, node))
            log = open(d / "log", "wb")  # noqa: SIM115 - open while the node runs
            procs.append(
                subprocess.Popen(
                    [venv_bin("nats-server"), "--config", str(d / "nats.conf")],
                    env={**os.environ, "NATS_SERVER_NAME": node},
                    stdout=log,
                    stderr=log,
                )
            )
        yield certs, secrets, ports
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


async def stream_replicas(url: str, ca: Path, stream: str, timeout: float = 60.0) -> int:
    """How many replicas the stream has once it exists (asked as the operator)."""
    tls = ssl.create_default_context(cafile=str(ca))
    nc = await nats.connect(url.split(","), tls=tls, max_reconnect_attempts=-1, connect_timeout=2)
    try:
        js = nc.jetstream()
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                info = await js.stream_info(stream)
                return info.config.num_replicas or 1
            except Exception:
                if loop.time() > end:
                    raise
                await asyncio.sleep(0.2)  # polling a condition with a deadline
    finally:
        await nc.close()


async def server_info(port: int) -> dict[str, object]:
    """The INFO a node greets a client with (before any TLS)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        line = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert line.startswith(b"INFO ")
    info = json.loads(line[5:])
    assert isinstance(info, dict)
    return info


@pytest.mark.timeout(120)
def test_a_service_joins_the_infra_cluster_over_tls_as_its_own_user(
    cluster: tuple[Path, Path, dict[str, tuple[int, int, int]]], tmp_path: Path
) -> None:
    certs, secrets, ports = cluster
    operator_url = (secrets / "operator.url").read_text().strip()
    env = {
        **os.environ,
        **env_file(secrets / "scheduler.env"),
        "AIOS_STREAM_REPLICAS": "3",
        "SSL_CERT_FILE": str(certs / "ca.pem"),  # how compose gives the services the CA
    }
    log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115
    svc = subprocess.Popen([sys.executable, "-m", "aios_services.scheduler"], env=env, stdout=log, stderr=log)
    try:
        replicas = asyncio.run(stream_replicas(operator_url, certs / "ca.pem", "AIOS_SYSCALLS"))
        assert replicas == 3
        assert svc.poll() is None, (tmp_path / "scheduler.log").read_text()[-3000:]
    finally:
        svc.terminate()
        svc.wait(20)
    for node in NODES:  # every node requires TLS of its clients, and names itself as compose does
        info = asyncio.run(server_info(ports[node][0]))
        assert info["tls_required"] is True and info["server_name"] == node
