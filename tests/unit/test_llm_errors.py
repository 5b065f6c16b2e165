"""Backend failures become AIOS error codes, with the backend named for the scheduler's fallback."""

from __future__ import annotations

import aiohttp
import pytest
from multidict import CIMultiDict

from aios_services.llm.backends import retry_after_s, translate
from aios_services.llm.http import BackendHTTPError, BackendStreamError, error_message


def status_error(status: int, headers: dict[str, str] | None = None) -> BackendHTTPError:
    return BackendHTTPError(status, "boom", CIMultiDict(headers or {}))


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, "invalid_request", False),
        (422, "invalid_request", False),
        (401, "backend_error", False),
        (404, "backend_error", False),
        (408, "backend_unavailable", True),
        (500, "backend_unavailable", True),
        (503, "backend_unavailable", True),
        (429, "rate_limited", True),
    ],
)
def test_status_codes(status: int, code: str, retryable: bool) -> None:
    err = translate(status_error(status), "b1")
    assert (err.code, err.retryable, err.details["backend"], err.details["status"]) == (
        code,
        retryable,
        "b1",
        status,
    )


def test_rate_limit_carries_retry_after() -> None:
    err = translate(status_error(429, {"retry-after": "2", "retry-after-ms": "1500"}), "b")
    assert err.details["retry_after_s"] == 1.5
    assert translate(status_error(429, {"retry-after": "3"}), "b").details["retry_after_s"] == 3.0
    assert "retry_after_s" not in translate(status_error(429), "b").details


def test_retry_after_as_http_date() -> None:
    after = retry_after_s(CIMultiDict({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert after == 0.0  # in the past
    assert retry_after_s(CIMultiDict({"retry-after": "soon"})) is None


def test_connection_errors_and_timeouts_are_unavailable() -> None:
    for exc in (
        aiohttp.ClientConnectorError(
            aiohttp.client_reqrep.ConnectionKey("b", 80, False, True, None, None, None),
            OSError(111, "refused"),
        ),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("response cut"),
        TimeoutError(),
        ConnectionResetError(),
    ):
        err = translate(exc, "b")
        assert (err.code, err.retryable, err.details) == ("backend_unavailable", True, {"backend": "b"})


def test_anything_else_is_a_backend_error() -> None:
    for exc in (ValueError("bad chunk"), BackendStreamError("engine died")):
        err = translate(exc, "b")
        assert (err.code, err.retryable) == ("backend_error", False)


def test_error_bodies_are_read_for_their_message() -> None:
    assert error_message(b'{"error": {"message": "model not found", "code": 404}}') == "model not found"
    assert error_message(b'{"error": "overloaded"}') == "overloaded"
    assert error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert error_message(b"<html>502 Bad Gateway</html>") == "<html>502 Bad Gateway</html>"
