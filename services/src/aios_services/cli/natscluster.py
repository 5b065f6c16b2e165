"""The NATS cluster of `aios up --cluster N`: each node's nats-server config (its name, ports,
JetStream store, and routes to the other nodes with their own credentials) and its process.

Choices:
- every port is on loopback (clients, routes, monitoring), one free port each;
- routes authenticate (`cluster.authorization`, a user and a random password per start, in the
  private node configs only): a route connection is trusted as a server (it may publish anything,
  past every user's permissions), so a local process must not be able to open one;
- `no_advertise`: the nodes do not gossip their client URLs; every client gets every node's URL
  (comma-separated, with its own credentials in each), so failover needs no discovered server, which
  would carry no credentials;
- the users and permissions are one file (`nats.conf`, natsauth.py) that every node includes, so the
  access service rewrites that file and reloads every node (SIGHUP) as it does a single server.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ..runtime.natsauth import NATS_SERVER_NAME
from .home import Home, write_private
from .procs import Spec, free_port, http_probe, venv_bin

ROUTE_USER = "route"
MAX_REPLICAS = 3  # JetStream's usual replication: a stream keeps its quorum with one node down


@dataclass(frozen=True)
class Node:
    index: int  # 1..N
    port: int  # clients
    route_port: int  # the other nodes
    monitor: int  # HTTP: /healthz

    @property
    def name(self) -> str:
        """Its JetStream `server_name` (unique in the cluster; the cluster is `NATS_SERVER_NAME`)."""
        return f"{NATS_SERVER_NAME}-{self.index}"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    route_password: str

    @classmethod
    def allocate(cls, size: int, first_port: int | None = None) -> Cluster:
        """`size` nodes on free loopback ports (the first node's client port may be given)."""
        if size < 2:
            raise ValueError(f"a cluster has at least 2 nodes, not {size}")
        nodes = tuple(
            Node(i, (first_port if i == 1 and first_port else free_port()), free_port(), free_port())
            for i in range(1, size + 1)
        )
        return cls(nodes, secrets.token_urlsafe(24))

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what clients get)."""
        return ",".join(n.url for n in self.nodes)

    @property
    def replicas(self) -> int:
        """Of every stream and KV bucket."""
        return min(len(self.nodes), MAX_REPLICAS)

    def route_url(self, node: Node) -> str:
        return f"nats-route://{ROUTE_USER}:{self.route_password}@127.0.0.1:{node.route_port}"

    def config(self, node: Node, store_dir: Path, users_file: Path) -> str:
        """Node `node`'s nats-server config: it includes `users_file` (the users and permissions)."""
        routes = [self.route_url(n) for n in self.nodes if n is not node]
        q = json.dumps  # a quoted string, valid in nats-server's config syntax
        return (
            f"# node {node.index} of {len(self.nodes)}, written by `aios up --cluster` at each start\n"
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.port}\n"
            f"http: 127.0.0.1:{node.monitor}\n"
            f"jetstream {{\n  store_dir: {q(str(store_dir))}\n}}\n"
            "cluster {\n"
            f"  name: {NATS_SERVER_NAME}\n"
            f"  listen: 127.0.0.1:{node.route_port}\n"
            "  no_advertise: true\n"
            f"  authorization {{\n    user: {ROUTE_USER}\n    password: {q(self.route_password)}\n  }}\n"
            f"  routes: {json.dumps(routes)}\n"
            "}\n"
            f"include {q(users_file.name)}\n"  # relative to this file: the home's users file
        )


def node_specs(home: Home, cluster: Cluster) -> list[Spec]:
    """The nodes' processes, named `nats-1`..`nats-N`, their configs written (private: the route
    password). A node is ready when its JetStream is on; the last one when the cluster has elected
    its JetStream meta leader (full /healthz), so the services that follow can create streams."""
    specs = []
    for node in cluster.nodes:
        store = home.nats_dir / f"node-{node.index}"
        store.mkdir(parents=True, exist_ok=True)
        config = home.nats_node_config(node.index)
        write_private(config, cluster.config(node, store, home.nats_config))
        last = node is cluster.nodes[-1]
        health = f"http://127.0.0.1:{node.monitor}/healthz" + ("" if last else "?js-enabled-only=true")
        specs.append(
            Spec(
                name=f"nats-{node.index}",
                kind="server",
                argv=[venv_bin("nats-server"), "-c", str(config), "-P", str(home.nats_node_pid(node.index))],
                ready=http_probe(health),
                address=node.url,
            )
        )
    return specs
