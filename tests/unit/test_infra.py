"""The production deployment in infra/ kept in step with the code (no container engine runs here):
compose.yaml parses; it runs every kernel service, each with a module that exists; every `AIOS_*`
variable it sets (and every one the credentials generator writes) is a setting of that service; the
services that own a DuckDB file run once, on a volume; the NATS nodes' config routes to every node
the services are given; the files it mounts exist; and infra/CONFIG.md is what the settings models
generate."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from aios_services.cli import config_reference
from aios_services.cli.credentials import DEFAULT_NATS_URL, generate
from aios_services.cli.supervisor import SERVICES
from aios_services.llm.config import load_config

INFRA = Path(__file__).parents[2] / "infra"
GENERATED = ("secrets", "certs")  # written by the operator's commands, never committed


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load((INFRA / "compose.yaml").read_text())
    assert isinstance(doc, dict) and isinstance(doc["services"], dict)
    return doc


def kernel_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Compose services that run `python -m aios_services.<x>`."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if svc.get("command", [])[:2] == ["python", "-m"]
    }


def test_every_kernel_service_runs_its_own_module(compose: dict[str, Any]) -> None:
    ours = kernel_services(compose)
    assert {name: svc["command"][2] for name, svc in ours.items()} == dict(SERVICES)
    for name, svc in ours.items():
        assert len(svc["command"]) == 3, name
        assert importlib.util.find_spec(svc["command"][2] + ".__main__") is not None, name


def test_every_variable_is_a_setting_of_its_service(compose: dict[str, Any], tmp_path: Path) -> None:
    models = config_reference.settings_models()
    envs = generate(tmp_path, nats_url=DEFAULT_NATS_URL, namespace="", agents=["alice"])
    for name, svc in kernel_services(compose).items():
        known = config_reference.env_names(models[name])
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        unknown = {k for k in env if k.startswith("AIOS_")} - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which {models[name].__name__} does not have"
        assert env.get("AIOS_STREAM_REPLICAS") == "3", name  # streams survive a node on a 3-node cluster
        # Credentials come from the generated env file, never from the compose file itself.
        assert svc["env_file"] == [f"./secrets/{name}.env"]
        assert (tmp_path / f"{name}.env").is_file()
        assert set(envs[name]) <= known and "AIOS_NATS_URL" in envs[name]
        assert not {"AIOS_NATS_URL", "AIOS_S3_ACCESS_KEY", "AIOS_S3_SECRET_KEY"} & set(env), name
    for name in ("memory", "storage", "recorder"):  # the object store's users have its address
        assert kernel_services(compose)[name]["environment"]["AIOS_S3_ENDPOINT"].startswith("http")
    assert Path(kernel_services(compose)["llm"]["environment"]["AIOS_LLM_CONFIG"]).name == "llm.toml"
    assert (tmp_path / "auth.conf").read_text().startswith("authorization {")  # no server_name
    assert (tmp_path / "agents" / "alice.token").is_file() and (tmp_path / "minio.env").is_file()


def test_every_service_has_replicas_and_duckdb_owners_share_a_volume(compose: dict[str, Any]) -> None:
    models = config_reference.settings_models()
    volumes = set(compose["volumes"])
    for name, svc in kernel_services(compose).items():
        dbs = [f for f in models[name].model_fields if f.endswith("_db")]
        replicas = svc["deploy"]["replicas"]
        if not dbs or "partitions" in models[name].model_fields:  # stateless, or partitioned by agent
            assert str(replicas).startswith("${AIOS_REPLICAS"), name
        else:  # one file that cannot be split: an active replica and a standby
            assert replicas == 2, name
        if "partitions" in models[name].model_fields and dbs:
            assert "AIOS_PARTITIONS" in svc["environment"], name
        for field in dbs:
            path = Path(svc["environment"][config_reference.env_name(models[name], field)])
            mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
            assert mounts.get(str(path.parent)) in volumes, f"{name}: {path.parent} on a named volume"


def test_nats_cluster_routes_every_node_the_services_dial(compose: dict[str, Any]) -> None:
    nodes = sorted(n for n in compose["services"] if re.fullmatch(r"nats-\d+", n))
    assert len(nodes) == 3
    dialled = sorted(urlsplit(u).hostname or "" for u in DEFAULT_NATS_URL.split(","))
    assert dialled == nodes and all(u.startswith("tls://") for u in DEFAULT_NATS_URL.split(","))
    conf = (INFRA / "nats" / "nats.conf").read_text()
    assert sorted(re.findall(r"nats-route://([\w-]+):6222", conf)) == nodes
    assert "include ./auth.conf" in conf and "verify: true" in conf
    for node in nodes:
        svc = compose["services"][node]
        assert svc["environment"] == {"NATS_SERVER_NAME": node}
        assert any(v.endswith(":/data") for v in svc["volumes"])
        assert "./secrets/auth.conf:/etc/nats/auth.conf:ro" in svc["volumes"]
    minio = [n for n in compose["services"] if n.startswith("minio-")]
    assert len(minio) == 4
    assert all("http://minio-{1...4}:9000/data" in compose["services"][n]["command"] for n in minio)


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes", []):
            host = mount.split(":")[0]
            if host.startswith("./") and not host[2:].startswith(GENERATED):
                assert (INFRA / host).exists(), f"{name} mounts {host}, which is not in infra/"
    assert (INFRA / compose["services"]["scheduler"]["build"]["dockerfile"].removeprefix("infra/")).is_file()
    assert load_config(INFRA / "llm.toml").models  # the example catalogue is valid


def test_config_reference_is_current() -> None:
    assert (INFRA / "CONFIG.md").read_text() == config_reference.render(), (
        f"infra/CONFIG.md is stale: run `{config_reference.GENERATOR}`"
    )
    text = config_reference.render()
    for model in config_reference.settings_models().values():
        for field in model.model_fields:
            assert f"`{config_reference.env_name(model, field)}`" in text
