"""The sandbox's worker process (`python -m aios_services.tools.runner`): runs tool functions one
at a time, each request a JSON line on stdin, each answer a JSON line on a private copy of stdout.

Imports only the standard library, so the process stays small: a tool's memory limit is its address
space (RLIMIT_AS) above what this process already uses. A tool's own prints go to stderr (the
service's log), never into the protocol. Answers: `{"ok": output}`, or `{"error": {"code",
"message", "memory"}}` (`code` is the exception's `aios_code`, else `backend_error`).
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import traceback
from collections.abc import Callable
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def address_space() -> int:
    """Bytes of address space this process uses now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * _PAGE


def load(path: str, cache: dict[str, Callable[..., Any]]) -> Callable[..., Any]:
    fn = cache.get(path)
    if fn is None:
        module, _, attr = path.partition(":")
        fn = getattr(importlib.import_module(module), attr)
        cache[path] = fn
    return fn


def run(req: dict[str, Any], cache: dict[str, Callable[..., Any]]) -> dict[str, Any]:
    fn = load(req["function"], cache)
    limit = req.get("memory_bytes")
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (address_space() + int(limit), hard))
    try:
        out = fn(**req.get("arguments", {}), **req.get("options", {}))
        return {"ok": json.loads(json.dumps(out))}  # JSON or an error, here, not in the service
    except MemoryError:
        return {"error": {"code": "backend_error", "message": "out of memory", "memory": True}}
    except Exception as exc:
        code = getattr(exc, "aios_code", None)
        if code is not None:  # the tool refused its input, on purpose
            return {"error": {"code": code, "message": str(exc), "memory": False}}
        traceback.print_exc(file=sys.stderr)
        message = f"{type(exc).__name__}: {exc}"
        return {"error": {"code": "backend_error", "message": message, "memory": False}}
    finally:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


def main() -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what a tool prints goes to stderr
    cache: dict[str, Callable[..., Any]] = {}
    for line in sys.stdin:
        try:
            answer = run(json.loads(line), cache)
        except Exception as exc:  # a tool that cannot be loaded, a bad request
            answer = {"error": {"code": "backend_error", "message": f"{type(exc).__name__}: {exc}"}}
        try:
            proto.write(json.dumps(answer) + "\n")
        except MemoryError:
            proto.write('{"error": {"code": "backend_error", "message": "out of memory", "memory": true}}\n')


if __name__ == "__main__":
    main()
