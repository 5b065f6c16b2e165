"""`aios up`'s config: the operator's aios.toml validated with the services' own models, merged with
what `aios up` adds, passed on as the services read it; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from aios_services.cli.config import ConfigError, default_config_path, llm_toml, load_stack_config
from aios_services.cli.supervisor import SIM_MODEL, generated_models
from aios_services.llm.config import parse_config
from aios_services.llm.settings import LlmSettings
from aios_services.scheduler.settings import SchedulerSettings

GENERATED = generated_models("http://127.0.0.1:9000/v1", None)

OPERATOR = """
agents = ["researcher", "writer"]

[scheduler]
policy = "rr"
policy_params = { quantum = 0.5 }
quotas = { "researcher" = { calls = 100, tokens = 5000 } }
default_deadline_s = 30

[llm]
max_concurrency = 64

[models."llama3:8b"]
[[models."llama3:8b".backends]]
name = "vllm-a"
base_url = "http://10.0.0.5:8000/v1"
slots = 64
rpm = 600
capabilities = { continue_partial = true, priority = true }

[[models."llama3:8b".backends]]
name = "openai"
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
api_key_env = "TEST_OPENAI_KEY"

[models."sim-embed"]          # replaces the one `aios up` adds
kind = "embedding"
backends = [{ name = "ollama-embed", base_url = "http://127.0.0.1:11434/v1", slots = 2 }]
"""

ENV = {"TEST_OPENAI_KEY": "sk-test"}
QUOTAS = {"researcher": {"calls": 100, "tokens": 5000}}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aios.toml"
    path.write_text(text)
    return path


def test_operator_file_merged_and_passed_on_as_the_services_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, OPERATOR)
    before = path.read_bytes()
    cfg = load_stack_config(path, GENERATED, env=ENV)
    assert path.read_bytes() == before  # read, never written
    assert cfg.agents == ("researcher", "writer")
    assert list(cfg.llm.models) == [SIM_MODEL, "sim-embed", "llama3:8b"]
    assert [b.name for b in cfg.llm.models["sim-embed"].backends] == ["ollama-embed"]
    assert cfg.llm.models[SIM_MODEL].backends[0].capabilities.continue_partial

    # The generated catalogue is what the llm service parses back, unchanged.
    assert parse_config(llm_toml(cfg.llm)) == cfg.llm

    # The environment given to each service builds the settings the file describes.
    for key, value in {**cfg.scheduler_env, **cfg.llm_env}.items():
        monkeypatch.setenv(key, value)
    sched, llm = SchedulerSettings(), LlmSettings()
    assert (sched.policy, sched.policy_params, sched.default_deadline_s) == ("rr", {"quantum": 0.5}, 30)
    assert sched.quotas == SchedulerSettings(quotas=QUOTAS).quotas  # type: ignore[arg-type]
    assert llm.max_concurrency == 64


def test_no_file_and_the_policy_flag(tmp_path: Path) -> None:
    cfg = load_stack_config(None, GENERATED, env={})
    assert list(cfg.llm.models) == list(GENERATED) and cfg.agents == ()
    assert cfg.scheduler_env == {} and cfg.source == "aios up"
    # --policy wins over the file.
    cfg = load_stack_config(write(tmp_path, '[scheduler]\npolicy = "rr"\n'), GENERATED, policy="fifo", env={})
    assert cfg.scheduler_env["AIOS_POLICY"] == "fifo"
    assert default_config_path(tmp_path / ".aios") == tmp_path / "aios.toml"


@pytest.mark.parametrize(
    ("text", "policy", "expected"),
    [
        ("", "bogus", "--policy: unknown policy 'bogus'"),
        ('[scheduler]\npolicy = "bogus"\n', None, "aios.toml: scheduler.policy: unknown policy 'bogus'"),
        ("[scheduler]\npolicy_params = { beta = -1 }\n", None, "scheduler.policy 'las': parameter beta"),
        ("[scheduler]\npolicy_params = { nope = 1 }\n", None, "parameter nope"),
        (
            '[scheduler]\nresource_policies = { "llm.x" = { name = "zz" } }\n',
            None,
            'scheduler.resource_policies."llm.x": unknown policy',
        ),
        ('[scheduler]\npolcy = "las"\n', None, "aios.toml: scheduler.polcy: unknown key"),
        ('[scheduler]\nnats_url = "nats://x"\n', None, "scheduler.nats_url: unknown key"),
        ("[scheduler]\nquotas = { a = { calls = -1 } }\n", None, "scheduler.quotas.a.calls"),
        ("[llm]\nmax_concurrency = 0\n", None, "llm.max_concurrency"),
        ("wat = 1\n", None, "aios.toml: wat: Extra inputs are not permitted"),
        ('agents = ["a b"]\n', None, "agents.0: 'a b' is not a valid agent name"),
        ('agents = ["a", "a"]\n', None, "agents.1: 'a' is listed twice"),
        ('agents = ["local"]\n', None, "agents.0: 'local' is listed twice or is the reserved 'local'"),
        ("[models.x\nbackends = 3\n", None, "aios.toml: not valid TOML: Expected ']'"),
        ("[models.x\n", None, "line 1"),
        ('[models.x]\nkind = "chat"\n', None, "models.x.backends: Field required"),
        (
            '[models."a:b"]\nbackends = [{ name = "b", base_url = "http://h/v1", slots = -1 }]\n',
            None,
            'models."a:b".backends.0.slots: Input should be greater than or equal to 1',
        ),
        (
            '[models.x]\nbackends = [{ name = "b", base_url = "localhost:8000" }]\n',
            None,
            "models.x.backends.0.base_url",
        ),
        (
            '[models.x]\nbackends = [{ name = "b", base_url = "http://" }]\n',
            None,
            "models.x.backends.0.base_url: 'http://' is not a URL",
        ),
        (
            '[models.x]\nbackends = [{ name = "b", base_url = "http://h/v1", api_key_env = "NOT_SET_X" }]\n',
            None,
            "models.x.backends.0.api_key_env: environment variable NOT_SET_X is not set",
        ),
        (
            '[models.x]\nbackends = [{ name = "sim", base_url = "http://h/v1" }]\n',
            None,
            "models: backend name 'sim' is used twice (backends `aios up` adds: sim, sim-embed)",
        ),
    ],
)
def test_a_bad_value_names_the_file_and_key(
    tmp_path: Path, text: str, policy: str | None, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_stack_config(write(tmp_path, text), GENERATED, policy=policy, env={})
    assert expected in str(err.value)
    assert "Traceback" not in str(err.value)


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read the config: No such file"):
        load_stack_config(tmp_path / "nope.toml", GENERATED, env={})
