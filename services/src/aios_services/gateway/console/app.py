"""The console's HTTP side: the operator-token check, the JSON API each page reads, the event stream
that pushes live numbers, and the bundled static files. Mounted under `/ui` by the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import JsonValue, ValidationError

from aios_schemas import AiosError, FileContent, FileList, FilesList, FilesRead, FilesVersions, FileVersions
from aios_schemas.explore import SyscallListQuery
from aios_schemas.memory import MemoryListReply

from ...runtime import Bus, cancel_and_wait, keep_running
from . import views
from .hub import Hub
from .ops import Operator

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COOKIE = "aios_console"
STATIC = Path(str(resources.files(__package__) / "static"))
TEXT_LIMIT = 256 * 1024  # a file's bytes shown inline up to this size
HUB: web.AppKey[Hub] = web.AppKey("hub", Hub)
OPS: web.AppKey[Operator] = web.AppKey("ops", Operator)
TOKEN: web.AppKey[str] = web.AppKey("token", str)
_STATUS = {
    "invalid_request": 400,
    "not_found": 404,
    "forbidden": 403,
    "conflict": 409,
    "unauthenticated": 401,
}


def mount(app: web.Application, bus: Bus, token: str, models: Mapping[str, Any]) -> None:
    """Serve the console at `/ui` of `app`; with no token it answers only that it is off."""
    app.add_subapp("/ui", console_app(bus, token, models))


def console_app(bus: Bus, token: str, models: Mapping[str, Any]) -> web.Application:
    ui = web.Application(middlewares=[_guard(token)])
    ops = Operator(bus)
    hub = Hub(ops, models)
    ui[OPS], ui[HUB], ui[TOKEN] = ops, hub, token
    ui.cleanup_ctx.append(_background)
    ui.on_shutdown.append(_closing)
    r = ui.router
    r.add_get("", _index)
    r.add_get("/", _index)
    r.add_get("/login", _login_form)
    r.add_post("/login", _login)
    r.add_post("/logout", _logout)
    r.add_get("/api/overview", _overview)
    r.add_get("/api/agents", _agents)
    r.add_get("/api/live", _live)
    r.add_get("/api/syscalls", _syscalls)
    r.add_get("/api/syscalls/{id}", _timeline)
    r.add_get("/api/approvals", _approvals)
    r.add_post("/api/approvals/{id}", _decide)
    r.add_get("/api/agents/{agent}/memory", _memory)
    r.add_get("/api/agents/{agent}/files", _files)
    r.add_get("/api/agents/{agent}/file", _file)
    r.add_static("/static", STATIC, append_version=False)
    return ui


async def _background(ui: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(keep_running("console", ui[HUB].run))
    yield
    await cancel_and_wait(task)


async def _closing(ui: web.Application) -> None:
    await ui[HUB].close()  # open event streams end, so the gateway stops without waiting on them


# --- the operator token ---------------------------------------------------------------------------
def _guard(token: str) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token:
            return web.Response(
                status=404, text="The console is off: the gateway has no AIOS_GATEWAY_CONSOLE_TOKEN."
            )
        if request.path.startswith(("/ui/static/", "/ui/login")):
            return await handler(request)
        given = request.query.get("token")
        if given is not None and request.method == "GET" and _same(given, token):
            # From the link `aios up` prints: keep the token in a cookie, out of the address bar.
            rest = {k: v for k, v in request.query.items() if k != "token"}
            target = request.path + (
                "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in rest.items()) if rest else ""
            )
            response = web.HTTPSeeOther(target)
            _set_cookie(response, token, request)
            raise response
        if not _same(request.cookies.get(COOKIE, ""), token):
            if request.path.startswith("/ui/api/"):
                return web.json_response(
                    {"error": {"code": "unauthenticated", "message": "log in"}}, status=401
                )
            raise web.HTTPSeeOther("/ui/login")
        # A cross-site form cannot set this header, so a state change needs the page's own script.
        if request.method == "POST" and request.headers.get("X-AIOS-Console") != "1":
            return web.json_response(
                {"error": {"code": "forbidden", "message": "missing X-AIOS-Console"}}, status=403
            )
        return await handler(request)

    return guard


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def _set_cookie(response: web.StreamResponse, token: str, request: web.Request) -> None:
    response.set_cookie(
        COOKIE, token, path="/ui", httponly=True, samesite="Strict", secure=request.secure, max_age=30 * 86400
    )


async def _login_form(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})


async def _login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    given = str(form.get("token", "")).strip()
    if not _same(given, request.app[TOKEN]):
        raise web.HTTPSeeOther("/ui/login?failed=1")
    response = web.HTTPSeeOther("/ui/")
    _set_cookie(response, given, request)
    raise response


async def _logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(COOKIE, path="/ui")
    raise response


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


# --- the API --------------------------------------------------------------------------------------
def _json(data: JsonValue | dict[str, JsonValue], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _api(handler: Handler) -> Handler:
    """A kernel error as a JSON error body with its status; a bad query parameter as 400."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        request.app[HUB].touch()
        try:
            return await handler(request)
        except AiosError as exc:
            return _json({"error": {"code": exc.code, "message": exc.message}}, _STATUS.get(exc.code, 502))
        except (ValidationError, ValueError) as exc:
            return _json({"error": {"code": "invalid_request", "message": _why(exc)}}, 400)

    return wrapped


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        return f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    return str(exc)


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}: a whole number, not {raw[:20]!r}") from None


