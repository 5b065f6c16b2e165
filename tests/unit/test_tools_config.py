"""The tools service's configuration as `aios up` reads it (`[tools]` of aios.toml), and the
built-in calculator (an AST walk: no eval, bounded sizes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_services.cli.config import ConfigError, load_stack_config
from aios_services.tools.builtins import ToolInputError, calc
from aios_services.tools.mcp_source import tool_name
from aios_services.tools.settings import ToolsSettings

TOOLS = """
[tools]
web_fetch = true
web_fetch_hosts = ["example.org"]

[tools.tool.calc]
timeout_s = 2
max_concurrency = 8

[tools.tool.lookup]
function = "mypkg.tools:lookup"
input_schema = { type = "object", properties = { id = { type = "string" } }, required = ["id"] }
side_effects = "none"

[tools.mcp.github]
command = ["npx", "-y", "@modelcontextprotocol/server-github"]
tools = { delete_repo = { side_effects = "irreversible", requires_approval = true } }
"""


def load(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "aios.toml"
    path.write_text(text)
    return dict(load_stack_config(path, {}, env={}).tools_env)


def test_tools_section_reaches_the_service_as_its_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = load(tmp_path, TOOLS)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = ToolsSettings()  # type: ignore[call-arg]
    assert s.web_fetch and s.web_fetch_hosts == ["example.org"]
    assert s.tool["calc"].timeout_s == 2 and s.tool["lookup"].function == "mypkg.tools:lookup"
    assert s.mcp["github"].tools["delete_repo"].requires_approval is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tools]\nfoo = 1\n", "tools.foo: unknown key"),
        ("[tools.tool.x]\ninput_schema = { type = 'object' }\n", "tool 'x' needs a `function`"),
        ("[tools.tool.x]\nfunction = 'm:f'\n", "tool 'x' needs an input_schema"),
        ("[tools.tool.x]\nfunction = 'm:f'\ninput_schema = { type = 'nope' }\n", "not a valid JSON Schema"),
        ("[tools.tool.'a.b']\nfunction = 'm:f'\n", "must match"),
        ("[tools.tool.x]\nside_effects = 'some'\n", "tools.tool.x.side_effects"),
        ("[tools.mcp.s]\ncommand = ['a']\nurl = 'http://x/mcp'\n", "exactly one of"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(tmp_path, text)


def test_calc() -> None:
    assert calc("2**100 + 1") == {"value": 2**100 + 1}
    assert calc("(1 + 2) * 3 / 4") == {"value": 2.25}
    assert calc("sqrt(16) + max(1, 2, 3) - abs(-1) + round(2.6)") == {"value": 9.0}
    assert calc("-7 // 2 + 7 % 3") == {"value": -3}
    for bad, why in [
        ("__import__('os')", "not allowed"),
        ("(1).__class__", "not allowed"),
        ("[1, 2]", "not allowed"),
        ("x", "not allowed"),
        ("9**9**9", "exponent"),
        ("2**5000", "bits"),
        ("10**2000 * 10**2000", "bits"),
        ("1/0", "division by zero"),
        ("1e308 * 10", "finite"),
        ("(-8) ** 0.5", "only numbers"),
        ("1 +", "not an expression"),
        ("1" * 1001, "over 1000 characters"),
    ]:
        with pytest.raises(ToolInputError, match=why):
            calc(bad)


def test_mcp_names_are_openai_function_names() -> None:
    assert tool_name("gh", "create_issue") == "gh__create_issue"
    assert tool_name("gh", "notes.append/x") == "gh__notes_append_x"
    long = tool_name("gh", "x" * 100)
    assert len(long) == 64 and long != tool_name("gh", "x" * 99)
