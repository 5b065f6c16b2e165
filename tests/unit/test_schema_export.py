"""`aios schema export`: every protocol model as a valid JSON Schema, and an AsyncAPI 3.0 document
whose subjects are the ones `Namespace` makes and whose messages are those schemas."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from typer.testing import CliRunner

import aios_schemas
from aios_schemas import ErrorReply, LlmChat, Namespace, Syscall, SyscallResult, new_id
from aios_schemas.envelope import AnyPayload, AnyResult
from aios_schemas.export import CONTROLS, asyncapi, json_schemas, message_models, syscall_kinds
from aios_services.cli.main import app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return json.loads(json.dumps(asyncapi()))  # as a client reads it: plain JSON


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    return json.loads(json.dumps(json_schemas()))


def _union(tp: object) -> set[type[BaseModel]]:
    return set(getattr(tp, "__args__", ()))


def test_every_public_model_is_exported() -> None:
    models = message_models()
    public = {
        getattr(aios_schemas, name)
        for name in aios_schemas.__all__
        if isinstance(getattr(aios_schemas, name), type)
        and issubclass(getattr(aios_schemas, name), BaseModel)
    }
    assert public <= set(models.values())
    assert _union(AnyPayload) | _union(AnyResult) <= set(models.values())
    for name in (
        "Syscall",
        "SyscallResult",
        "ErrorReply",
        "SyscallEvent",
        "StreamChunk",
        "SpanBatch",
        "TraceQuery",
    ):
        assert name in models
    assert all(models[name].__name__ == name for name in models)


def test_every_schema_is_valid_json_schema_and_accepts_what_the_model_makes(schemas: dict[str, Any]) -> None:
    assert set(schemas) == set(message_models())
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    call = Syscall(
        id=new_id(),
        agent="agent-1",
        payload=LlmChat.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        deadline=time.time() + 30,
    )
    syscall = jsonschema.Draft202012Validator(schemas["Syscall"])
    syscall.validate(call.model_dump(mode="json"))
    assert not syscall.is_valid({**call.model_dump(mode="json"), "surprise": 1})  # extra="forbid"
    assert not syscall.is_valid({**call.model_dump(mode="json"), "agent": "a.b"})  # one subject token
    failed = SyscallResult.fail(call.id, ErrorReply(code="not_found", message="no such model"))
    jsonschema.validate(failed.model_dump(mode="json"), schemas["SyscallResult"])
    assert not jsonschema.Draft202012Validator(schemas["ErrorReply"]).is_valid(
        {"kind": "error", "code": "no_such_code", "message": "x"}
    )


def test_asyncapi_messages_reference_the_schemas(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    components = doc["components"]
    assert set(message_models()) <= set(components["schemas"])
    for name, message in components["messages"].items():
        assert message["payload"] == {"$ref": f"#/components/schemas/{name}"}
    for key, channel in doc["channels"].items():
        for ref in channel["messages"].values():
            assert ref["$ref"].removeprefix("#/components/messages/") in components["messages"], key
        for ref in channel.get("parameters", {}).values():
            assert ref["$ref"].removeprefix("#/components/parameters/") in components["parameters"]
    for key, op in doc["operations"].items():
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        assert channel in doc["channels"], key
        for ref in op["messages"] + op.get("reply", {}).get("messages", []):
            where, _, name = ref["$ref"].removeprefix("#/channels/").partition("/messages/")
            assert name in doc["channels"][where]["messages"], (key, ref)
    # The document's schemas work on their own: a syscall validates against them, refs and all.
    registry = Registry().with_resource(
        "urn:aios", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    example = components["messages"]["Syscall"]["examples"][0]["payload"]
    validator = jsonschema.Draft202012Validator(
        {"$ref": "urn:aios#/components/schemas/Syscall"}, registry=registry
    )
    validator.validate(example)
    assert Syscall.model_validate(example).kind == "llm.chat"
    assert SyscallResult.model_validate(components["messages"]["SyscallResult"]["examples"][0]["payload"])


def test_asyncapi_subjects_are_the_namespace_subjects() -> None:
    ns = Namespace("t42")
    doc = json.loads(json.dumps(asyncapi(ns)))
    channels = doc["channels"]
    fill = {
        "agent": "bob",
        "kind": "llm.chat",
        "id": "ID",
        "state": "done",
        "service": "llm",
        "what": "denied",
    }

    def subject(key: str) -> str:
        return str(channels[key]["address"]).format(**fill)

    assert subject("sys") == ns.sys("llm.chat", "bob")
    assert Namespace.sys_agent(subject("sys")) == "bob"
    assert subject("res") == ns.result("bob", "ID")
    assert subject("stream") == ns.stream("bob", "ID")
    assert subject("evt.syscall") == ns.event("done")
    assert subject("evt.audit") == ns.audit("denied")
    assert subject("evt.spans") == ns.service_event("llm", "spans")
    assert subject("evt.agent.spans") == ns.agent_spans("bob")
    assert Namespace.spans_agent(subject("evt.agent.spans")) == "bob"
    assert subject("ctl.health") == ns.ctl("llm", "health")
    assert subject("ctl.scheduler.cancel") == ns.ctl_for("scheduler", "cancel", "bob")
    assert subject("ctl.scheduler.result") == ns.ctl_for("scheduler", "result", "bob")
    assert subject("exec") == ns.exec("llm")
    assert channels["inbox"]["address"] is None
    assert doc["components"]["parameters"]["kind"]["enum"] == syscall_kinds()
    assert {"llm.chat", "memory.search", "files.write", "tools.call"} <= set(syscall_kinds())
    assert all(str(c["address"]).startswith("t42.aios.v1.") for c in channels.values() if c["address"])


def _served_controls() -> set[tuple[str, str]]:
    """Every `ctl.<service>.<op>` the code names with literals (`ns.ctl("s", "op")`,
    `ns.ctl_for("s", "op", ...)`, `serve_agent_requests(bus, "s", "op", ...)`), constants resolved."""
    found: set[tuple[str, str]] = set()
    call = re.compile(
        r"(?:\.ctl|\.ctl_for|serve_agent_requests)\(\s*(?:bus,\s*)?\"([\w-]+)\",\s*(\"[\w-]+\"|[A-Z_]+)"
    )
    for path in [*ROOT.glob("services/src/aios_services/**/*.py"), *ROOT.glob("sdk/src/aios_sdk/**/*.py")]:
        text = path.read_text()
        for service, op in call.findall(text):
            if not op.startswith('"'):
                m = re.search(rf"^{op}\s*=\s*\"([\w-]+)\"", text, re.MULTILINE)
                assert m, f"{path}: cannot resolve {op}"
                op = m.group(1)
            found.add((service, op.strip('"')))
    return found


def test_control_table_matches_what_the_services_serve() -> None:
    declared = {(c.service, c.op) for c in CONTROLS}
    served = {(s, op) for s, op in _served_controls() if op not in ("health", "control")}  # every service's
    assert served, "the scan found nothing: the pattern no longer matches the code"
    missing, unused = served - declared, declared - served
    assert not missing, f"add {missing} (request and reply models) to CONTROLS in aios_schemas/export.py"
    assert not unused, f"CONTROLS in aios_schemas/export.py names {unused}, which nothing serves or asks"


def test_cli_writes_the_files(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "proto"
    result = runner.invoke(app, ["schema", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = {p.stem for p in (out / "schemas").glob("*.json")}
    assert files == set(message_models())
    written = json.loads((out / "asyncapi.json").read_text())
    assert written["channels"]["sys"]["address"] == "aios.v1.sys.{agent}.{kind}"
    assert json.loads((out / "schemas" / "Syscall.json").read_text())["title"] == "Syscall"
    assert str(out / "asyncapi.json") in result.output

    printed = runner.invoke(app, ["schema", "export", "--out", "-", "--namespace", "prod"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.output)["channels"]["res"]["address"] == "prod.aios.v1.res.{agent}.{id}"

    bad = runner.invoke(app, ["schema", "export", "--namespace", "a.b", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2
    assert not (tmp_path / "x").exists()
