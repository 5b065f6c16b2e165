"""An agent process's spans: to the kernel's recorder over the agent's own bus connection, and to
any OTLP collector the standard `OTEL_EXPORTER_OTLP_*` variables name.

One exporter per process (OpenTelemetry's BatchSpanProcessor batches in its own thread) serves
every `AIOS` client in it: a span goes out on the connection of the agent it names (`aios.agent`,
set on every syscall span), else on the most recently connected client's. Each agent may publish
only on its own subject (`evt.agent.<agent>.spans`), so the recorder knows who sent what.

Which provider: if the program installed an OpenTelemetry SDK `TracerProvider` of its own (before
or after connecting), the exporter joins it, so its spans and the SDK's share one trace and both
reach the recorder. Until it does, the SDK uses a private provider rather than installing a global
one, which would forbid the program from installing its own. `AIOS_TRACES=0` (or
`AIOS.connect(traces=False)`) turns it off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from aios_schemas import encode
from aios_schemas.traces import SpanBatch, SpanRecord

log = logging.getLogger(__name__)
ENV = "AIOS_TRACES"
_FLUSH_MS = 2000


def enabled(traces: bool | None) -> bool:
    """The argument, else `AIOS_TRACES` (on unless `0`, `false`, `no` or `off`)."""
    if traces is not None:
        return traces
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def span_record(span: ReadableSpan) -> SpanRecord | None:
    """The fields of a finished span a trace view needs (None for a span that never ended)."""
    ctx = span.context
    if ctx is None or span.start_time is None or span.end_time is None:
        return None
    parent = span.parent
    attrs: dict[str, Any] = {}
    for k, v in (span.attributes or {}).items():
        attrs[k] = list(v) if isinstance(v, tuple) else v
    return SpanRecord(
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_id=f"{parent.span_id:016x}" if parent is not None else None,
        name=span.name,
        service=str(span.resource.attributes.get("service.name", "")),
        start=span.start_time / 1e9,
        end=span.end_time / 1e9,
        status=span.status.status_code.name.lower(),
        attributes=attrs,
    )


@dataclass(frozen=True)
class Route:
    """Where one agent's spans go: `publish(subject, data)` called on `loop` (the client's)."""

    subject: str
    loop: asyncio.AbstractEventLoop
    publish: Callable[[str, bytes], None]


class BusSpanExporter(SpanExporter):
    """Finished spans to the bus, one message per batch and route. An agent process has a route per
    connected agent (a span goes to the one it names, else the newest); a kernel process has one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # export runs in the processor's thread, add/remove on loops
        self._routes: dict[str, Route] = {}  # insertion order: the newest client last
        self.exported = 0

    def add(self, agent: str, route: Route) -> None:
        with self._lock:
            self._routes.pop(agent, None)
            self._routes[agent] = route

    def remove(self, agent: str, route: Route) -> None:
        with self._lock:
            if self._routes.get(agent) is route:
                del self._routes[agent]

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            routes = dict(self._routes)
        if not routes:
            return SpanExportResult.SUCCESS  # no client connected: nowhere to send them
        fallback = next(reversed(routes))
        groups: dict[str, list[SpanRecord]] = {}
        for span in spans:
            record = span_record(span)
            if record is None:
                continue
            named = record.attributes.get("aios.agent")
            agent = named if isinstance(named, str) and named in routes else fallback
            groups.setdefault(agent, []).append(record)
        for agent, records in groups.items():
            route = routes[agent]
            try:
                route.loop.call_soon_threadsafe(
                    route.publish, route.subject, encode(SpanBatch(spans=records))
                )
            except RuntimeError:  # that client's loop is closed: its spans are lost, not the others'
                continue
            self.exported += len(records)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class _Installed:
    """The process's exporter and the providers it is attached to (made on first use)."""

    def __init__(self) -> None:
        self.exporter = BusSpanExporter()
        self.processor = BatchSpanProcessor(
            self.exporter, schedule_delay_millis=500, max_export_batch_size=512
        )
        attrs = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "aios-agent"}
        self.private = TracerProvider(resource=Resource.create(attrs))
        add_otlp(self.private)
        self.private.add_span_processor(self.processor)
        self.private_tracer = self.private.get_tracer("aios_sdk")
        self.joined: TracerProvider | None = None
        self.joined_tracer: trace.Tracer | None = None

    def tracer(self) -> trace.Tracer:
        """The program's own provider if it installed one (now or later: joined on first sight),
        else the private one."""
        current = trace.get_tracer_provider()
        if not isinstance(current, TracerProvider):
            return self.private_tracer
        if current is not self.joined:
            current.add_span_processor(self.processor)
            self.joined, self.joined_tracer = current, current.get_tracer("aios_sdk")
        assert self.joined_tracer is not None
        return self.joined_tracer


def add_otlp(provider: TracerProvider) -> None:
    """Also to the OTLP collector the standard `OTEL_EXPORTER_OTLP_*` variables name, if any."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_* is set but opentelemetry-exporter-otlp is not installed")
        return
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))


_installed: _Installed | None = None
_install_lock = threading.Lock()
_default_tracer = trace.get_tracer("aios_sdk")


def installed() -> _Installed:
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = _Installed()
        return _installed


def tracer() -> trace.Tracer:
    """The SDK's tracer: the exporting one once a client turned tracing on, else the global one
    (in a kernel process, such as the gateway, the process's own provider)."""
    return _installed.tracer() if _installed is not None else _default_tracer


async def flush() -> None:
    """Push finished spans out now (a client leaving), without blocking the event loop."""
    if _installed is not None:
        await asyncio.get_running_loop().run_in_executor(None, _installed.processor.force_flush, _FLUSH_MS)
