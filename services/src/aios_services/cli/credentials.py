"""The secrets of a deployment of your own (infra/compose.yaml, infra/PROCESSES.md): the NATS users
and their permissions for every node's config, and each process's environment file with its own
credentials in it.

`python -m aios_services.cli.credentials --out infra/secrets [--agent NAME ...]` writes (0600):
- `auth.conf`: the `authorization` block every nats-server node includes: one user per kernel service
  (`svc-<name>`, only its own subjects: runtime/natsauth.py), the operator (the whole bus) and each
  agent given (its token is its password); passwords only as bcrypt hashes;
- `<service>.env`: the service's `AIOS_NATS_URL` (every node, with its user and password) and, where
  it uses them, the object store's keys and the console's token (compose `env_file`, systemd
  `EnvironmentFile`);
- `minio.env`: the object store's root user and password (the same keys);
- `operator.url`: the operator's bus URL (`AIOS_URL=$(cat operator.url) aios ...`);
- `agents/<name>.token`: each agent's token (`AIOS_AGENT=<name> AIOS_TOKEN=...`).

Run it again to rotate every secret (then restart every process and reload every node). Agents the
access service adds at run time need it to rewrite the nodes' users file and signal each node, which
a deployment across machines or containers does not allow: add agents here instead.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from ..runtime.natsauth import Identity, new_password, render_users, user_entries, with_credentials
from .config_reference import env_names, settings_models
from .supervisor import SERVICES

DEFAULT_NATS_URL = "tls://nats-1:4222,tls://nats-2:4222,tls://nats-3:4222"
# Services that use the object store (the keys are the store's root credentials in compose).
S3_USERS = ("memory", "storage", "recorder")


def _private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    path.chmod(0o600)


def generate(out: Path, *, nats_url: str, namespace: str, agents: list[str]) -> dict[str, dict[str, str]]:
    """Write every secret file into `out`; returns each service's variables (for checks)."""
    services = {n: Identity(f"svc-{n}", new_password(), "service", namespace) for n, _ in SERVICES}
    operator = Identity("operator", new_password(), "operator")
    agent_ids = [Identity(a, secrets.token_urlsafe(32), "agent") for a in agents]
    # No server_name: each node's own config names it (the nodes of a cluster include this file).
    _private(out / "auth.conf", render_users(user_entries([*services.values(), operator, *agent_ids]), ""))
    access_key, secret_key = "aios" + secrets.token_hex(6), secrets.token_urlsafe(24)
    console_token = secrets.token_urlsafe(24)
    models = settings_models()
    envs: dict[str, dict[str, str]] = {}
    for name, ident in services.items():
        env = {"AIOS_NATS_URL": with_credentials(nats_url, ident.user, ident.password)}
        if name in S3_USERS:
            env |= {"AIOS_S3_ACCESS_KEY": access_key, "AIOS_S3_SECRET_KEY": secret_key}
        if name == "gateway":
            env["AIOS_GATEWAY_CONSOLE_TOKEN"] = console_token
        unknown = set(env) - env_names(models[name])
        if unknown:  # a settings model renamed a field: fail here, not at the service's start
            raise RuntimeError(f"{name}: no setting {sorted(unknown)}")
        envs[name] = env
        _private(out / f"{name}.env", "".join(f"{k}={v}\n" for k, v in env.items()))
    _private(out / "minio.env", f"MINIO_ROOT_USER={access_key}\nMINIO_ROOT_PASSWORD={secret_key}\n")
    _private(out / "operator.url", with_credentials(nats_url, operator.user, operator.password) + "\n")
    for a in agent_ids:
        _private(out / "agents" / f"{a.user}.token", a.password + "\n")
    return envs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("infra/secrets"), help="folder to write (created)")
    ap.add_argument(
        "--nats-url", default=DEFAULT_NATS_URL, help="every node's client URL, comma-separated (tls://...)"
    )
    ap.add_argument("--namespace", default="", help="the deployment's AIOS_NAMESPACE")
    ap.add_argument("--agent", action="append", default=[], help="an agent to create (repeatable)")
    args = ap.parse_args(argv)
    generate(args.out, nats_url=args.nats_url, namespace=args.namespace, agents=args.agent)
    print(f"wrote {args.out}/: auth.conf, <service>.env, minio.env, operator.url, agents/")


if __name__ == "__main__":
    main()
