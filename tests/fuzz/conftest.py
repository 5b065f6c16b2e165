"""One real kernel for the fuzz tests (every service: scheduler, llm on the simulator, memory, storage
on weed mini, tools, access, recorder), the agent's and the operator's raw NATS connections, and the
checks run after fuzzing: every service still answers its health, nothing was written, nothing is
stuck in the syscall stream, the result store holds no success."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import (
    FilesInspect,
    FilesInspectReply,
    FilesList,
    Health,
    HealthQuery,
    MemoryInspect,
    MemoryInspectReply,
    MemoryList,
    SyscallResult,
    ToolsListReply,
    decode_reply,
    encode,
)
from aios_schemas.tools import ToolsInspect
from aios_services.access import main as access_main
from aios_services.access.settings import AccessSettings
from aios_services.recorder import main as recorder_main
from aios_services.recorder.settings import RecorderSettings
from aios_services.runtime import Bus, ServiceSettings
from aios_services.runtime.service import HealthDetails, Starter
from aios_services.scheduler.outcomes import StoredResult
from aios_services.scheduler.streams import DURABLE
from aios_services.sim.runner import run_sim
from tests.conftest import S3
from tests.integration.files_kernel import storage_service
from tests.integration.memory_kernel import memory_service
from tests.integration.tools_kernel import tools_service
from tests.kernel import ExtraService, Kernel, running_kernel
from tests.servers import auth_for

AGENT = "agent-1"
OTHER = "agent-2"  # named in bodies sent by AGENT: refused, and nothing of it may exist afterwards
MODEL = "sim-llama-8b"
SERVICES = ("scheduler", "llm", "memory", "storage", "tools", "access", "recorder")
# The one tool, so that `tools.call` reaches argument validation (n: a non-negative integer).
ECHO = {
    "function": "tests.tool_funcs:echo",
    "input_schema": {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0}},
        "required": ["n"],
    },
}
# Syscall kinds that change nothing: a fuzzed call of these may be valid (and run, deeper validation
# included); one of any other kind is always made invalid, and must be refused.
READ_ONLY = frozenset(
    {
        "memory.get",
        "memory.list",
        "memory.search",
        "files.read",
        "files.stat",
        "files.list",
        "files.versions",
        "files.shares",
        "files.search",
        "tools.list",
    }
)
# Every payload is answered within this (seconds): the PubAck, the reply, or the result.
ANSWER_BOUND_S = 10.0

# Payloads tried, by test, printed at the end of the run (each test asserts its own share).
TRIED: Counter[str] = Counter()
# The tools each fuzz kernel had when it started, by namespace (fuzzing registers none).
TOOLS_AT_START: dict[str, set[str]] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TRIED:
        lines = ", ".join(f"{name} {n}" for name, n in sorted(TRIED.items()))
        terminalreporter.write_line(f"fuzz: {sum(TRIED.values())} payloads tried ({lines})")


def access_service(db: Path) -> ExtraService:
    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        s = AccessSettings(**common, access_db=db)  # type: ignore[arg-type]
        return s, lambda bus, st: access_main.start(bus, st, s)

    return make


def recorder_service(db: Path) -> ExtraService:
    """The recorder, once the scheduler made the events stream it reads (`aios up` starts it after)."""

    def make(common: Mapping[str, str]) -> tuple[ServiceSettings, Starter]:
        s = RecorderSettings(**common, recorder_db=db)  # type: ignore[arg-type]

        async def start(bus: Bus, stack: AsyncExitStack) -> HealthDetails:
            deadline = time.monotonic() + ANSWER_BOUND_S
            while True:
                try:
                    await bus.js.stream_info(bus.ns.events_stream)
                    break
                except nats.js.errors.NotFoundError:
                    assert time.monotonic() < deadline, "the scheduler made no events stream"
                    await asyncio.sleep(0.05)
            return await recorder_main.start(bus, stack, s)

        return s, start

    return make


@pytest.fixture(scope="package")
async def fuzz_kernel(
    nats_url: str, s3_srv: S3, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Kernel]:
    root = tmp_path_factory.mktemp("fuzz")
    extra = {
        "memory": memory_service(root / "memory.duckdb", None, "t-fuzz-memory"),
        "storage": storage_service(s3_srv, root / "storage.duckdb", f"t-fuzz-{root.name[-8:].lower()}"),
        "tools": tools_service(tool={"echo": ECHO}),
        "access": access_service(root / "access.duckdb"),
        "recorder": recorder_service(root / "traces.duckdb"),
    }
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.5) as sim:
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 4}]}
        async with running_kernel(nats_url, root, models, extra=extra) as k:
            nc = await nats.connect(k.nats_url, allow_reconnect=False)
            TOOLS_AT_START[k.ns.name] = await tool_names(nc, k)
            await nc.close()
            assert "echo" in TOOLS_AT_START[k.ns.name]
            yield k


@pytest.fixture(scope="package")
async def admin(fuzz_kernel: Kernel) -> AsyncIterator[NATS]:
    """The operator's connection (kernel credentials)."""
    nc = await nats.connect(fuzz_kernel.nats_url, allow_reconnect=False)
    yield nc
    await nc.close()


