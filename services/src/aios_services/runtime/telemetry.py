"""OpenTelemetry wiring: the API in library code, the SDK installed once by a process's main().

`traceparent` travels in NATS message headers; `inject`/`extract` are the only two places that know.
"""

from __future__ import annotations

import os

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context


def setup_tracing(service_name: str) -> None:
    """Install the SDK tracer provider. Exporters are added by the observability issue; a console
    exporter is available for debugging with AIOS_TRACE_CONSOLE=1."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider(resource=Resource.create({"service.name": f"aios-{service_name}"}))
    if os.environ.get("AIOS_TRACE_CONSOLE") == "1":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)


def inject(headers: dict[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current trace context (adds to `headers` if given)."""
    carrier = dict(headers or {})
    propagate.inject(carrier)
    return carrier


def extract(headers: dict[str, str] | None) -> Context:
    return propagate.extract(headers or {}) if headers else context.get_current()
