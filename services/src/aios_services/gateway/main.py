"""`python -m aios_services.gateway`: the OpenAI-compatible HTTP front door.

`POST /v1/chat/completions` (streaming included), `POST /v1/embeddings`, `GET /v1/models`. The API key
is `<agent>:<token>`; each request is a syscall of that agent, made over the agent's own bus
connection (agents.py), so scheduling, limits, quotas, accounting and traces apply as to any
syscall. `X-AIOS-Session` names the program for program-level scheduling; `X-AIOS-Priority` sets a
static priority; a request's deadline is `X-AIOS-Timeout` seconds (else the setting).

Choice: aiohttp's own HTTP server, not an ASGI stack: aiohttp is already the kernel's HTTP client,
its server parses HTTP/1.1 in C (llhttp), keeps connections alive, sets TCP_NODELAY and streams
server-sent events without a framework in between; an ASGI server (uvicorn) would add a layer and
a dependency for the same work. Its cost is measured by `bench.gateway` against the same calls made
with the SDK and made directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web
from nats.js.kv import KeyValue
from opentelemetry import trace
from pydantic import JsonValue, ValidationError

from aios_schemas import AiosError, ChatReply, EmbedReply, ModelEntry, new_id
from aios_sdk.config import without_credentials

from ..runtime import Bus, HealthDetails, cancel_and_wait, extract, keep_running, main_for
from ..runtime.service import load_settings
from . import console
from . import openai_compat as oai
from .agents import AgentClients
from .settings import GatewaySettings

log = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _error(err: AiosError) -> web.Response:
    status, body, headers = oai.error(err)
    return _json(body, status, headers)


def _float_header(request: web.Request, name: str, default: float | None) -> float | None:
    raw = request.headers.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise AiosError("invalid_request", f"{name}: a number, not {raw[:40]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise AiosError("invalid_request", f"{name}: a finite number")
    return value


class Gateway:
    def __init__(
        self, settings: GatewaySettings, clients: AgentClients, models: dict[str, ModelEntry]
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.models = models  # kept current from the catalogue (KV), for /v1/models
        self.requests = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024, middlewares=[self._errors])
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embed)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/health", self.health)
        return app

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every failure as an OpenAI error body with the status its code maps to; every request a
        server span (continuing the client's W3C `traceparent` if it sent one)."""
        self.requests += 1
        parent = extract(dict(request.headers))
        with tracer.start_as_current_span(
            f"{request.method} {request.path}", context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            response = await self._handle(request, handler)
            span.set_attribute("http.status_code", response.status)
            return response

    async def _handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except AiosError as exc:
            return _error(exc)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(AiosError("not_found" if exc.status == 404 else "invalid_request", exc.reason))
            raise

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read())
        except ValueError as exc:
            raise AiosError("invalid_request", f"the body is not JSON: {exc}") from None

    def _call_options(self, request: web.Request) -> dict[str, Any]:
        session = request.headers.get("X-AIOS-Session")
        priority = _float_header(request, "X-AIOS-Priority", 0)
        timeout = _float_header(request, "X-AIOS-Timeout", self.settings.gateway_timeout_s)
        if timeout is not None and timeout <= 0:
            raise AiosError("invalid_request", "X-AIOS-Timeout: seconds, more than 0")
        return {"session": session, "priority": int(priority or 0), "timeout": timeout}

    def _agent(self, request: web.Request) -> tuple[str, str]:
        return oai.parse_key(request.headers.get("Authorization"), request.headers.get("X-AIOS-Agent"))

    async def chat(self, request: web.Request) -> web.StreamResponse:
        agent, token = self._agent(request)
        body = await self._body(request)
        payload = oai.chat_payload(body)
        opts = self._call_options(request)
        async with self.clients.client(agent, token) as aios:
            if not payload.stream:
                sid = new_id()  # the completion's id is the syscall's: `aios trace` finds it
                result = await aios.syscall(payload, id=sid, **opts)
                assert isinstance(result, ChatReply)
                return _json(oai.completion(sid, result))
            usage = isinstance(body.get("stream_options"), dict) and bool(
                body["stream_options"].get("include_usage")
            )
            return await self._stream(request, aios, payload, opts, usage)

    async def _stream(
        self, request: web.Request, aios: Any, payload: Any, opts: dict[str, Any], with_usage: bool
    ) -> web.StreamResponse:
        created = int(time.time())
        response: web.StreamResponse | None = None
        try:
            async with aios.llm.stream_payload(payload, **opts) as s:
                async for delta in s:
                    if response is None:
                        response = await self._open_sse(request)
                        await _sse(
                            response,
                            oai.chunk(s.id, payload.model, created, {"role": "assistant", "content": ""}),
                        )
                    await _sse(response, oai.chunk(s.id, payload.model, created, {"content": delta}))
                reply = s.reply
            assert isinstance(reply, ChatReply)
            if response is None:  # no text at all (e.g. only tool calls)
                response = await self._open_sse(request)
                await _sse(
                    response, oai.chunk(s.id, payload.model, created, {"role": "assistant", "content": ""})
                )
            for c in oai.last_chunks(s.id, created, reply, with_usage):
                await _sse(response, c)
            await response.write(b"data: [DONE]\n\n")
        except AiosError as exc:
            if response is None:  # nothing sent yet: a normal error response
                return _error(exc)
            # Mid-stream: an error event, as OpenAI's API sends one.
            _, body, _ = oai.error(exc)
            await response.write(f"data: {json.dumps(body)}\n\n".encode())
        return response

    async def _open_sse(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
            }
        )
        await response.prepare(request)
        return response

    async def embed(self, request: web.Request) -> web.StreamResponse:
        agent, token = self._agent(request)
        body = await self._body(request)
        payload = oai.embed_payload(body)
        opts = self._call_options(request)
        async with self.clients.client(agent, token) as aios:
            result = await aios.syscall(payload, **opts)
        assert isinstance(result, EmbedReply)
        return _json(oai.embeddings(result, body.get("encoding_format")))

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        agent, token = self._agent(request)
        async with self.clients.client(agent, token):  # the key is checked like any request's
            pass
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "aios"} for name in sorted(self.models)
        ]
        return _json({"object": "list", "data": data})

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok", "agents_connected": len(self.clients)})


