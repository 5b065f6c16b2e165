"""Fuzzing the syscall subjects: agent-1 publishes, on its own `sys.agent-1.<kind>` over plain NATS,
bodies drawn from every syscall kind's JSON Schema and then broken (wrong types, missing and extra
fields, huge strings, deep nesting, odd numbers and characters, invalid UTF-8, no JSON at all, another
agent's name, a past deadline, the wrong kind in the subject), with odd `Nats-Msg-Id` and
`traceparent` headers. Each is accepted by JetStream (or refused by the client, too large) and, when
it carries an id to answer under, answered once with a typed error; the kernel stays up and unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import typing
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import nats
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ValidationError

from aios_schemas import ERROR_CODES, AnyPayload, Syscall, SyscallResult, new_id
from aios_schemas.envelope import ID_PATTERN
from tests.fuzz.conftest import (
    AGENT,
    ANSWER_BOUND_S,
    OTHER,
    READ_ONLY,
    TRIED,
    AgentLink,
    assert_kernel_intact,
)
from tests.fuzz.strategies import (
    FRESH_ID,
    corrupt,
    dumps,
    model_values,
    mutate,
    odd_strings,
    raw_bodies,
    shown,
)
from tests.kernel import Kernel

pytestmark = pytest.mark.fuzz

EXAMPLES = 800
KINDS: dict[str, type[BaseModel]] = {m.model_fields["kind"].default: m for m in typing.get_args(AnyPayload)}
_ID = re.compile(ID_PATTERN)
FAR = 4_000_000_000.0  # a deadline in 2096: valid whenever the test runs (drawn values stay deterministic)

HeaderId = Literal["same", "absent", "other", "invalid", "huge"]


@dataclass(frozen=True)
class SysProbe:
    kind: str  # the subject's kind token(s)
    body: bytes  # FRESH_ID in it becomes the probe's id
    header_id: HeaderId
    traceparent: str | None

    def __repr__(self) -> str:
        return f"SysProbe({self.kind}, {shown(self.body)}, {self.header_id} id, {self.traceparent!r})"


def payloads(kind: str) -> st.SearchStrategy[dict[str, object]]:
    """A near-valid payload of `kind`, tagged (the tag has a default, so the schema does not require
    it; the union needs it)."""
    return model_values(KINDS[kind]).map(lambda p: {**p, "kind": kind})


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A syscall body: near-valid, then broken in the payload, the envelope or both."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    doc: dict[str, object] = {"id": FRESH_ID, "agent": AGENT, "payload": draw(payloads(kind))}
    if draw(st.booleans()):
        doc["deadline"] = FAR
    if draw(st.booleans()):
        doc["session"] = draw(st.from_regex(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,12}$", fullmatch=True))
    if draw(st.booleans()):
        doc["priority"] = draw(st.integers(-1000, 1000))
    how = draw(st.sampled_from(["mutate", "mutate", "mutate", "other agent", "past deadline", "none"]))
    if how == "mutate":
        doc = draw(mutate(doc))
    elif how == "other agent":
        doc["agent"] = OTHER
    elif how == "past deadline":
        doc["deadline"] = draw(st.sampled_from([1.0, 1_000_000_000.0, 1e-9]))
    body = dumps(doc)
    if draw(st.integers(0, 9)) == 0:
        body = draw(corrupt(body))
    return body


@st.composite
def deep_calls(draw: st.DrawFn) -> bytes:
    """A valid envelope around a call that changes nothing, its strings made odd (paths that climb
    out, NUL, lone surrogates, wildcards, 100 kB): admitted, it tests the service's own checks."""
    kind = draw(st.sampled_from(sorted(READ_ONLY)))
    payload = draw(odd_strings(draw(payloads(kind))))
    return dumps({"id": FRESH_ID, "agent": AGENT, "deadline": FAR, "payload": payload})


def subject_kinds() -> st.SearchStrategy[str]:
    token = st.from_regex(r"^[a-z0-9_-]{1,10}$", fullmatch=True)
    return st.one_of(
        st.sampled_from(sorted(KINDS)),
        st.lists(token, min_size=1, max_size=3).map(".".join),
    )


