"""The SDK's span export: each span leaves on the connection of the agent it names; the recorder
stamps spans with the agent the bus authenticated and never lets them pass as a kernel service's."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from aios_schemas import Namespace
from aios_schemas.traces import SpanBatch, SpanRecord
from aios_sdk import tracing
from aios_services.recorder.main import from_agent


def test_spans_go_out_on_the_connection_of_the_agent_they_name() -> None:
    loop = asyncio.new_event_loop()
    sent: list[tuple[str, bytes]] = []
    exporter = tracing.BusSpanExporter()
    for agent in ("alice", "bob"):
        exporter.add(agent, tracing.Route(f"evt.agent.{agent}.spans", loop, lambda s, d: sent.append((s, d))))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    t = provider.get_tracer("test")
    with t.start_as_current_span("syscall llm.chat") as span:
        span.set_attribute("aios.agent", "alice")
    with t.start_as_current_span("my own step"):  # names no agent: the newest client takes it
        pass
    with t.start_as_current_span("syscall memory.add") as span:
        span.set_attribute("aios.agent", "carol")  # not connected here: the newest client too
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    got = {(subject, s.name) for subject, data in sent for s in SpanBatch.model_validate_json(data).spans}
    assert got == {
        ("evt.agent.alice.spans", "syscall llm.chat"),
        ("evt.agent.bob.spans", "my own step"),
        ("evt.agent.bob.spans", "syscall memory.add"),
    }
    assert exporter.exported == 3


def test_a_removed_client_gets_no_more_spans() -> None:
    loop = asyncio.new_event_loop()
    sent: list[str] = []
    exporter = tracing.BusSpanExporter()
    route = tracing.Route("evt.agent.alice.spans", loop, lambda s, d: sent.append(s))
    exporter.add("alice", route)
    exporter.remove("alice", route)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("x"):
        pass
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert sent == [] and exporter.exported == 0


@pytest.mark.parametrize("namespace", ["", "team"])
def test_the_sender_of_spans_is_read_from_the_subject(namespace: str) -> None:
    ns = Namespace(namespace)
    assert Namespace.spans_agent(ns.agent_spans("alice")) == "alice"
    assert Namespace.spans_agent(ns.service_event("scheduler", "spans")) is None
    assert Namespace.spans_agent(f"{ns.root}.evt.agent.alice.other") is None
    assert Namespace.spans_agent(f"{ns.root}.evt.agent..spans") is None


@pytest.mark.parametrize(
    ("claimed", "stored"),
    [
        ("aios-scheduler", "agent:alice"),
        ("aios-agent", "agent:alice"),
        ("", "agent:alice"),
        ("my-app", "my-app"),
    ],
)
def test_an_agents_span_cannot_pass_as_a_kernel_services(claimed: str, stored: str) -> None:
    span = SpanRecord(trace_id="0" * 32, span_id="1" * 16, name="x", service=claimed, start=1.0, end=2.0)
    out = from_agent(span, "alice")
    assert out.service == stored and out.attributes["aios.sender"] == "alice"


def test_traces_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracing.ENV, "0")
    assert not tracing.enabled(None) and tracing.enabled(True)
    monkeypatch.setenv(tracing.ENV, "1")
    assert tracing.enabled(None) and not tracing.enabled(False)
