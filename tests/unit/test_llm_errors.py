"""Backend failures become AIOS error codes, with the backend named for the scheduler's fallback."""

from __future__ import annotations

import httpx2
import openai
import pytest

from aios_services.llm.backends import retry_after_s, translate

REQ = httpx2.Request("POST", "http://b/v1/chat/completions")


def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    resp = httpx2.Response(status, headers=headers, request=REQ, json={"error": {"message": "boom"}})
    cls = {429: openai.RateLimitError, 400: openai.BadRequestError, 404: openai.NotFoundError}.get(
        status, openai.APIStatusError
    )
    return cls("boom", response=resp, body=None)


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
    after = retry_after_s(httpx2.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert after == 0.0  # in the past
    assert retry_after_s(httpx2.Headers({"retry-after": "soon"})) is None


def test_connection_errors_and_timeouts_are_unavailable() -> None:
    for exc in (
        openai.APIConnectionError(request=REQ),
        openai.APITimeoutError(request=REQ),
        httpx2.RemoteProtocolError("peer closed connection"),
    ):
        err = translate(exc, "b")
        assert (err.code, err.retryable, err.details) == ("backend_unavailable", True, {"backend": "b"})


def test_anything_else_is_a_backend_error() -> None:
    err = translate(ValueError("bad chunk"), "b")
    assert (err.code, err.retryable) == ("backend_error", False)
