"""What crosses the bus stays bounded: an error reply about any input fits well under the max
payload, and input nested too deep is an invalid_request, not a crash."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue

from aios_schemas import AiosError, Syscall, decode, encode
from aios_schemas.wire import MAX_LISTED_ERRORS, MAX_MESSAGE_CHARS


class Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[int]
    meta: dict[str, JsonValue] = {}


def test_an_error_with_50000_entries_lists_a_few_and_counts_the_rest() -> None:
    with pytest.raises(AiosError) as info:
        decode(json.dumps({"items": ["x"] * 50_000}).encode(), Doc)
    err = info.value
    assert err.code == "invalid_request"
    assert len(err.details["errors"]) == MAX_LISTED_ERRORS  # type: ignore[arg-type]
    assert err.details["error_count"] == 50_000
    assert err.details["errors_omitted"] == 50_000 - MAX_LISTED_ERRORS
    assert "49999 more errors" in err.message
    assert len(encode(err.to_reply())) < 10_000


def test_huge_keys_and_locations_are_cut() -> None:
    key = "k" * 900_000
    with pytest.raises(AiosError) as info:
        decode(json.dumps({"items": [], "meta": {}, key: 1}).encode(), Doc)
    assert len(info.value.message) <= MAX_MESSAGE_CHARS + 40
    assert len(encode(info.value.to_reply())) < 5_000


@pytest.mark.parametrize(
    "body",
    [
        b'{"items": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        b'{"items": [], "meta": ' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
        b'{"items": [1], "meta": {"s": "\xff\xfe\xfd"}}',
        b"\xff\xfe\xfd",
    ],
)
def test_deep_or_non_utf8_input_is_invalid_request(body: bytes) -> None:
    with pytest.raises(AiosError) as info:
        decode(body, Doc)
    assert info.value.code == "invalid_request"
    with pytest.raises(AiosError) as info:
        decode(body, Syscall)
    assert info.value.code == "invalid_request"
