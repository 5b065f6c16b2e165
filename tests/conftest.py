"""Session fixtures: a real nats-server with JetStream and a real weed mini (S3), on free loopback
ports; per-test uuid namespaces so tests never see each other's streams, buckets or subjects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import nats
import pytest
from nats.aio.client import Client as NATS

from aios_schemas import Namespace
from tests.servers import AUTH, BusAuth, Server, nats_server, running, s3_server

S3_ACCESS, S3_SECRET = "aiostest", "aiostest-secret-key"


@pytest.fixture(scope="session")
def bus_auth(tmp_path_factory: pytest.TempPathFactory) -> BusAuth:
    return BusAuth(tmp_path_factory.mktemp("nats-auth") / "nats.conf")


@pytest.fixture(scope="session")
def nats_srv(tmp_path_factory: pytest.TempPathFactory, bus_auth: BusAuth) -> Iterator[Server]:
    """nats-server with the users and permissions `aios up` would give (agents confined)."""
    root = tmp_path_factory.mktemp("nats")
    with running(nats_server(root, auth=bus_auth), root / "nats.log") as srv:
        AUTH[bus_auth.admin_url(srv.address)] = bus_auth
        yield srv


@pytest.fixture(scope="session")
def nats_url(nats_srv: Server, bus_auth: BusAuth) -> str:
    """The bus as the kernel sees it (admin credentials in the URL)."""
    return bus_auth.admin_url(nats_srv.address)


@dataclass(frozen=True)
class S3:
    endpoint: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def s3_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    root = tmp_path_factory.mktemp("s3")
    with running(s3_server(root, S3_ACCESS, S3_SECRET), root / "s3.log") as srv:
        yield S3(srv.address, S3_ACCESS, S3_SECRET)


@pytest.fixture
def duckdb_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / f"{uuid.uuid4().hex}.duckdb"
    duckdb.connect(str(path)).close()
    yield path


@pytest.fixture
def ns() -> Namespace:
    return Namespace("t" + uuid.uuid4().hex[:12])


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    yield client
    await client.drain()