async def _fresh(hub: Hub) -> views.Snapshot:
    if hub.version == 0 or time.time() - hub.snapshot.ts > 2 * hub.every_s:
        await hub.refresh()
    return hub.snapshot


@_api
async def _overview(request: web.Request) -> web.StreamResponse:
    return _json(views.overview(await _fresh(request.app[HUB])))


@_api
async def _agents(request: web.Request) -> web.StreamResponse:
    s = await _fresh(request.app[HUB])
    q = request.query
    page = views.agents(s, page=_int(request, "page", 0), sort=q.get("sort", "calls"), q=q.get("q", ""))
    return _json(await _with_quotas(request.app[OPS], page))


async def _with_quotas(ops: Operator, page: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """The page's rows with what each agent has left of its quota (asked for the page's agents
    only: usage lives in KV, one read per agent and period). Without an answer, rows go as they are."""
    rows = page.get("rows")
    if not isinstance(rows, list) or not rows:
        return page
    names = [str(r["agent"]) for r in rows if isinstance(r, dict)]
    try:
        left = (await ops.quotas(names)).agents
    except AiosError as exc:
        log.debug("no quotas for the console: %s", exc.message)
        return page
    for r in rows:
        if isinstance(r, dict):
            r["quota"] = views.quota_text(left.get(str(r["agent"]), []))
    return page


@_api
async def _approvals(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    hub.snapshot.approvals = await hub.ops.approvals()
    return _json(views.approvals(hub.snapshot))


async def _live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the page's view (`overview`, `agents` with its page, sort and filter, or
    `approvals`) each time the snapshot changes, and the number of pending approvals for the menu."""
    hub = request.app[HUB]
    q = request.query
    view = q.get("view", "overview")
    page, sort, text = _int(request, "page", 0), q.get("sort", "calls"), q.get("q", "")
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    hub.watchers += 1
    hub.touch()
    seen = 0
    try:
        await response.write(b"retry: 2000\n\n")
        while not hub.closing.is_set():
            seen = await hub.wait_change(seen, timeout=15.0)
            if hub.closing.is_set():
                break
            s = hub.snapshot
            data: dict[str, JsonValue]
            if view == "agents":
                data = await _with_quotas(request.app[OPS], views.agents(s, page=page, sort=sort, q=text))
            elif view == "approvals":
                data = views.approvals(s)
            else:
                data = views.overview(s)
            data["pending_approvals"] = len(s.approvals)
            data["problems"] = dict(s.problems)
            await response.write(
                f"event: {view}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
            )
    except ConnectionResetError:  # the browser left (a cancel, e.g. the gateway stopping, propagates)
        pass
    finally:
        hub.watchers -= 1
    return response


_STATES = {"accepted", "queued", "dispatched", "suspended", "resumed", "done", "failed", "cancelled"}


@_api
async def _syscalls(request: web.Request) -> web.StreamResponse:
    q = request.query
    since = float(q["since_min"]) if q.get("since_min") else None
    state = q.get("state") or None
    if state is not None and state not in _STATES:
        raise ValueError(f"state: one of {', '.join(sorted(_STATES))}")
    query = SyscallListQuery(
        agent=q.get("agent") or None,
        kind=q.get("kind") or None,
        state=state,
        since=None if since is None else time.time() - since * 60,
        offset=_int(request, "offset", 0),
        limit=min(_int(request, "limit", 50), 200),
    )
    reply = await request.app[OPS].syscalls(query)
    return _json(
        {"syscalls": [s.model_dump() for s in reply.syscalls], "more": reply.more, "offset": query.offset}
    )


@_api
async def _timeline(request: web.Request) -> web.StreamResponse:
    sid = request.match_info["id"]
    return _json(views.timeline(sid, await request.app[OPS].trace(sid)))


@_api
async def _decide(request: web.Request) -> web.StreamResponse:
    sid = request.match_info["id"]
    try:
        body = await request.json()
    except ValueError:
        raise ValueError("the body is not JSON") from None
    if not isinstance(body, dict) or body.get("action") not in ("approve", "reject"):
        raise ValueError('action: "approve" or "reject"')
    args = body.get("args")
    if args is not None and not isinstance(args, dict):
        raise ValueError("args: a JSON object")
    reason = str(body.get("reason") or "")
    if body["action"] == "reject" and not reason.strip():
        raise ValueError("reason: say why it is rejected")
    a = await request.app[OPS].decide(sid, body["action"] == "approve", args, reason)
    hub = request.app[HUB]
    hub.snapshot.approvals = [x for x in hub.snapshot.approvals if x.id != sid]
    return _json(a.model_dump(mode="json"))


@_api
async def _memory(request: web.Request) -> web.StreamResponse:
    agent = request.match_info["agent"]
    offset = _int(request, "offset", 0)
    got = (await request.app[OPS].memory(agent, offset, 50)).result
    assert isinstance(got, MemoryListReply)
    return _json(
        {"records": [r.model_dump(mode="json") for r in got.records], "next_offset": got.next_offset}
    )


@_api
async def _files(request: web.Request) -> web.StreamResponse:
    agent = request.match_info["agent"]
    payload = FilesList(
        prefix=request.query.get("prefix", ""), after=request.query.get("after") or None, limit=100
    )
    got = (await request.app[OPS].files(agent, payload)).result
    assert isinstance(got, FileList)
    return _json({"entries": [e.model_dump(mode="json") for e in got.entries], "truncated": got.truncated})


@_api
async def _file(request: web.Request) -> web.StreamResponse:
    agent, path = request.match_info["agent"], request.query.get("path", "")
    version = _int(request, "version", 0) or None
    ops = request.app[OPS]
    got = (await ops.files(agent, FilesRead(path=path, version=version))).result
    assert isinstance(got, FileContent)
    versions = (await ops.files(agent, FilesVersions(path=path, limit=100))).result
    assert isinstance(versions, FileVersions)
    text: str | None = None
    if got.content is not None and len(got.content) <= TEXT_LIMIT:
        with contextlib.suppress(UnicodeDecodeError):
            text = got.content.decode()
    return _json(
        {
            "info": got.info.model_dump(mode="json"),
            "text": text,
            "binary": text is None,
            "versions": [v.model_dump(mode="json") for v in versions.versions],
        }
    )
