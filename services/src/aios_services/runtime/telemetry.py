"""OpenTelemetry wiring: the API in library code, the SDK installed once by a process's main().

`traceparent` travels in NATS message headers; `inject`/`extract` are the only two places that know.
Finished spans go to the recorder over the bus (the SDK's `BusSpanExporter`, batched by OpenTelemetry's
BatchSpanProcessor), and to any OTLP collector too when the standard `OTEL_EXPORTER_OTLP_*`
variables say where (and `opentelemetry-exporter-otlp` is installed).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from aios_sdk.tracing import BusSpanExporter, Route, add_otlp

log = logging.getLogger(__name__)
_provider: TracerProvider | None = None


def setup_tracing(service_name: str) -> None:
    """Install the SDK tracer provider (once per process). A console exporter is available for
    debugging with AIOS_TRACE_CONSOLE=1; OTLP with the standard OTEL_* variables."""
    global _provider
    from opentelemetry.sdk.resources import Resource

    provider = TracerProvider(resource=Resource.create({"service.name": f"aios-{service_name}"}))
    if os.environ.get("AIOS_TRACE_CONSOLE") == "1":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    add_otlp(provider)
    trace.set_tracer_provider(provider)
    _provider = provider


def export_spans_to(
    publish: Callable[[str, bytes], None], subject: str, provider: Any = None
) -> BusSpanExporter:
    """Send this process's finished spans to `subject` through `publish` (called on the event loop
    that owns the bus: the batch processor runs in its own thread). The provider is the one
    `setup_tracing` installed, unless given (tests)."""
    target = provider or _provider
    if target is None:
        raise RuntimeError("setup_tracing() first")
    exporter = BusSpanExporter()  # the SDK's, with this process's one route
    exporter.add("", Route(subject, asyncio.get_running_loop(), publish))
    target.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=500, max_export_batch_size=512)
    )
    return exporter


def tracing_installed() -> bool:
    return _provider is not None


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context (adds to `headers` if given)."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract(headers: dict[str, str] | None) -> Context:
    return propagate.extract(headers or {}) if headers else context.get_current()
