"""Built-in tools, run in the sandbox's worker processes (standard library only): `calc`, a safe
arithmetic evaluator (an AST walk, never `eval`), and `web_fetch` (off unless the operator turns it
on). Their schemas are in `BUILTINS`; `registry` turns them into tools."""

from __future__ import annotations

import ast
import ipaddress
import math
import operator
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION = 1000
MAX_EXPONENT = 10_000
MAX_INT_BITS = 4096  # an integer result (or step) larger than this is refused, not computed


class ToolInputError(ValueError):
    """The arguments passed the schema but make no sense to the tool: `invalid_request`."""

    aios_code = "invalid_request"


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _check(value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolInputError("only numbers")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolInputError(f"an integer over {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolInputError("the result is not a finite number")
    return value


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        return _check(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(_UNARY[type(node.op)](_eval(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT:
                raise ToolInputError(f"an exponent over {MAX_EXPONENT}")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and right > 0 and int(left).bit_length() * int(right) > MAX_INT_BITS:
                raise ToolInputError(f"an integer over {MAX_INT_BITS} bits")  # before it is computed
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
            big = left.bit_length() + right.bit_length() > MAX_INT_BITS + 1
            if big:
                raise ToolInputError(f"an integer over {MAX_INT_BITS} bits")
        return _check(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not node.args or len(node.args) > 16:
            raise ToolInputError(f"{node.func.id}() takes 1 to 16 positional numbers")
        return _check(_FUNCTIONS[node.func.id](*(_eval(a) for a in node.args)))
    what = type(node).__name__
    raise ToolInputError(f"{what} is not allowed (numbers, + - * / // % **, {', '.join(_FUNCTIONS)})")


def calc(expression: str) -> dict[str, int | float]:
    """Evaluate an arithmetic expression."""
    if len(expression) > MAX_EXPRESSION:
        raise ToolInputError(f"the expression is over {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ToolInputError(f"not an expression: {exc.msg}") from None
    try:
        return {"value": _eval(tree)}
    except ZeroDivisionError:
        raise ToolInputError("division by zero") from None
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, ToolInputError):
            raise
        raise ToolInputError(f"{type(exc).__name__}: {exc}") from None


def _host_allowed(host: str, allowed: list[str], loopback_only: bool) -> bool:
    if allowed and host not in allowed:
        return False
    if loopback_only:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False
    return True


def web_fetch(
    url: str,
    max_bytes: int = 65536,
    *,
    hosts: list[str] | None = None,
    loopback_only: bool = False,
    timeout_s: float = 10.0,
) -> dict[str, object]:
    """GET an http(s) URL; the text of its body, cut at `max_bytes`. `hosts`, `loopback_only`:
    options the operator sets (never the agent)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolInputError("only http and https URLs")
    if not _host_allowed(parts.hostname, hosts or [], loopback_only):
        raise ToolInputError(f"host {parts.hostname!r} is not allowed")
    req = urllib.request.Request(url, headers={"User-Agent": "aios-web-fetch/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read(max_bytes + 1)
            status, ctype = resp.status, resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        body, status, ctype = exc.read(max_bytes + 1), exc.code, exc.headers.get("Content-Type", "")
    return {
        "status": status,
        "content_type": ctype,
        "text": body[:max_bytes].decode("utf-8", errors="replace"),
        "truncated": len(body) > max_bytes,
    }


CALC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "expression": {
            "type": "string",
            "maxLength": MAX_EXPRESSION,
            "description": "Arithmetic: numbers, + - * / // % **, parentheses, pi, e, sqrt(), log(),"
            " sin(), cos(), abs(), round(), min(), max(), floor(), ceil().",
        }
    },
    "required": ["expression"],
    "additionalProperties": False,
}
WEB_FETCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "maxLength": 2048, "description": "An http or https URL."},
        "max_bytes": {"type": "integer", "minimum": 1, "maximum": 1048576, "description": "Cut here."},
    },
    "required": ["url"],
    "additionalProperties": False,
}
# name -> (function, description, input schema, output schema, side effects)
BUILTINS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any] | None, str]] = {
    "calc": (
        f"{__name__}:calc",
        "Evaluate an arithmetic expression exactly (integers) or in floating point.",
        CALC_SCHEMA,
        {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]},
        "none",
    ),
    "web_fetch": (
        f"{__name__}:web_fetch",
        "Fetch a web page (HTTP GET) and return its text.",
        WEB_FETCH_SCHEMA,
        None,
        "none",
    ),
}
