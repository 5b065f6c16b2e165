"""The protocol package and the SDK's error mapping: validation, ids, subjects, wire format."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from aios_schemas import (
    ERROR_CODES,
    AiosError,
    ErrorReply,
    LlmChat,
    Namespace,
    Syscall,
    SyscallResult,
    decode,
    decode_reply,
    encode,
    error_headers,
    new_id,
)
from aios_sdk import errors as sdk_errors


def chat(**kw: object) -> LlmChat:
    return LlmChat.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_ids_are_uuid7_and_time_sortable() -> None:
    ids = [new_id() for _ in range(200)]
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert len(set(ids)) == 200
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)  # the ms timestamp prefix is monotonic


def test_syscall_envelope_is_strict() -> None:
    ok = Syscall(id=new_id(), agent="agent-1", token="t", payload=chat())
    assert ok.kind == "llm.chat"
    raw = json.loads(ok.model_dump_json())
    for bad in (
        {**raw, "extra": 1},
        {**raw, "agent": "no spaces allowed"},
        {**raw, "payload": {**raw["payload"], "kind": "llm.nope"}},
        {**raw, "payload": {**raw["payload"], "temperature": 3}},
        {**raw, "payload": {**raw["payload"], "messages": []}},
        {**raw, "id": "short"},
    ):
        with pytest.raises(ValidationError):
            Syscall.model_validate(bad)


def test_decode_turns_bad_input_into_invalid_request_naming_the_field() -> None:
    with pytest.raises(AiosError) as info:
        decode(b'{"model": "m", "messages": [{"role": "robot"}]}', LlmChat)
    assert info.value.code == "invalid_request"
    assert "messages.0.role" in info.value.message
    with pytest.raises(AiosError) as info:
        decode(b"not json", LlmChat)
    assert info.value.code == "invalid_request"


def test_error_replies_round_trip_through_the_wire_format() -> None:
    err = AiosError("not_found", "no such model", details={"model": "x"})
    with pytest.raises(AiosError) as info:
        decode_reply(encode(err.to_reply()), error_headers(), SyscallResult)
    assert info.value.code == "not_found" and info.value.details == {"model": "x"}
    assert not info.value.retryable
    assert AiosError("backend_unavailable", "down").retryable


@pytest.mark.parametrize("code", ERROR_CODES)
def test_sdk_has_one_exception_class_per_code(code: str) -> None:
    exc = sdk_errors.error_from_reply(ErrorReply(code=code, message="m"))  # type: ignore[arg-type]
    assert exc.code == code
    assert isinstance(exc, AiosError)
    assert type(exc).__name__ != "AiosError"


def test_namespaces_isolate_subjects_and_streams() -> None:
    default, test = Namespace(), Namespace("t1")
    assert default.sys("llm.chat", "bob") == "aios.v1.sys.bob.llm.chat"
    assert test.sys("llm.chat", "bob") == "t1.aios.v1.sys.bob.llm.chat"
    assert Namespace.sys_agent(test.sys("llm.chat", "bob")) == "bob"
    assert Namespace.sys_agent(Namespace("sys").sys("llm.chat", "bob")) == "bob"
    assert default.syscalls_stream == "AIOS_SYSCALLS" and test.syscalls_stream == "AIOS_SYSCALLS_t1"
    assert test.result("bob", "abc") == "t1.aios.v1.res.bob.abc"
    assert test.ctl_for("scheduler", "cancel", "bob") == "t1.aios.v1.ctl.scheduler.cancel.bob"
    with pytest.raises(ValueError):
        Namespace("bad.name")
