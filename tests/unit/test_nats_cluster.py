"""The configs of `aios up --cluster`: each node names itself, listens on loopback only, routes to the
others with the route credentials, includes the shared users file; nats-server itself accepts them
(`nats-server -t`). And the settings that carry a cluster to the services (URL lists, replicas, the
access service's pid files)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from aios_sdk.config import server_urls, without_credentials
from aios_services.access.settings import AccessSettings
from aios_services.cli.home import Home
from aios_services.cli.natscluster import Cluster, node_specs
from aios_services.cli.procs import is_nats, venv_bin
from aios_services.cli.status import node_url
from aios_services.runtime.natsauth import Identity, render_users, user_entries, with_credentials
from aios_services.runtime.settings import ServiceSettings


def test_node_configs(tmp_path: Path) -> None:
    home = Home(tmp_path)
    cluster = Cluster.allocate(3)
    specs = node_specs(home, cluster)
    assert [s.name for s in specs] == ["nats-1", "nats-2", "nats-3"]
    assert cluster.replicas == 3
    assert server_urls(cluster.url) == [n.url for n in cluster.nodes] == [s.address for s in specs]
    ports = [p for n in cluster.nodes for p in (n.port, n.route_port, n.monitor)]
    assert len(set(ports)) == 9
    for node, spec in zip(cluster.nodes, specs, strict=True):
        path = home.nats_node_config(node.index)
        assert spec.argv[1:] == ["-c", str(path), "-P", str(home.nats_node_pid(node.index))]
        assert path.stat().st_mode & 0o777 == 0o600  # the route password is in it
        text = path.read_text()
        assert f"server_name: aios-{node.index}\n" in text
        assert re.findall(r"(?m)^\s*(?:listen|http): (\S+)$", text) == [
            f"127.0.0.1:{node.port}",
            f"127.0.0.1:{node.monitor}",
            f"127.0.0.1:{node.route_port}",
        ]
        assert "name: aios\n" in text and "no_advertise: true" in text
        assert f'password: "{cluster.route_password}"' in text
        routes = re.findall(r"nats-route://route:([^@]+)@127\.0\.0\.1:(\d+)", text)
        others = {str(n.route_port) for n in cluster.nodes if n is not node}
        assert {port for _, port in routes} == others and len(routes) == 2
        assert {pw for pw, _ in routes} == {cluster.route_password}
        assert text.endswith('include "nats.conf"\n')
        assert f'store_dir: "{home.nats_dir / f"node-{node.index}"}"' in text


def test_nats_server_accepts_the_node_configs(tmp_path: Path) -> None:
    home = Home(tmp_path)
    cluster = Cluster.allocate(3)
    node_specs(home, cluster)
    users = user_entries([Identity("operator", "pw", "operator"), Identity("local", "tok", "agent")])
    shared = render_users(users, server_name="")  # the nodes name themselves
    assert not shared.startswith("server_name")
    home.nats_config.write_text(shared)
    for node in cluster.nodes:
        out = subprocess.run(
            [venv_bin("nats-server"), "-t", "-c", str(home.nats_node_config(node.index))],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stdout + out.stderr
    assert render_users(users).startswith("server_name: aios\n")  # one server, as before


def test_a_cluster_has_two_nodes_at_least() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        Cluster.allocate(1)
    assert Cluster.allocate(2).replicas == 2 and Cluster.allocate(5).replicas == 3
    assert Cluster.allocate(3, first_port=14222).nodes[0].port == 14222


def test_url_lists() -> None:
    url = "nats://127.0.0.1:1, nats://127.0.0.1:2,nats://127.0.0.1:3"
    assert server_urls(url) == ["nats://127.0.0.1:1", "nats://127.0.0.1:2", "nats://127.0.0.1:3"]
    assert server_urls("nats://127.0.0.1:4222") == ["nats://127.0.0.1:4222"]
    with pytest.raises(ValueError):
        server_urls(" , ")
    op = with_credentials(url, "operator", "p@ss")
    assert server_urls(op)[1] == "nats://operator:p%40ss@127.0.0.1:2"
    assert without_credentials(op) == "nats://127.0.0.1:1,nats://127.0.0.1:2,nats://127.0.0.1:3"
    assert node_url(op, "nats://127.0.0.1:3") == "nats://operator:p%40ss@127.0.0.1:3"
    assert is_nats("nats") and is_nats("nats-2") and not is_nats("natsx") and not is_nats("s3")


def test_settings_for_a_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AIOS_STREAM_REPLICAS", raising=False)
    assert ServiceSettings().stream_replicas == 1
    monkeypatch.setenv("AIOS_STREAM_REPLICAS", "3")
    assert ServiceSettings().stream_replicas == 3
    monkeypatch.setenv("AIOS_ACCESS_NATS_PID", f"{tmp_path}/nats-1.pid,{tmp_path}/nats-2.pid")
    monkeypatch.setenv("AIOS_ACCESS_NATS_SERVER_NAME", "")
    s = AccessSettings()
    assert s.access_nats_pid == [tmp_path / "nats-1.pid", tmp_path / "nats-2.pid"]
    assert s.access_nats_server_name == ""
    monkeypatch.setenv("AIOS_ACCESS_NATS_PID", str(tmp_path / "nats.pid"))
    monkeypatch.delenv("AIOS_ACCESS_NATS_SERVER_NAME")
    s = AccessSettings()
    assert s.access_nats_pid == [tmp_path / "nats.pid"] and s.access_nats_server_name == "aios"
    assert AccessSettings(access_nats_pid=tmp_path / "x.pid").access_nats_pid == [tmp_path / "x.pid"]
