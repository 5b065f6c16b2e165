"""The embedded-stack supervisor: starts every process in order, restarts what dies or stays
unhealthy (alive but not doing its job) for longer than a bound, stops cleanly.

It is what `aios up` runs (in the foreground, or detached with --detach). It holds the home's lock
while it runs and owns `state.json`; `aios status` and `aios down` read that file and signal the
supervisor. Every process it starts carries the home in its environment (see stack.py), so `aios
down` finds them even after the supervisor was killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aios_schemas import Connection, Namespace

from ..llm.config import BackendConfig, Capabilities, ModelConfig
from ..runtime.natsauth import (
    NATS_SERVER_NAME,
    Identity,
    NatsUser,
    merged_users,
    new_password,
    render_users,
    user_entries,
    with_credentials,
)
from ..runtime.tokens import new_token
from ..sim.profiles import PROFILES
from .config import ConfigError, StackConfig, llm_toml, load_stack_config
from .home import Home, ProcessInfo, State, StateStatus, write_private
from .natscluster import Cluster, node_specs
from .procs import (
    S3Ports,
    Spec,
    free_port,
    is_nats,
    local_model_path,
    local_model_spec,
    nats_spec,
    python_service_spec,
    s3_spec,
    sim_spec,
)
from .stack import marker_env

SIM_MODEL = "sim-llama-8b"
SIM_EMBED_MODEL = "sim-embed"  # the simulator's embedding model (deterministic vectors)
LOCAL_MODEL = "smollm2-135m"
SERVICES = [
    ("scheduler", "aios_services.scheduler"),
    ("llm", "aios_services.llm"),
    ("memory", "aios_services.memory"),
    ("storage", "aios_services.storage"),
    ("tools", "aios_services.tools"),
    ("gateway", "aios_services.gateway"),
    ("recorder", "aios_services.recorder"),
    ("access", "aios_services.access"),
]

# Every service runs as N replicas under `--replicas N`: the scheduler (slots split between its
# replicas), llm and tools (stateless workers), memory and storage (their data partitioned by agent,
# each partition owned by one replica), the gateway (its replicas share the one HTTP port), the
# recorder and the access service (one DuckDB file each: one replica active, the others standbys).
REPLICATED = ("scheduler", "llm", "memory", "storage", "tools", "gateway", "recorder", "access")
PARTITIONED = {"memory": "memory.duckdb", "storage": "storage.duckdb"}
DEFAULT_PARTITIONS = 8


def partitions_for(root: Path, db_name: str, replicas: int) -> int:
    """The partition count of a partitioned service's data: the one its files were written with,
    else (a new home) 1 for one replica and 8 (or one per replica) for more."""
    base = root / db_name
    counts = {
        int(m.group(1))
        for f in root.glob(f"{base.stem}.p*-of-*{base.suffix}")
        if (m := _COUNT.search(f.name))
    }
    if base.exists():
        counts.add(1)
    if len(counts) == 1:
        return counts.pop()
    return 1 if replicas == 1 else max(DEFAULT_PARTITIONS, replicas)


_COUNT = re.compile(r"\.p\d+-of-(\d+)\.")


@dataclass(frozen=True)
class UpOptions:
    sim: bool = True
    sim_profile: str = "fixed"
    local_model: bool = False
    namespace: str = ""
    nats_port: int | None = None
    cluster: int = 1  # `--cluster N`: N nats-server nodes (JetStream cluster), streams with 3 replicas
    policy: str | None = None  # `--policy`: wins over the config file
    config: Path | None = None  # the operator's aios.toml: read, never written
    replicas: int = 1  # `--replicas N`: processes of each service that scales out (REPLICATED)


def generated_models(sim_url: str | None, local_url: str | None) -> dict[str, ModelConfig]:
    """The models `aios up` serves itself: the simulator's and the local model's."""
    models: dict[str, ModelConfig] = {}
    if sim_url:
        caps = Capabilities(continue_partial=True, priority=True)
        # ahead=1: the simulator batches like vLLM (a request waiting at it joins the next step).
        sim = BackendConfig(name="sim", base_url=sim_url, slots=8, ahead=1, capabilities=caps)
        models[SIM_MODEL] = ModelConfig(backends=[sim])
        embed = BackendConfig(name="sim-embed", base_url=sim_url, slots=8)
        models[SIM_EMBED_MODEL] = ModelConfig(kind="embedding", backends=[embed])
    if local_url:
        models[LOCAL_MODEL] = ModelConfig(
            backends=[BackendConfig(name="llamacpp", base_url=local_url, slots=1)]
        )
    return models


def check_options(opts: UpOptions) -> StackConfig:
    """Validate everything `aios up` would start with, before anything starts; ConfigError if wrong."""
    if opts.sim_profile not in PROFILES:
        raise ConfigError(
            f"--sim-profile: unknown profile {opts.sim_profile!r}; one of {', '.join(PROFILES)}"
        )
    if opts.cluster < 1:
        raise ConfigError(f"--cluster: {opts.cluster} nodes; 1 (one server) or more (a cluster)")
    if opts.local_model:
        try:
            local_model_path()
        except FileNotFoundError as exc:
            raise ConfigError(f"--local-model: {exc}") from exc
    url = "http://127.0.0.1/v1"  # stands for the ports chosen at start
    models = generated_models(url if opts.sim else None, url if opts.local_model else None)
    return load_stack_config(opts.config, models, policy=opts.policy)


@dataclass
class Child:
    spec: Spec
    proc: asyncio.subprocess.Process
    log: IO[bytes]
    restarts: int = 0
    next_restart: float = 0.0
    backoff: float = 0.5
    started_at: float = field(default_factory=time.monotonic)
    unhealthy_since: float | None = None


@dataclass
class Supervisor:
    home: Home
    opts: UpOptions
    children: list[Child] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # A service that answers its health probe with anything but "ok" (or not at all) for this long,
    # while the bus is up, is restarted: alive is not enough (a wedged connection, a dead loop).
    unhealthy_restart_s: float = 30.0
    health_interval_s: float = 2.0

    def _say(self, text: str) -> None:
        print(f"[aios] {text}", flush=True)

    # --- preparation -----------------------------------------------------------------------
    def _local_token(self) -> str:
        """The local agent token: kept across restarts of the same home."""
        if self.home.connection_file.exists():
            with contextlib.suppress(ValueError):
                return Connection.model_validate_json(self.home.connection_file.read_text()).token
        return new_token()

    def _console_token(self) -> str:
        """The operator's token for the web console at the gateway's /ui (`console.token`, private;
        kept across restarts, so a browser's login survives one)."""
        path = self.home.root / "console.token"
        with contextlib.suppress(OSError):
            if token := path.read_text().strip():
                return token
        token = new_password()
        write_private(path, token)
        return token

    def _agent_tokens(self, agents: tuple[str, ...]) -> dict[str, str]:
        """A token per configured agent in `agents/NAME.token`, kept across restarts."""
        d = self.home.agents_dir
        d.mkdir(mode=0o700, exist_ok=True)
        for old in d.glob("*.token"):
            if old.stem not in agents:
                old.unlink()
        tokens = {}
        for agent in agents:
            path = d / f"{agent}.token"
            token = path.read_text().strip() if path.exists() else ""
            if not token:
                token = new_token()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token + "\n")
            tokens[agent] = token
        return tokens

    def plan(self) -> list[Spec]:
        h, o = self.home, self.opts
        for d in (h.root, h.logs):
            d.mkdir(parents=True, exist_ok=True)
        ns = Namespace(o.namespace)
        if o.cluster > 1:  # the users file is shared by every node (natscluster.py), which names itself
            cluster = Cluster.allocate(o.cluster, o.nats_port)
            nats_url, replicas, server_name = cluster.url, cluster.replicas, ""
            nats = node_specs(h, cluster)
            pid_files = [h.nats_node_pid(n.index) for n in cluster.nodes]
        else:
            nats_port = o.nats_port or free_port()
            nats_url, replicas, server_name = f"nats://127.0.0.1:{nats_port}", 1, NATS_SERVER_NAME
            nats = [nats_spec(h, nats_port, free_port(), h.nats_config, h.nats_pid_file)]
            pid_files = [h.nats_pid_file]
        s3_ports = S3Ports.allocate()
        access, secret = "aios" + secrets.token_hex(6), secrets.token_urlsafe(24)
        # Bus identities: each kernel service (only what it owns), the operator's CLI, and each agent
        # with its token as
        # its password, confined by the server to its own subjects (runtime/natsauth.py).
        services = {n: Identity(f"svc-{n}", new_password(), "service", o.namespace) for n, _ in SERVICES}
        operator = Identity("operator", new_password(), "operator")
        operator_url = with_credentials(nats_url, operator.user, operator.password)
        s3 = s3_spec(h, s3_ports, access, secret)
        specs = [*nats, s3]
        sim_url = local_url = None
        if o.sim:
            sim = sim_spec(free_port(), o.sim_profile, [SIM_MODEL])
            sim_url = sim.address
            specs.append(sim)
        if o.local_model:
            local = local_model_spec(free_port(), local_model_path(), LOCAL_MODEL)
            local_url = local.address
            specs.append(local)
        cfg = load_stack_config(o.config, generated_models(sim_url, local_url), policy=o.policy)
        h.llm_config.write_text(llm_toml(cfg.llm))
        token = self._local_token()
        agent_tokens = {"local": token, **self._agent_tokens(cfg.agents)}
        agents = [Identity(a, t, "agent") for a, t in agent_tokens.items()]
        # The static users, and the agents the access service added since (it rewrites the config
        # and has nats-server reload it when they change: access/bususers.py).
        static = user_entries([*services.values(), operator, *agents])
        write_private(h.nats_users_file, json.dumps(static, indent=2))
        users = merged_users(static, read_agents(h.nats_agents_file))
        write_private(h.nats_config, render_users(users, server_name))
        write_private(h.operator_url_file, operator_url)
        # For external tool workers (any language): the tools service's own bus login, which may
        # serve exec.tools.ext.<name> and register tools (runtime/natsauth.py), nothing more.
        tools_svc = services["tools"]
        write_private(
            h.root / "tools-worker.url", with_credentials(nats_url, tools_svc.user, tools_svc.password)
        )
        gateway_port = free_port()
        console_token = self._console_token()
        conn = Connection(
            nats_url=nats_url,
            namespace=o.namespace,
            token=token,
            agent="local",
            s3_endpoint=s3.address,
            gateway_url=f"http://127.0.0.1:{gateway_port}/v1",
        )
        h.connection_file.write_text(conn.model_dump_json(indent=2))
        h.connection_file.chmod(0o600)
        env = {
            "AIOS_NAMESPACE": o.namespace,
            "AIOS_LLM_CONFIG": str(h.llm_config),
            "AIOS_S3_ENDPOINT": s3.address or "",
            "AIOS_STREAM_REPLICAS": str(replicas),
            "AIOS_S3_ACCESS_KEY": access,
            "AIOS_S3_SECRET_KEY": secret,
        }
        own_env = {
            "scheduler": cfg.scheduler_env,
            "llm": cfg.llm_env,
            "memory": {"AIOS_MEMORY_DB": str(h.root / "memory.duckdb")},
            "storage": {"AIOS_STORAGE_DB": str(h.root / "storage.duckdb")},
            "tools": cfg.tools_env,
            "access": {
                "AIOS_ACCESS_DB": str(h.root / "access.duckdb"),
                "AIOS_ACCESS_NATS_CONFIG": str(h.nats_config),
                "AIOS_ACCESS_NATS_USERS": str(h.nats_users_file),
                "AIOS_ACCESS_NATS_AGENTS": str(h.nats_agents_file),
                "AIOS_ACCESS_NATS_PID": ",".join(str(p) for p in pid_files),
                "AIOS_ACCESS_NATS_SERVER_NAME": server_name,
            },
            "gateway": {
                "AIOS_GATEWAY_PORT": str(gateway_port),
                "AIOS_GATEWAY_CONSOLE_TOKEN": console_token,
                "AIOS_GATEWAY_REUSE_PORT": "1" if o.replicas > 1 else "0",
            },
            "recorder": {"AIOS_RECORDER_DB": str(h.root / "traces.duckdb")},
        }
        for n, m in SERVICES:
            svc = services[n]
            own = {"AIOS_NATS_URL": with_credentials(nats_url, svc.user, svc.password), **own_env[n]}
            if n in PARTITIONED:
                own["AIOS_PARTITIONS"] = str(partitions_for(h.root, PARTITIONED[n], o.replicas))
            # Its readiness is probed as the operator (a service's own user may not ask others).
            address = conn.gateway_url if n == "gateway" else None
            for i in range(o.replicas if n in REPLICATED else 1):
                name = n if i == 0 else f"{n}-{i + 1}"
                specs.append(python_service_spec(name, m, {**env, **own}, operator_url, ns, address))
        self.nats_url = nats_url
        self._say(f"config: {cfg.source}; models: {', '.join(cfg.llm.models) or 'none'}")
        if cfg.agents:
            self._say(f"agent tokens: {h.agents_dir}/{{{','.join(cfg.agents)}}}.token")
        return specs

    # --- processes -------------------------------------------------------------------------
    async def spawn(self, spec: Spec) -> asyncio.subprocess.Process:
        # A log file per process, kept open while it runs (closed in _stop); opening is instant.
        log = open(self.home.logs / f"{spec.name}.log", "ab")  # noqa: SIM115, ASYNC230
        proc = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env={**os.environ, **spec.env, **marker_env(self.home, spec.kind, spec.name)},
            cwd=spec.cwd,
            start_new_session=True,  # our signals only: a Ctrl-C on `aios up` goes through us
        )
        child = next((c for c in self.children if c.spec is spec), None)
        if child is None:
            self.children.append(Child(spec, proc, log))
        else:
            child.log.close()
            child.proc, child.log = proc, log
            child.started_at, child.unhealthy_since = time.monotonic(), None
        return proc

    async def _wait_ready(self, spec: Spec, proc: asyncio.subprocess.Process, stop: asyncio.Event) -> bool:
        """True when ready, False if `stop` was set first; RuntimeError if it died or took too long."""
        deadline = time.monotonic() + spec.ready_timeout_s
        while time.monotonic() < deadline:
            if stop.is_set():
                return False
            if proc.returncode is not None:
                raise RuntimeError(
                    f"{spec.name} exited with code {proc.returncode}; see {self.home.logs / spec.name}.log"
                )
            if await spec.ready():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.05)
        raise RuntimeError(f"{spec.name} not ready after {spec.ready_timeout_s:.0f}s")

    def _state(self, status: StateStatus, error: str | None = None) -> State:
        return State(
            supervisor_pid=os.getpid(),
            status=status,
            started=self.started,
            home=str(self.home.root),
            nats_url=getattr(self, "nats_url", ""),
            processes=[
                ProcessInfo(
                    name=c.spec.name,
                    kind=c.spec.kind,
                    pid=c.proc.pid,
                    address=c.spec.address,
                    restarts=c.restarts,
                )
                for c in self.children
            ],
            error=error,
        )

    async def run(self, stop: asyncio.Event) -> int:
        """Start everything, supervise until `stop`, stop everything. Returns an exit code."""
        lock = await asyncio.to_thread(self.home.lock)
        if lock is None:
            self._say(f"another supervisor runs in {self.home.root} (pid {self.home.lock_holder()})")
            return 1
        with lock:
            return await self._run_locked(stop)

    async def _run_locked(self, stop: asyncio.Event) -> int:
        try:
            specs = self.plan()
            self.home.write_state(self._state("starting"))
            for spec in specs:
                if stop.is_set():
                    break
                t0 = time.monotonic()
                proc = await self.spawn(spec)
                if not await self._wait_ready(spec, proc, stop):
                    break
                self._say(f"{spec.name:<12} ready in {time.monotonic() - t0:5.2f}s  {spec.address or ''}")
                self.home.write_state(self._state("starting"))
        except Exception as exc:
            self._say(f"start failed: {exc}")
            self.home.write_state(self._state("failed", str(exc)))
            await self._stop_all()
            return 1
        if stop.is_set():
            self._say("interrupted while starting; stopping what started")
            self.home.write_state(self._state("stopping"))
            await self._stop_all()
            with contextlib.suppress(OSError):
                self.home.state_file.unlink()
            return 130
        self.home.write_state(self._state("ready"))
        self._say(f"AIOS is up. home={self.home.root} nats={self.nats_url}")
        await self.supervise(stop)
        self.home.write_state(self._state("stopping"))
        await self._stop_all()
        with contextlib.suppress(OSError):
            self.home.state_file.unlink()
        self._say("AIOS stopped.")
        return 0

    async def supervise(self, stop: asyncio.Event) -> None:
        """Until `stop`: restart children that exit, and services that stay unhealthy."""
        health = asyncio.create_task(self._watch_health(stop))
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=0.5)
                await self._restart_dead()
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health

    async def _watch_health(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.health_interval_s)
            if not stop.is_set():
                await self._check_health()

    async def _check_health(self) -> None:
        """Probe every running service; one unhealthy for `unhealthy_restart_s` is stopped (then
        restarted like any child that exits). Not while the bus itself is down: no service can be
        healthy then, and restarting them would not help."""
        services = [c for c in self.children if c.spec.kind == "service" and c.proc.returncode is None]
        # The bus is up while one server answers (a cluster's clients fail over to it).
        bus = [c for c in self.children if c.spec.kind == "server" and is_nats(c.spec.name)]
        if not any(await asyncio.gather(*(_probe(c.spec) for c in bus))):
            for c in services:
                c.unhealthy_since = None
            return
        healthy = await asyncio.gather(*(_probe(c.spec) for c in services))
        now = time.monotonic()
        for c, ok in zip(services, healthy, strict=True):
            if ok or now - c.started_at < c.spec.ready_timeout_s:  # healthy, or still starting
                if c.unhealthy_since is not None:
                    self._say(f"{c.spec.name} healthy again")
                c.unhealthy_since = None
            elif c.unhealthy_since is None:
                c.unhealthy_since = now
                self._say(f"{c.spec.name} (pid {c.proc.pid}) is alive but unhealthy")
            elif now - c.unhealthy_since >= self.unhealthy_restart_s:
                took = now - c.unhealthy_since
                self._say(f"{c.spec.name} (pid {c.proc.pid}) unhealthy for {took:.0f}s; restarting it")
                c.unhealthy_since = None
                await _terminate(c.proc, grace_s=5.0)

    async def _restart_dead(self) -> None:
        now = time.monotonic()
        for c in self.children:
            if c.proc.returncode is None or now < c.next_restart:
                continue
            self._say(f"{c.spec.name} exited with code {c.proc.returncode}; restarting")
            if c.spec.cleanup:
                c.spec.cleanup()
            c.restarts += 1
            c.next_restart = now + c.backoff
            c.backoff = min(c.backoff * 2, 10.0)
            await self.spawn(c.spec)
            self.home.write_state(self._state("ready"))

    async def _stop_all(self) -> None:
        # Services first (they drain over the bus), then backends, then the servers they need.
        order = {"service": 0, "backend": 1, "server": 2}
        groups: dict[int, list[Child]] = {}
        for c in self.children:
            groups.setdefault(order[c.spec.kind], []).append(c)
        for _, group in sorted(groups.items()):
            group.sort(key=lambda c: -self.children.index(c))  # s3 before nats
            for c in group:
                await self._stop(c)

    async def _stop(self, c: Child, grace_s: float = 10.0) -> None:
        await _terminate(c.proc, grace_s)
        if c.spec.cleanup:
            c.spec.cleanup()
        c.log.close()


async def _terminate(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `grace_s`."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout=grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _probe(spec: Spec) -> bool:
    try:
        return await asyncio.wait_for(spec.ready(), timeout=5.0)
    except Exception:  # a probe that fails or hangs says "not healthy"
        return False


def run_supervisor(home: Home, opts: UpOptions) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, stop.set)
        return await Supervisor(home, opts).run(stop)

    return asyncio.run(main())


def read_agents(path: Path) -> list[NatsUser]:
    """The agents the access service added (hashed), if it added any."""
    try:
        users = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [u for u in users if isinstance(u, dict)] if isinstance(users, list) else []
