"""The simulator's OpenAI-compatible HTTP API (aiohttp): chat, streaming, embeddings, models, stats."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import math
import random
import struct
import time
from collections import deque
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from aios_services.sim import textgen
from aios_services.sim.api import ChatRequest, EmbeddingRequest, JSONObject, error_body
from aios_services.sim.engine import Engine, SeqHandle
from aios_services.sim.profiles import EngineProfile
from aios_services.sim.ratelimit import RateLimiter

SIM_HEADER = "x-aios-simulator"
_RECENT = 100


def _error(status: int, message: str, type_: str, code: str | None, **headers: str) -> web.Response:
    return web.json_response(error_body(message, type_, code), status=status, headers=headers)


class SimApp:
    """State shared by the handlers: one engine for all models, limiter per model, request log."""

    def __init__(self, profile: EngineProfile, engine: Engine) -> None:
        self.profile = profile
        self.engine = engine
        window_s = 60.0 * profile.time_scale
        self.limiters = {
            model: RateLimiter(
                rpm=profile.rpm, tpm=profile.tpm, model=model, window_s=window_s, clock=engine.clock
            )
            for model in profile.models
        }
        self.recent: deque[Any] = deque(maxlen=_RECENT)
        self.http_requests = 0
        self.rejected_429 = 0
        self._ids = itertools.count(1)

    def build(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024**2)
        app.on_response_prepare.append(self._mark_simulator)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/sim/stats", self.stats_handler)
        app.router.add_get("/metrics", self.metrics_handler)
        app.router.add_post("/sim/reset", self.reset_handler)
        return app

    @staticmethod
    async def _mark_simulator(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[SIM_HEADER] = "1"

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> JSONObject:
        s = self.engine.stats
        return {
            "profile": self.profile.name,
            "requests": self.http_requests,
            "completed": s.completed,
            "cancelled": s.cancelled,
            "running": len(self.engine.running),
            "waiting": self.engine.num_waiting,
            "max_running_seen": s.max_running_seen,
            "preemptions": s.preemptions,
            "recomputed_tokens": s.recomputed_tokens,
            "prefix_cache_hit_tokens": s.prefix_cache_hit_tokens,
            "prompt_tokens": s.prompt_tokens,
            "generated_tokens": s.generated_tokens,
            "429s": self.rejected_429,
            "kv_blocks_total": self.engine.pool.num_blocks,
            "kv_blocks_used": self.engine.pool.num_used,
            "steps": s.steps,
            "model_time_ms": round(s.model_time_ms, 3),
            "recent_requests": list(self.recent),
        }

    def reset(self) -> None:
        self.engine.reset_stats()
        self.recent.clear()
        self.http_requests = 0
        self.rejected_429 = 0

    def metrics(self) -> str:
        """The engine's state in Prometheus text, under vLLM's metric names (what a kernel that
        adapts its concurrency to the engine reads; `/sim/reset` zeroes the counter, as a restart
        of vLLM would)."""
        e = self.engine
        usage = e.pool.num_used / e.pool.num_blocks if e.pool.num_blocks else 0.0
        label = f'{{model_name="{self.profile.models[0]}"}}' if self.profile.models else ""
        rows = [
            ("vllm:num_requests_running", "gauge", "Requests in the running batch.", len(e.running)),
            ("vllm:num_requests_waiting", "gauge", "Requests waiting to be scheduled.", e.num_waiting),
            ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage (1 = full).", usage),
            ("vllm:num_preemptions_total", "counter", "Preemptions since start.", e.stats.preemptions),
            ("vllm:request_success_total", "counter", "Requests finished since start.", e.stats.completed),
        ]
        lines = []
        for name, kind, help_, value in rows:
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return "\n".join(lines) + "\n"

    async def metrics_handler(self, request: web.Request) -> web.Response:
        return web.Response(text=self.metrics(), content_type="text/plain")

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def reset_handler(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "simulator": True})

    async def models(self, request: web.Request) -> web.Response:
        ids = [*self.profile.models, self.profile.embedding_model]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "aios-simulator"} for m in ids]
        return web.json_response({"object": "list", "data": data})

    # -- chat -----------------------------------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        self.http_requests += 1
        body = await _read_json(request)
        if isinstance(body, web.Response):
            return body
        self.recent.append(body)
        try:
            req = ChatRequest.model_validate(body)
        except ValidationError as exc:
            return _error(400, _validation_message(exc), "invalid_request_error", None)
        if req.model not in self.profile.models:
            return _model_not_found(req.model)
        plan = textgen.plan(req, self.profile)
        prompt_len = len(plan.prompt_tokens)
        if prompt_len + plan.n_tokens > self.engine.max_request_tokens():
            return _error(
                400,
                f"This model's maximum context length is {self.engine.max_request_tokens()} tokens. "
                f"However, you requested {prompt_len + plan.n_tokens} tokens "
                f"({prompt_len} in the messages, {plan.n_tokens} in the completion).",
                "invalid_request_error",
                "context_length_exceeded",
            )
        decision = self.limiters[req.model].check(
            prompt_len + (req.output_limit or self.profile.max_output_tokens)
        )
        if decision.error is not None:
            self.rejected_429 += 1
            retry = decision.retry_after_s
            headers = {
                **decision.headers,
                "retry-after": str(max(1, math.ceil(retry))),
                "retry-after-ms": str(max(1, math.ceil(retry * 1000))),
            }
            return _error(429, decision.error, decision.error_type, "rate_limit_exceeded", **headers)
        if self.profile.ttft_ms > 0:
            await self.engine.model_sleep(self.profile.ttft_ms)
        handle = self.engine.submit(
            prompt_len=prompt_len,
            max_new=plan.n_tokens,
            block_hashes=plan.block_hashes,
            priority=req.priority,
        )
        # Whatever ends this handler (done, client gone -> aiohttp cancels us, write error), the
        # engine must drop the request at once: that is how a kernel suspends a generation.
        try:
            if req.stream:
                return await self._stream(request, req, plan, handle, decision.headers)
            await handle.wait_done()
            if handle.state.status == "cancelled":  # engine shut down under us: like a crash
                if request.transport is not None:
                    request.transport.close()
                raise ConnectionResetError("engine stopped")
            return web.json_response(self._completion(req, plan, handle), headers=decision.headers)
        except ConnectionResetError:
            # The client went away mid-stream (a suspended or cancelled generation): not an error.
            raise asyncio.CancelledError from None
        finally:
            handle.cancel()

    def _envelope(self, req: ChatRequest, rid: str, kind: str) -> JSONObject:
        return {
            "id": rid,
            "object": kind,
            "created": int(time.time()),
            "model": req.model,
            "system_fingerprint": "aios-simulator",
        }

    def _usage(self, plan: textgen.Plan, handle: SeqHandle) -> JSONObject:
        prompt = len(plan.prompt_tokens)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": handle.emitted,
            "total_tokens": prompt + handle.emitted,
            "prompt_tokens_details": {"cached_tokens": handle.state.cached_tokens},
        }

    def _completion(self, req: ChatRequest, plan: textgen.Plan, handle: SeqHandle) -> JSONObject:
        message: JSONObject = {"role": "assistant", "content": plan.content}
        if plan.tool_call is not None:
            call = plan.tool_call
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": plan.content},
                }
            ]
        return {
            **self._envelope(req, f"chatcmpl-sim-{next(self._ids)}", "chat.completion"),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
            ],
            "usage": self._usage(plan, handle),
        }

    async def _stream(
        self,
        request: web.Request,
        req: ChatRequest,
        plan: textgen.Plan,
        handle: SeqHandle,
        headers: dict[str, str],
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        envelope = self._envelope(req, f"chatcmpl-sim-{next(self._ids)}", "chat.completion.chunk")
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        # The envelope is the same for every chunk: encode it once, splice in each delta.
        head = b"data: " + json.dumps(envelope).encode()[:-1] + b', "choices": [{"index": 0, "delta": '
        usage_null = b', "usage": null' if include_usage else b""

        def chunk(delta: JSONObject, finish: str | None = None) -> bytes:
            tail = b', "logprobs": null, "finish_reason": ' + json.dumps(finish).encode() + b"}]"
            return head + json.dumps(delta).encode() + tail + usage_null + b"}\n\n"

        sent = 0
        while True:
            ready = await handle.wait_progress(sent)
            out = [chunk(self._delta(plan, i)) for i in range(sent, ready) if i < len(plan.pieces)]
            if sent == 0 and ready > 0 and plan.tool_call is None:
                out.insert(0, chunk({"role": "assistant", "content": ""}))
            sent = ready
            if out:
                await resp.write(b"".join(out))
            if handle.done:
                break
        if handle.state.status == "cancelled":
            # The engine stopped (shut down) under this request: drop the connection mid-stream, as
            # a crashed server would, instead of ending the stream as if it had completed.
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("engine stopped")
        tail = [chunk({}, plan.finish_reason)]
        if include_usage:
            usage = {**envelope, "choices": [], "usage": self._usage(plan, handle)}
            tail.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
        tail.append(b"data: [DONE]\n\n")
        await resp.write(b"".join(tail))
        await resp.write_eof()
        return resp

    @staticmethod
    def _delta(plan: textgen.Plan, i: int) -> JSONObject:
        call = plan.tool_call
        if call is None:
            return {"content": plan.pieces[i]}
        if i == 0:
            fn = {"name": call.name, "arguments": ""}
            return {
                "role": "assistant",
                "tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": fn}],
            }
        return {"tool_calls": [{"index": 0, "function": {"arguments": plan.pieces[i]}}]}

    # -- embeddings -----------------------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await _read_json(request)
        if isinstance(body, web.Response):
            return body
        self.recent.append(body)
        try:
            req = EmbeddingRequest.model_validate(body)
        except ValidationError as exc:
            return _error(400, _validation_message(exc), "invalid_request_error", None)
        if req.model not in (*self.profile.models, self.profile.embedding_model):
            return _model_not_found(req.model)
        texts = _embedding_inputs(req.input)
        dim = req.dimensions or self.profile.embedding_dim
        data: list[JSONObject] = []
        for i, text in enumerate(texts):
            vector = embed(text, dim, self.profile.seed)
            encoded: Any = vector
            if req.encoding_format == "base64":
                encoded = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(textgen.tokenize(t)) for t in texts)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": req.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


def embed(text: str, dim: int, seed: int = 0) -> list[float]:
    """A unit vector from a hash of the text: equal texts embed equally, different ones ~orthogonally."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    rng = random.Random(digest)
    vector = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _embedding_inputs(value: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    if isinstance(value, str):
        return [value]
    out: list[str] = []
    ints: list[str] = []
    for item in value:
        if isinstance(item, int):  # one input given as token ids
            ints.append(str(item))
        else:
            out.append(item if isinstance(item, str) else " ".join(map(str, item)))
    return [" ".join(ints)] if ints else out


async def _read_json(request: web.Request) -> JSONObject | web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"Request body is not valid JSON: {exc}", "invalid_request_error", None)
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object.", "invalid_request_error", None)
    return body


def _validation_message(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()]
    return "Invalid request: " + "; ".join(parts)


def _model_not_found(model: str) -> web.Response:
    return _error(
        404,
        f"The model `{model}` does not exist or you do not have access to it. (AIOS simulator)",
        "invalid_request_error",
        "model_not_found",
    )
