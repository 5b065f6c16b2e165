"""The SDK's edges fail fast and typed, on real servers: no stack, a broken home, a stream left early,
a payload over the bus limit, bad arguments."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from aios_schemas import CONNECTION_FILE, SyscallEvent, new_id
from aios_sdk import AIOS, BackendUnavailable, Conflict, InvalidRequest
from aios_services.cli.procs import free_port
from aios_services.sim.runner import SimServer, run_sim
from tests.kernel import Kernel, running_kernel
from tests.servers import auth_for

MODEL = "sim-llama-8b"
# A generation that takes ~50 s on the simulator (decode_ms=10): far longer than any wait below.
LONG = [{"role": "user", "content": "a very long answer [sim:tokens=5000]"}]
SHORT = [{"role": "user", "content": "a short answer [sim:tokens=5]"}]


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition under a deadline (for state that publishes no event, like sim stats)."""

    async def loop() -> None:
        while not pred():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    await asyncio.wait_for(loop(), timeout)


@pytest.fixture
def no_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A process run from a folder with no `.aios` and no AIOS_* variables."""
    for var in ("AIOS_HOME", "AIOS_URL", "AIOS_TOKEN", "AIOS_AGENT", "AIOS_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- connecting ------------------------------------------------------------------------------------


async def test_connect_with_nothing_listening_is_backend_unavailable_quietly(
    no_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailable) as info:
        # The guard is far above connect_timeout: it only turns the old retry-forever into a failure.
        async with asyncio.timeout(30), AIOS.connect(url=url, token="t", connect_timeout=1.0):
            pytest.fail("connected to nothing")
    msg = info.value.message
    assert url in msg and "the url= argument" in msg  # what it tried, and where that came from
    assert "aios up" in msg and "AIOS_HOME" in msg  # no home here: how to get one
    assert info.value.details["url"] == url
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_connect_with_the_homes_stack_down_names_the_home(
    no_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = no_home / "stack"
    home.mkdir()
    url = f"nats://127.0.0.1:{free_port()}"
    (home / CONNECTION_FILE).write_text(json.dumps({"nats_url": url, "token": "t"}))
    with pytest.raises(BackendUnavailable) as info:
        async with asyncio.timeout(30), AIOS.connect(home=home, connect_timeout=1.0):
            pytest.fail("connected to nothing")
    msg = info.value.message
    assert url in msg and str(home / CONNECTION_FILE) in msg
    assert f"aios up --home {home}" in msg
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def test_connect_from_a_folder_without_a_home_says_to_set_aios_home(no_home: Path) -> None:
    with pytest.raises(BackendUnavailable) as info:
        async with AIOS.connect():
            pytest.fail("connected to nothing")
    assert str(no_home / ".aios" / CONNECTION_FILE) in info.value.message
    assert "AIOS_HOME" in info.value.message and "aios up" in info.value.message


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "Invalid JSON"),
        (json.dumps({"token": "t"}), "nats_url"),
        (json.dumps({"nats_url": "nats://127.0.0.1:4222", "token": 7}), "token"),
    ],
    ids=["corrupt", "missing-field", "wrong-type"],
)
async def test_a_broken_connection_file_is_invalid_request_naming_the_file(
    no_home: Path, content: str, named: str
) -> None:
    home = no_home / "stack"
    home.mkdir()
    (home / CONNECTION_FILE).write_text(content)
    with pytest.raises(InvalidRequest) as info:
        async with AIOS.connect(home=home):
            pytest.fail("connected with a broken connection file")
    assert str(home / CONNECTION_FILE) in info.value.message and named in info.value.message
    assert info.value.details["path"] == str(home / CONNECTION_FILE)


async def test_reconnects_stay_unlimited_after_the_first_connect(nats_url: str) -> None:
    token = auth_for(nats_url).token("local")
    async with AIOS.connect(url=nats_url, token=token, connect_timeout=1.0) as aios:
        # The time limit is for the first connect only: an outage later is ridden out.
        assert aios._nc.options["max_reconnect_attempts"] == -1


# -- streams left early ----------------------------------------------------------------------------


class Events:
    def __init__(self) -> None:
        self.items: list[SyscallEvent] = []

    async def on_msg(self, msg: Msg) -> None:
        self.items.append(SyscallEvent.model_validate_json(msg.data))

    def states(self, sid: str) -> list[str]:
        return [e.state for e in self.items if e.id == sid]


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with run_sim("fixed", models=(MODEL,), decode_ms=10.0) as s:
        yield s


@pytest.fixture
async def one_slot(nats_url: str, tmp_path: Path, sim: SimServer) -> AsyncIterator[Kernel]:
    models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 1}]}
    async with running_kernel(nats_url, tmp_path, models, policy="fifo") as k:
        yield k


@pytest.fixture
async def events(one_slot: Kernel, nc: NATS) -> Events:
    ev = Events()
    await nc.subscribe(one_slot.ns.event("*"), cb=ev.on_msg)
    await nc.flush()
    return ev


class LeftTheBlock(Exception):
    pass


async def read_then_leave(aios: AIOS, how: str, ids: list[str]) -> None:
    async with aios.llm.stream(MODEL, LONG) as stream:
        ids.append(stream.id)
        if how == "raise-at-once":  # before the kernel may even have the syscall
            raise LeftTheBlock
        async for _ in stream:
            if how == "break":
                break
            raise LeftTheBlock


@pytest.mark.parametrize("how", ["break", "raise", "raise-at-once"])
async def test_leaving_a_stream_early_cancels_it_and_frees_the_slot(
    one_slot: Kernel, sim: SimServer, events: Events, how: str
) -> None:
    ids: list[str] = []
    async with one_slot.connect() as aios:
        if how == "break":
            await read_then_leave(aios, how, ids)
        else:
            with pytest.raises(LeftTheBlock):
                await read_then_leave(aios, how, ids)
        (sid,) = ids
        await until(lambda: "cancelled" in events.states(sid))
        await until(lambda: sim.stats()["running"] == 0)  # the backend stopped generating too
        # The only slot is free: a new call is answered well before the first one would have ended
        # (its deadline is a fifth of the long generation's time).
        reply = await aios.llm.chat(MODEL, SHORT, timeout=10)
        assert reply.content
    assert "done" not in events.states(sid)


async def test_a_chat_whose_caller_gives_up_is_cancelled_and_frees_the_slot(
    one_slot: Kernel, sim: SimServer, events: Events
) -> None:
    async with one_slot.connect() as aios:
        sid = "abandoned-0001"
        with pytest.raises(TimeoutError):  # the caller's own timeout, not the syscall's deadline
            await asyncio.wait_for(aios.llm.chat(MODEL, LONG, id=sid), 1.0)
        await until(lambda: "cancelled" in events.states(sid))
        await until(lambda: sim.stats()["running"] == 0)
        assert (await aios.llm.chat(MODEL, SHORT, timeout=10)).content


async def test_a_stream_read_to_the_end_sends_no_cancel(one_slot: Kernel, nc: NATS) -> None:
    seen: list[str] = []

    async def on_ctl(msg: Msg) -> None:
        seen.append(msg.subject.rsplit(".", 2)[-2])  # ctl.scheduler.<op>.<agent>

    await nc.subscribe(one_slot.ns.ctl_for("scheduler", "*", "*"), cb=on_ctl)
    await nc.flush()
    async with one_slot.connect() as aios:
        async with aios.llm.stream(MODEL, SHORT) as stream:
            deltas = [d async for d in stream]
        assert stream.reply is not None and "".join(deltas) == stream.reply.content
        # A later control request from the same connection: once it is seen, a cancel sent on leaving
        # the stream would have been seen before it (NATS keeps one connection's messages in order).
        assert await aios.result(stream.id) is not None
        await until(lambda: "result" in seen)
    assert "cancel" not in seen, seen


# -- typed errors for bad input ----------------------------------------------------------------


@pytest.fixture
async def aios(nats_url: str) -> AsyncIterator[AIOS]:
    """A connection to the bus (no kernel is needed: these calls must fail before reaching it)."""
    token = auth_for(nats_url).token("local")
    async with AIOS.connect(url=nats_url, token=token, namespace="t" + uuid.uuid4().hex[:12]) as client:
        yield client


async def test_a_payload_over_the_bus_limit_is_invalid_request(aios: AIOS) -> None:
    big = [{"role": "user", "content": "x" * (2 * 1024 * 1024)}]
    with pytest.raises(InvalidRequest) as info:
        await aios.llm.chat(MODEL, big, timeout=5)
    limit = aios._nc.max_payload
    assert f"{limit} bytes" in info.value.message and info.value.details["limit"] == limit
    assert int(str(info.value.details["size"])) > 2 * 1024 * 1024
    with pytest.raises(InvalidRequest):
        async with aios.llm.stream(MODEL, big):
            pytest.fail("a stream over the limit was opened")
    with pytest.raises(InvalidRequest):
        await aios.llm.embed("sim-embed", ["x" * (2 * 1024 * 1024)])
    assert aios._nc.is_connected  # refused before the server could drop the connection for it


BAD_ARGS: list[tuple[str, dict[str, Any]]] = [
    ("priority", {"priority": 5000}),
    ("priority", {"priority": "high"}),
    ("id", {"id": "not an id!"}),
    ("session", {"session": "spaces are not allowed"}),
    ("timeout", {"timeout": -1}),
    ("timeout", {"timeout": float("nan")}),
    ("timeout", {"timeout": "soon"}),
]


@pytest.mark.parametrize(
    ("field", "kwargs"), BAD_ARGS, ids=[f"{f}={v}" for f, kw in BAD_ARGS for v in kw.values()]
)
@pytest.mark.parametrize("call", ["chat", "embed", "stream"])
async def test_bad_call_arguments_are_invalid_request_naming_the_field(
    aios: AIOS, call: str, field: str, kwargs: dict[str, Any]
) -> None:
    if call == "embed" and field == "id":
        pytest.skip("embed takes no id")
    with pytest.raises(InvalidRequest) as info:
        if call == "chat":
            await aios.llm.chat(MODEL, SHORT, **kwargs)
        elif call == "embed":
            await aios.llm.embed("sim-embed", ["x"], **kwargs)
        else:
            async with aios.llm.stream(MODEL, SHORT, **kwargs):
                pytest.fail("a stream with a bad argument was opened")
    assert field in info.value.message


async def test_cancel_and_result_with_a_bad_id_are_invalid_request(aios: AIOS) -> None:
    with pytest.raises(InvalidRequest, match="id"):
        await aios.cancel("not an id!")
    with pytest.raises(InvalidRequest, match="id"):
        await aios.result("not an id!")


async def test_an_id_another_agent_used_is_a_conflict_at_once(kernel: Kernel) -> None:
    # JetStream drops the second publish as a duplicate (its window); the SDK must not wait for a
    # result that will never come: the scheduler says the id is taken, and the caller hears Conflict.
    async with kernel.connect() as alice, kernel.connect(agent="agent-2") as mallory:
        sid, ask = new_id(), [{"role": "user", "content": "mine"}]
        await alice.llm.chat(MODEL, ask, max_tokens=5, id=sid)
        with pytest.raises(Conflict):  # (waiting for the deadline would raise DeadlineExceeded)
            await mallory.llm.chat(MODEL, ask, max_tokens=5, id=sid, timeout=30)
