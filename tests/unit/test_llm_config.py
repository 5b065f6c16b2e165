"""The LLM catalogue: a bad config is a clear error naming the key; API keys come from the env."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_services.llm.config import ConfigError, api_keys, load_config, parse_config
from aios_services.llm.main import catalogue

GOOD = """
[models."llama3:8b"]
[[models."llama3:8b".backends]]
name = "vllm"
base_url = "http://127.0.0.1:8000/v1"
slots = 32
capabilities = { continue_partial = true, priority = true }

[[models."llama3:8b".backends]]
name = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
api_key_env = "OPENAI_KEY"
rpm = 500
tpm = 200000

[models.embed]
kind = "embedding"
backends = [{ name = "emb", base_url = "http://127.0.0.1:8001/v1" }]
"""


def test_good_config_and_its_catalogue() -> None:
    cfg = parse_config(GOOD)
    entries = {e.name: e for e in catalogue(cfg)}
    chat, emb = entries["llama3:8b"], entries["embed"]
    assert chat.kind == "chat" and emb.kind == "embedding"
    assert [(b.name, b.slots, b.continue_partial, b.priority) for b in chat.backends] == [
        ("vllm", 32, True, True),
        ("openai", 8, False, False),
    ]
    assert chat.backends[1].rpm == 500 and chat.backends[1].tpm == 200000


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            '[models.m]\nbackends = [{ name = "a", base_url = "http://x/v1", slots = 0 }]',
            "models.m.backends.0.slots",
        ),
        ('[models.m]\nbackends = [{ name = "a", base_url = "ftp://x" }]', "models.m.backends.0.base_url"),
        (
            '[models.m]\nbackends = [{ name = "a", base_url = "http://x", sluts = 3 }]',
            "models.m.backends.0.sluts",
        ),
        ('[models.m]\nkind = "image"\nbackends = [{ name = "a", base_url = "http://x" }]', "models.m.kind"),
        ("[models.m]\nbackends = []", "models.m.backends"),
        ('[models.m]\nbackends = [{ base_url = "http://x" }]', "models.m.backends.0.name"),
        (
            '[models.m]\nbackends = [{ name = "a", base_url = "http://x", '
            'capabilities = { priority = "maybe" } }]',
            "models.m.backends.0.capabilities.priority",
        ),
    ],
)
def test_bad_config_names_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=f"llm.toml: {key.replace('.', '[.]')}:"):
        parse_config(text, "llm.toml")


def test_duplicate_backend_names_are_refused() -> None:
    text = """
[models.a]
backends = [{ name = "same", base_url = "http://x" }]
[models.b]
backends = [{ name = "same", base_url = "http://y" }]
"""
    with pytest.raises(ConfigError, match="'same' is used twice"):
        parse_config(text)


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"llm\.toml"):
        parse_config("[models.m\n", "llm.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_api_keys_come_from_the_named_variables() -> None:
    cfg = parse_config(GOOD)
    assert api_keys(cfg, {"OPENAI_KEY": "sk-1"}) == {"openai": "sk-1"}
    with pytest.raises(
        ConfigError, match=r"models\.llama3:8b\.backends\.1\.api_key_env: .*OPENAI_KEY is not set"
    ):
        api_keys(cfg, {})
