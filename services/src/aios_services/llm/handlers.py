"""`exec.llm`: run one admitted llm syscall on the backend the scheduler chose; report what happened.

The scheduler owns routing, fallback and preemption. This handler runs one call on one backend and
reports it precisely: `done` with a result or a typed error (`details.backend` names the backend, so
the scheduler can fall back), or `suspended` after storing a context snapshot it can resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import JsonValue

from aios_schemas import (
    AiosError,
    ChatReply,
    ContextSnapshot,
    EmbedReply,
    ExecReply,
    ExecRequest,
    JsonObjectFormat,
    JsonSchemaFormat,
    LlmChat,
    LlmEmbed,
    StreamChunk,
    SyscallResult,
    Usage,
    encode,
)
from aios_schemas.llm import FinishReason

from ..runtime import Bus
from .backends import Backend, translate
from .config import ModelKind
from .contexts import ContextStore, FinishedRuns
from .control import Action, Run, Runs
from .generation import Generation, add_usage, embeddings, finish_reason
from .output import check_schema, mismatch
from .requests import Body, chat_body, check_capabilities, embed_body, prompt_chars

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    name: str
    kind: ModelKind
    backends: list[Backend]


@dataclass(frozen=True)
class Deps:
    bus: Bus
    models: Mapping[str, Model]
    contexts: ContextStore
    runs: Runs
    finished: FinishedRuns | None = None


@dataclass
class _Spent:
    """Tokens this exec consumed, over every backend call it made (also those stopped early)."""

    usage: Usage = field(default_factory=Usage)

    def add(self, u: Usage) -> None:
        self.usage = add_usage(self.usage, u)


class _Publisher:
    """Stream chunks to the agent on `aios.v1.stream.<id>`, numbering them from `seq`."""

    def __init__(self, bus: Bus, agent: str, syscall_id: str, seq: int, *, enabled: bool) -> None:
        self.bus, self.id, self.seq, self.enabled = bus, syscall_id, seq, enabled
        self.subject = bus.ns.stream(agent, syscall_id)

    async def send(self, delta: str = "", *, done: bool = False, finish: FinishReason | None = None) -> None:
        if not self.enabled:
            return
        chunk = StreamChunk(id=self.id, seq=self.seq, delta=delta, done=done, finish_reason=finish)
        # Count before the await: nats-py queues the message before it first yields, so a run
        # stopped during this call has published exactly `seq` chunks.
        self.seq += 1
        await self.bus.publish(self.subject, chunk)


@dataclass
class _Call:
    """One backend call of a chat run: what it produced and how it ended."""

    gen: Generation
    seq: int
    usage: Usage
    stopped: Action | None = None
    error: AiosError | None = None


class LlmHandlers:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.bus = deps.bus
        self._inflight: dict[str, asyncio.Future[ExecReply]] = {}

    # --- entry point ---------------------------------------------------------------------------
    async def exec(self, req: ExecRequest) -> ExecReply:
        """Run `req`, or, if this replica is already running that syscall (the scheduler re-sends
        an exec request whose reply an outage may have lost), answer with that same run."""
        sid = req.syscall.id
        run = self._inflight.get(sid)
        if run is None and req.again and self.deps.finished is not None:
            done = await self.deps.finished.get(req.syscall.agent, sid)
            if done is not None:  # generated before the scheduler that asked for it crashed
                return done
            run = self._inflight.get(sid)
        if run is None:
            run = asyncio.ensure_future(self._exec_and_keep(req))
            self._inflight[sid] = run
            run.add_done_callback(lambda _: self._inflight.pop(sid, None))
        # shield: a waiter that goes away (drain, a duplicate) must not cancel the run itself.
        return await asyncio.shield(run)

    async def _exec_and_keep(self, req: ExecRequest) -> ExecReply:
        reply = await self._exec(req)
        finished = self.deps.finished
        if finished is not None and reply.result is not None and reply.result.status == "ok":
            # Kept for a scheduler that crashes before storing the result (only successes: a failure
            # is retried, maybe elsewhere). Written without waiting for JetStream's ack, in the same
            # socket write as the reply: a crash-recovery shortcut, not the result's durability.
            self.bus.publish_soon(finished.subject(req.syscall.agent, req.syscall.id), encode(reply))
        return reply

    async def _exec(self, req: ExecRequest) -> ExecReply:
        sid = req.syscall.id
        started = time.monotonic()
        spent = _Spent()
        payload = req.syscall.payload
        try:
            remaining = req.deadline - time.time()
            if remaining <= 0:
                raise TimeoutError
            preemptible = req.preemptible and isinstance(payload, LlmChat)
            async with asyncio.timeout(remaining):
                with self.deps.runs.open(sid, preemptible=preemptible) as run:
                    if isinstance(payload, LlmChat):
                        reply: ChatReply | EmbedReply | None = await self._chat(req, payload, run, spent)
                    elif isinstance(payload, LlmEmbed):
                        reply = await self._embed(req, payload, run, spent)
                    else:  # the scheduler sends only llm.* here
                        raise AiosError("invalid_request", f"the llm service does not run {payload.kind}")
        except (TimeoutError, AiosError) as exc:
            err = exc if isinstance(exc, AiosError) else _deadline(req)
            if req.resume and not err.details.get("resumable"):
                await self.deps.contexts.delete(sid)
            ms = (time.monotonic() - started) * 1000
            return ExecReply(
                outcome="done",
                result=SyscallResult.fail(sid, err.to_reply(), service_ms=ms),
                usage=spent.usage,
            )
        if reply is None:
            return ExecReply(outcome="suspended", usage=spent.usage)
        if req.resume:
            await self.deps.contexts.delete(sid)
        ms = (time.monotonic() - started) * 1000
        return ExecReply(
            outcome="done", result=SyscallResult.ok(sid, reply, service_ms=ms), usage=spent.usage
        )

    # --- chat ----------------------------------------------------------------------------------
    async def _chat(self, req: ExecRequest, p: LlmChat, run: Run, spent: _Spent) -> ChatReply | None:
        """The reply, or None once suspended (the snapshot is stored)."""
        backend = self._backend(p.model, "chat", req.backend)
        check_capabilities(p, backend)
        check_schema(p.response_format)
        prior = await self._prior(req, backend)
        base = prior or ContextSnapshot(id=req.syscall.id, backend=backend.name, partial="")
        # A reply that breaks the asked format is retried once, fresh. Not when the agent streams:
        # the chunks it already received cannot be taken back.
        json_out = isinstance(p.response_format, JsonObjectFormat | JsonSchemaFormat)
        attempts = 2 if json_out and not p.stream else 1
        for attempt in range(1, attempts + 1):
            call = await self._generate(req, p, backend, run, base, spent)
            total = add_usage(base.usage, call.usage)
            progressed = ContextSnapshot(
                id=base.id,
                backend=backend.name,
                partial=base.partial + call.gen.content,
                chunks=call.seq,
                usage=total,
                suspensions=base.suspensions,
            )
            if call.error is not None:
                await self._keep_progress(call.error, base, progressed)
                raise call.error
            if call.stopped == "cancel":
                raise AiosError("cancelled", "cancelled while running", retryable=False)
            if call.stopped == "suspend":
                snap = progressed.model_copy(update={"suspensions": base.suspensions + 1})
                await self.deps.contexts.put(snap)
                return None
            calls = call.gen.tool_calls()
            content = progressed.partial
            reply = ChatReply(
                model=p.model,
                backend=backend.name,
                content=None if calls and not content else content,
                tool_calls=calls,
                finish_reason=finish_reason(call.gen.finish),
                usage=total,
            )
            # A reply cut by max_tokens (finish_reason "length") is returned as it is, unvalidated,
            # like OpenAI does: it is the agent's budget that ended it, not a backend fault, and a
            # retry would be cut at the same place. The agent sees finish_reason "length".
            cut = reply.finish_reason == "length"
            why = None if cut else mismatch(p.response_format, reply.content)
            if why is None:
                pub = _Publisher(self.bus, req.syscall.agent, req.syscall.id, call.seq, enabled=p.stream)
                await pub.send(done=True, finish=reply.finish_reason)
                return reply
            log.warning("%s: reply of %s %s (attempt %d)", backend.name, req.syscall.id, why, attempt)
            if attempt == attempts:
                raise AiosError(
                    "backend_error",
                    f"{backend.name}: the reply {why}",
                    details={"backend": backend.name, "attempts": attempts},
                )
            # Retry from scratch; what the failed attempt cost stays counted.
            base = ContextSnapshot(id=base.id, backend=backend.name, partial="", chunks=call.seq, usage=total)
        raise AssertionError("unreachable")

    async def _generate(
        self, req: ExecRequest, p: LlmChat, backend: Backend, run: Run, base: ContextSnapshot, spent: _Spent
    ) -> _Call:
        """One backend call continuing `base`, until it ends, fails, or a control message stops it."""
        gen = Generation()
        # Streaming internally whenever the run may be preempted: only a stream can be stopped
        # with its partial output kept.
        streaming = backend.cfg.capabilities.streaming and (p.stream or run.preemptible)
        pub = _Publisher(self.bus, req.syscall.agent, req.syscall.id, base.chunks, enabled=p.stream)
        done_tokens = base.usage.completion_tokens if base.partial else 0
        if p.max_tokens is not None and base.partial and done_tokens >= p.max_tokens:
            gen.finish = "length"  # suspended right at the limit: nothing is left to generate
            return _Call(gen, pub.seq, Usage())
        body = chat_body(
            p, backend, priority=req.priority, stream=streaming, partial=base.partial, done_tokens=done_tokens
        )
        result = _Call(gen, pub.seq, Usage())
        try:
            stopped = await _race(self._call(backend, body, gen, pub, streaming, run), run)
            result.stopped = stopped
        except AiosError as exc:
            result.error = exc
        finally:
            result.seq = pub.seq
            result.usage = gen.usage(prompt_chars(body))
            spent.add(result.usage)
        if not streaming and p.stream and result.error is None and result.stopped is None:
            # The backend cannot stream: the agent still gets its text, as one chunk.
            await pub.send(gen.content)
            result.seq = pub.seq
        return result

    async def _call(
        self, backend: Backend, body: Body, gen: Generation, pub: _Publisher, streaming: bool, run: Run
    ) -> None:
        try:
            if not streaming:
                gen.set_completion(await backend.client.post("/chat/completions", body))
                return
            # Leaving the block closes the response: what frees the slot at the backend, also when
            # the run is stopped (suspend, cancel, deadline).
            async with backend.client.stream("/chat/completions", body) as chunks:
                async for chunk in chunks:
                    delta = gen.add_chunk(chunk)
                    if gen.deltas:  # output since the run started: a suspend may now take effect
                        run.output()
                    if delta:
                        await pub.send(delta)
        except Exception as exc:
            raise translate(exc, backend.name) from exc

    async def _prior(self, req: ExecRequest, backend: Backend) -> ContextSnapshot | None:
        if not req.resume:
            return None
        snap = await self.deps.contexts.get(req.syscall.id)
        if snap is None:
            raise AiosError(
                "not_found", f"no context snapshot for {req.syscall.id} (never stored, or expired)"
            )
        if snap.partial and not backend.cfg.capabilities.continue_partial:
            raise AiosError(
                "invalid_request",
                f"backend {backend.name} cannot continue a partial answer (capability continue_partial)",
                details={"backend": backend.name},
            )
        return snap

    async def _keep_progress(
        self, err: AiosError, base: ContextSnapshot, progressed: ContextSnapshot
    ) -> None:
        """A retryable failure after output was produced (and maybe streamed to the agent): store
        it like a suspension, so that a fallback dispatched with `resume` continues it instead of
        sending the agent the same text twice."""
        unchanged = progressed.partial == base.partial and progressed.chunks == base.chunks
        if err.retryable and not unchanged:
            await self.deps.contexts.put(progressed)
            err.details["resumable"] = True

    # --- embeddings ----------------------------------------------------------------------------
    async def _embed(self, req: ExecRequest, p: LlmEmbed, run: Run, spent: _Spent) -> EmbedReply:
        backend = self._backend(p.model, "embedding", req.backend)
        body = embed_body(p, backend)
        box: list[dict[str, Any]] = []

        async def call() -> None:
            try:
                box.append(await backend.client.post("/embeddings", body))
            except Exception as exc:
                raise translate(exc, backend.name) from exc

        if await _race(call(), run) == "cancel":
            raise AiosError("cancelled", "cancelled while running", retryable=False)
        usage, vectors = embeddings(box[0], backend.name)
        spent.add(usage)
        if len(vectors) != len(p.input):
            raise AiosError(
                "backend_error",
                f"{backend.name}: {len(vectors)} vectors for {len(p.input)} inputs",
                details={"backend": backend.name},
            )
        return EmbedReply(model=p.model, backend=backend.name, vectors=vectors, usage=usage)

    # --- helpers -------------------------------------------------------------------------------
    def _backend(self, model: str, kind: ModelKind, name: str | None) -> Backend:
        m = self.deps.models.get(model)
        if m is None:
            raise AiosError(
                "not_found",
                f"unknown model {model!r}",
                details={"models": list[JsonValue](sorted(self.deps.models))},
            )
        if m.kind != kind:
            use = "llm.embed" if m.kind == "embedding" else "llm.chat"
            raise AiosError("invalid_request", f"model {model!r} is a {m.kind} model: use {use}")
        if name is None:
            return m.backends[0]
        for b in m.backends:
            if b.name == name:
                return b
        # Replicas with different configs (a rolling update): another replica or backend may serve.
        raise AiosError(
            "backend_unavailable",
            f"this llm replica has no backend {name!r} for model {model!r}",
            details={"backend": name},
        )


async def _race(work: Coroutine[Any, Any, None], run: Run) -> Action | None:
    """Run `work` until it ends (None) or a control action stops it first (the action).

    `work` runs in its own task so that stopping it (or the exec's deadline) cancels it at once,
    which closes the HTTP request to the backend.
    """
    task = asyncio.ensure_future(work)
    try:
        waits: set[asyncio.Future[Any]] = {task, run.stopped}
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if not task.cancelled():
        task.result()  # re-raise the call's error
        return None
    return run.stopped.result()


def _deadline(req: ExecRequest) -> AiosError:
    return AiosError(
        "deadline_exceeded",
        "the deadline passed before the backend finished",
        details={"backend": req.backend} if req.backend else {},
    )