@dataclass
class AgentLink:
    """agent-1's own NATS connection (its token; NATS confines it to its subjects) and every result
    it heard, by syscall id."""

    nc: NATS
    results: dict[str, list[SyscallResult | bytes]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[Exception] = field(default_factory=list)

    async def on_result(self, msg: Msg) -> None:
        sid = msg.subject.rsplit(".", 1)[-1]
        try:
            res: SyscallResult | bytes = SyscallResult.model_validate_json(msg.data)
        except ValueError:
            res = msg.data  # untyped: the test fails on it
        self.results.setdefault(sid, []).append(res)
        self.arrived.set()

    async def result(self, sid: str, timeout: float = ANSWER_BOUND_S) -> SyscallResult | bytes | None:
        """The first result heard for `sid`, waiting up to `timeout` (None: none came)."""
        deadline = time.monotonic() + timeout
        while not self.results.get(sid):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.arrived.clear()
            if self.results.get(sid):
                break
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return None
        return self.results[sid][0]


@pytest.fixture(scope="package")
async def agent(fuzz_kernel: Kernel, nats_srv: object) -> AsyncIterator[AgentLink]:
    link: AgentLink | None = None

    async def on_error(exc: Exception) -> None:
        if link is not None:
            link.errors.append(exc)

    url = fuzz_kernel.nats_url.split("@", 1)[-1]
    nc = await nats.connect(
        f"nats://{url.removeprefix('nats://')}",
        user=AGENT,
        password=auth_for(fuzz_kernel.nats_url).token(AGENT),
        inbox_prefix=f"_INBOX.{AGENT}",
        allow_reconnect=False,
        error_cb=on_error,
    )
    link = AgentLink(nc)
    await nc.subscribe(fuzz_kernel.ns.result(AGENT, "*"), cb=link.on_result)
    await nc.flush()
    yield link
    await nc.close()


async def tool_names(admin: NATS, k: Kernel) -> set[str]:
    msg = await admin.request(k.ns.ctl("tools", "inspect"), encode(ToolsInspect()), timeout=ANSWER_BOUND_S)
    return {e.name for e in decode_reply(msg.data, msg.headers, ToolsListReply).entries}


async def health(admin: NATS, k: Kernel, service: str) -> Health:
    msg = await admin.request(k.ns.ctl(service, "health"), encode(HealthQuery()), timeout=ANSWER_BOUND_S)
    return decode_reply(msg.data, msg.headers, Health)


async def assert_kernel_intact(admin: NATS, k: Kernel) -> None:
    """After fuzzing: every service answers its health; nothing was written for either agent; the
    syscall stream holds nothing and its consumer nothing unacknowledged; every stored result is an
    error (no fuzz payload succeeded in changing anything)."""
    for service in SERVICES:
        assert (await health(admin, k, service)).status == "ok", service
    for who in (AGENT, OTHER):
        msg = await admin.request(
            k.ns.ctl("memory", "inspect"),
            encode(MemoryInspect(agent=who, payload=MemoryList())),
            timeout=ANSWER_BOUND_S,
        )
        memories = decode_reply(msg.data, msg.headers, MemoryInspectReply).result
        assert memories.kind == "memory.list" and not memories.records, memories
        msg = await admin.request(
            k.ns.ctl("storage", "inspect"),
            encode(FilesInspect(agent=who, payload=FilesList(include_deleted=True))),
            timeout=ANSWER_BOUND_S,
        )
        files = decode_reply(msg.data, msg.headers, FilesInspectReply).result
        assert files.kind == "files.list" and not files.entries, files
    assert await tool_names(admin, k) == TOOLS_AT_START[k.ns.name]  # none registered by a fuzzed call

    js = admin.jetstream()
    deadline = time.monotonic() + ANSWER_BOUND_S
    while True:  # the last answers went out just before their messages were settled
        info = await js.consumer_info(k.ns.syscalls_stream, DURABLE)
        stream = await js.stream_info(k.ns.syscalls_stream)
        if info.num_ack_pending == 0 and info.num_pending == 0 and stream.state.messages == 0:
            break
        assert time.monotonic() < deadline, (info, stream.state)
        await asyncio.sleep(0.05)
    kv = await js.key_value(k.ns.results_bucket)
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        keys = []
    for key in keys:
        entry = await kv.get(key)
        assert entry.value is not None
        stored = StoredResult.model_validate_json(entry.value)
        ok = stored.result.result
        assert stored.result.status == "error" or (ok is not None and ok.kind in READ_ONLY), stored