@st.composite
def probes(draw: st.DrawFn) -> SysProbe:
    body = draw(st.one_of(envelopes(), envelopes(), envelopes(), deep_calls(), deep_calls(), raw_bodies()))
    try:  # mostly, the subject names the payload's kind
        named = json.loads(body)["payload"]["kind"]
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        named = None
    kind = named if isinstance(named, str) and named in KINDS and draw(st.integers(0, 4)) else None
    header_id: HeaderId = draw(
        st.sampled_from(["same", "same", "same", "absent", "other", "invalid", "huge"])
    )
    traceparent = draw(st.none() | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
    return SysProbe(kind or draw(subject_kinds()), body, header_id, traceparent)


def parse(body: bytes) -> Syscall | None:
    """The syscall, if the body is one (what the scheduler's validation decides)."""
    try:
        return Syscall.model_validate_json(body)
    except (ValidationError, ValueError, RecursionError):
        return None


def answer_id(body: bytes, header_id: str | None) -> str | None:
    """The id a refusal is answered under: the body's `id`, else the `Nats-Msg-Id` (None: no way to
    address an answer; JetStream's PubAck was the only one)."""
    try:
        raw = json.loads(body)
        sid = raw.get("id") if isinstance(raw, dict) else None
    except (ValueError, RecursionError):
        sid = None
    for candidate in (sid, header_id):
        if isinstance(candidate, str) and _ID.match(candidate):
            return candidate
    return None


class Tally:
    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()


@dataclass(frozen=True)
class Prepared:
    subject: str
    body: bytes
    headers: dict[str, str]
    call: Syscall | None  # what the body is, if a syscall
    admissible: bool  # a valid call the scheduler would admit (of a kind that changes nothing)
    answer_id: str | None


def prepare(k: Kernel, probe: SysProbe) -> Prepared:
    sid = new_id()
    body = probe.body.replace(FRESH_ID.encode(), sid.encode())
    header_id = {
        "same": sid,
        "absent": None,
        "other": new_id(),
        "invalid": f"not an id! {sid}",  # (unique, or JetStream drops it as a duplicate)
        "huge": sid + "x" * 8_000,
    }[probe.header_id]
    headers = {} if header_id is None else {"Nats-Msg-Id": header_id}
    if probe.traceparent is not None:
        headers["traceparent"] = probe.traceparent
    call = parse(body)
    admissible = (
        call is not None
        and call.agent == AGENT
        and call.kind == probe.kind
        and (call.deadline is None or call.deadline > time.time() + ANSWER_BOUND_S)
    )
    # Only calls that change nothing may go through (and must be answered, ok or not).
    assume(not admissible or (call is not None and call.kind in READ_ONLY))
    return Prepared(k.ns.sys(probe.kind, AGENT), body, headers, call, admissible, answer_id(body, header_id))


async def send(agent: AgentLink, k: Kernel, p: Prepared, tally: Tally) -> None:
    TRIED["syscalls"] += 1
    try:
        ack = await agent.nc.request(p.subject, p.body, headers=p.headers or None, timeout=ANSWER_BOUND_S)
    except nats.errors.MaxPayloadError:
        tally.outcomes["refused by the client (max_payload)"] += 1
        return
    puback = json.loads(ack.data)
    assert puback.get("stream") == k.ns.syscalls_stream and puback.get("seq", 0) > 0, puback
    assert not puback.get("duplicate"), puback
    if p.answer_id is None:
        tally.outcomes["PubAck only (no id to answer under)"] += 1
        return
    res = await agent.result(p.answer_id)
    what = f"{shown(p.body)} on {p.subject}"
    assert res is not None, f"no answer within {ANSWER_BOUND_S}s to {what}"
    assert isinstance(res, SyscallResult), f"an untyped answer {res[:300]!r} to {what}"
    if p.admissible:
        assert res.status == "ok" or (res.error is not None and res.error.code in ERROR_CODES), res
        tally.outcomes[f"admitted: {res.error.code if res.error else 'ok'}"] += 1
        return
    assert res.status == "error" and res.error is not None, f"{what} succeeded: {res}"
    assert res.error.code in ERROR_CODES
    if p.call is None:
        assert res.error.code == "invalid_request", (what, res)
    assert len(res.model_dump_json()) < 20_000, "an error reply stays small whatever the input"
    tally.outcomes[res.error.code] += 1


async def test_every_syscall_subject_answers_garbage_with_a_typed_error(
    fuzz_kernel: Kernel, agent: AgentLink, admin: NATS
) -> None:
    tally = Tally()
    started, before = time.monotonic(), TRIED["syscalls"]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against a live kernel: the payload is shown
        suppress_health_check=list(HealthCheck),
    )
    @given(probe=probes())
    def fuzz(probe: SysProbe) -> None:  # hypothesis drives from a thread; the bus stays on the loop
        p = prepare(fuzz_kernel, probe)
        asyncio.run_coroutine_threadsafe(send(agent, fuzz_kernel, p, tally), loop).result()

    loop = asyncio.get_running_loop()
    await asyncio.to_thread(fuzz)
    tried = TRIED["syscalls"] - before
    print(f"\nsyscalls: {tried} payloads in {time.monotonic() - started:.1f}s: {dict(tally.outcomes)}")
    assert tried >= EXAMPLES
    twice = {sid: len(r) for sid, r in agent.results.items() if len(r) > 1}
    assert not twice, f"answered more than once: {twice}"
    assert not agent.errors, agent.errors
    await assert_kernel_intact(admin, fuzz_kernel)