async def _sse(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n")


async def follow_models(kv: KeyValue, models: dict[str, ModelEntry]) -> None:
    """The models the llm replicas publish (KV `model.*`): what `/v1/models` lists."""
    by_key: dict[str, str] = {}
    watcher = await kv.watch("model.>")
    async for entry in watcher:
        if entry is None:
            continue
        if not entry.value:
            name = by_key.pop(entry.key, None)
            if name is not None and name not in by_key.values():
                models.pop(name, None)
            continue
        with contextlib.suppress(ValidationError):
            m = ModelEntry.model_validate_json(entry.value)
            by_key[entry.key] = m.name
            models[m.name] = m


async def start(bus: Bus, stack: AsyncExitStack, settings: GatewaySettings) -> HealthDetails:
    clients = AgentClients(
        without_credentials(settings.nats_url),
        settings.namespace,
        idle_s=settings.gateway_agent_idle_s,
        max_agents=settings.gateway_max_agents,
    )
    stack.push_async_callback(clients.close_all)
    models: dict[str, ModelEntry] = {}
    limits = await bus.ensure_kv(bus.ns.limits_bucket)
    gateway = Gateway(settings, clients, models)
    app = gateway.app()
    console.mount(app, bus, settings.gateway_console_token.get_secret_value(), models)  # /ui
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.gateway_host,
        settings.gateway_port,
        reuse_address=True,
        reuse_port=settings.gateway_reuse_port or None,
    )
    await site.start()
    stack.push_async_callback(runner.cleanup)
    port = runner.addresses[0][1] if runner.addresses else settings.gateway_port
    log.info("gateway listening on http://%s:%d/v1", settings.gateway_host, port)
    tasks = [
        asyncio.create_task(keep_running("model list", lambda: follow_models(limits, models))),
        asyncio.create_task(keep_running("idle agents", clients.close_idle_forever)),
    ]
    for task in tasks:
        stack.push_async_callback(cancel_and_wait, task)
    return lambda: {
        "url": f"http://{settings.gateway_host}:{port}/v1",
        "agents_connected": len(clients),
        "requests": gateway.requests,
        "models": list[JsonValue](sorted(models)),
    }


def main() -> None:
    settings = load_settings("gateway", GatewaySettings)
    main_for("gateway", settings, lambda bus, stack: start(bus, stack, settings))


if __name__ == "__main__":
    main()
