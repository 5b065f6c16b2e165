"""One trace follows a syscall across services: SDK -> scheduler -> llm (traceparent in headers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aios_schemas import new_id
from aios_services.sim.runner import run_sim
from tests.kernel import running_kernel

MODEL = "sim-llama-8b"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)  # once per process; every module's tracer is a proxy to it
    return exporter


async def test_one_trace_across_sdk_scheduler_and_llm(
    nats_url: str, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    async with run_sim("fixed", models=(MODEL,), decode_ms=0.5) as sim:
        models = {MODEL: [{"name": "sim", "base_url": sim.base_url, "slots": 2}]}
        async with running_kernel(nats_url, tmp_path, models) as k, k.connect() as aios:
            spans.clear()
            sid = new_id()
            await aios.llm.chat(MODEL, [{"role": "user", "content": "trace me"}], id=sid)
    finished = spans.get_finished_spans()
    client = [s for s in finished if s.name == "syscall llm.chat"]
    run = [s for s in finished if s.name == "run llm.chat" and s.attributes["aios.syscall.id"] == sid]
    serve = [s for s in finished if s.name.startswith("serve ") and ".exec.llm." in s.name]  # a lane subject
    assert len(client) == 1 and len(run) == 1 and serve, [s.name for s in finished]
    trace_id = client[0].context.trace_id
    assert run[0].context.trace_id == trace_id
    assert any(
        s.context.trace_id == trace_id and s.parent and s.parent.span_id == run[0].context.span_id
        for s in serve
    )
