"""Fuzzing the control subjects: the agent's own `ctl.scheduler.{cancel,result}.agent-1` (as agent-1)
and every operator subject a service serves (`ctl.<service>.health` and each `CONTROLS` entry, with the
operator's credentials), with bodies drawn from each request's JSON Schema, then broken, or no JSON at
all. Each request is answered within a bound: by its reply model (only if the request was valid) or by
an ErrorReply with a stable code (`invalid_request` whenever the request was invalid). A valid request
that would change something (add an agent or a rule, register a tool, reindex...) is never sent."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass

import nats
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from pydantic import BaseModel, ValidationError

from aios_schemas import ERROR_CODES, ErrorReply, Health, HealthQuery, new_id
from aios_schemas.export import CONTROLS
from aios_schemas.wire import ERROR_HEADER
from tests.fuzz.conftest import ANSWER_BOUND_S, SERVICES, TRIED, AgentLink, assert_kernel_intact
from tests.fuzz.strategies import FRESH_ID, corrupt, dumps, model_values, mutate, raw_bodies, shown
from tests.kernel import Kernel

pytestmark = pytest.mark.fuzz

EXAMPLES = 400
# Operations that change something when the request is valid: fuzzed only with invalid requests.
MUTATING = frozenset(
    {
        ("access", "agent_add"),
        ("access", "agent_revoke"),
        ("access", "agent_groups"),
        ("access", "group_add"),
        ("access", "rule_add"),
        ("access", "rule_rm"),
        ("access", "decide"),
        ("storage", "reindex"),
        ("tools", "register"),
    }
)


@dataclass(frozen=True)
class Target:
    service: str
    op: str
    request: type[BaseModel]
    reply: type[BaseModel]
    per_agent: bool  # asked by the agent about itself, on its own connection

    def subject(self, k: Kernel) -> str:
        return (
            k.ns.ctl_for(self.service, self.op, "agent-1")
            if self.per_agent
            else k.ns.ctl(self.service, self.op)
        )


TARGETS: tuple[Target, ...] = (
    *(Target(s, "health", HealthQuery, Health, False) for s in SERVICES),
    *(Target(c.service, c.op, c.request, c.reply, c.per_agent) for c in CONTROLS if c.service in SERVICES),
)


@dataclass(frozen=True)
class CtlProbe:
    target: Target
    body: bytes

    def __repr__(self) -> str:
        return f"CtlProbe({self.target.service}.{self.target.op}, {shown(self.body)})"


@st.composite
def probes(draw: st.DrawFn) -> CtlProbe:
    target = draw(st.sampled_from(TARGETS))
    doc = draw(model_values(target.request))
    if isinstance(doc, dict) and "id" in target.request.model_fields and draw(st.booleans()):
        doc = {**doc, "id": FRESH_ID}
    if isinstance(doc, dict) and target.per_agent and draw(st.integers(0, 3)):
        doc = {**doc, "agent": "agent-1"}  # mostly about itself (else: forbidden)
    how = draw(st.sampled_from(["as drawn", "mutate", "mutate", "corrupt", "raw"]))
    if how == "raw":
        return CtlProbe(target, draw(raw_bodies()))
    body = dumps(draw(mutate(doc)) if how == "mutate" else doc)
    return CtlProbe(target, draw(corrupt(body)) if how == "corrupt" else body)


def valid(model: type[BaseModel], body: bytes) -> bool:
    try:
        model.model_validate_json(body)
    except (ValidationError, ValueError, RecursionError):
        return False
    return True


async def ask(
    nc: NATS, subject: str, target: Target, body: bytes, is_valid: bool, tally: Counter[str]
) -> None:
    TRIED["controls"] += 1
    try:
        msg = await nc.request(subject, body, timeout=ANSWER_BOUND_S)  # none: TimeoutError fails the test
    except nats.errors.MaxPayloadError:
        tally["refused by the client (max_payload)"] += 1
        return
    what = f"{shown(body)} on {subject}"
    assert len(msg.data) < 64_000, f"a {len(msg.data)}-byte answer to {what}"
    if (msg.headers or {}).get(ERROR_HEADER):
        err = ErrorReply.model_validate_json(msg.data)
        assert err.code in ERROR_CODES
        if not is_valid:
            assert err.code == "invalid_request", (what, err)
        tally[err.code] += 1
        return
    assert is_valid, f"{what} was invalid, yet answered {msg.data[:300]!r}"
    target.reply.model_validate_json(msg.data)
    tally["ok"] += 1


async def test_every_control_subject_answers_garbage_with_a_typed_error(
    fuzz_kernel: Kernel, agent: AgentLink, admin: NATS
) -> None:
    tally: Counter[str] = Counter()
    started, before = time.monotonic(), TRIED["controls"]
    loop = asyncio.get_running_loop()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking against a live kernel: the payload is shown
        suppress_health_check=list(HealthCheck),
    )
    @given(probe=probes())
    def fuzz(probe: CtlProbe) -> None:  # hypothesis drives from a thread; the bus stays on the loop
        t = probe.target
        body = probe.body.replace(FRESH_ID.encode(), new_id().encode())
        is_valid = valid(t.request, body)
        assume(not (is_valid and (t.service, t.op) in MUTATING))
        nc = agent.nc if t.per_agent else admin
        done = asyncio.run_coroutine_threadsafe(
            ask(nc, t.subject(fuzz_kernel), t, body, is_valid, tally), loop
        )
        done.result()

    await asyncio.to_thread(fuzz)
    tried = TRIED["controls"] - before
    took = time.monotonic() - started
    print(f"\ncontrols: {tried} payloads on {len(TARGETS)} subjects in {took:.1f}s: {dict(tally)}")
    assert tried >= EXAMPLES
    assert not agent.errors, agent.errors
    await assert_kernel_intact(admin, fuzz_kernel)
