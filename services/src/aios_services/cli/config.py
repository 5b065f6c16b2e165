"""The operator's `aios.toml`: read it, validate it with the services' own models, merge it with
what `aios up` adds. `aios up` never writes it; what it generates goes into the home.

```toml
agents = ["researcher", "writer"]      # a token for each, in $AIOS_HOME/agents/NAME.token

[scheduler]                            # any scheduler setting (see scheduler/settings.py)
policy = "las"                         # fifo | rr | priority | las (`aios up --policy` wins)
policy_params = { beta = 4 }
quotas = { "researcher" = { calls = 1000, tokens = 2000000 } }

[llm]                                  # any llm service setting (see llm/settings.py)
max_concurrency = 512

[tools]                                # the tools service (see tools/settings.py)
web_fetch = true
[tools.tool.calc]
timeout_s = 2

[models."llama3:8b"]                   # the llm catalogue (see llm/config.py); a model named
[[models."llama3:8b".backends]]        # like one `aios up` adds (sim-llama-8b...) replaces it
name = "vllm-a"
base_url = "http://10.0.0.5:8000/v1"
slots = 64
```
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings

from aios_schemas.envelope import AGENT_PATTERN

from ..llm.config import ConfigError as LlmConfigError
from ..llm.config import LlmConfig, ModelConfig, api_keys
from ..llm.settings import LlmSettings
from ..scheduler.policies import parse_policy_config
from ..scheduler.settings import SchedulerSettings
from ..tools.builtins import BUILTINS
from ..tools.registry import ToolConfigError, check_settings
from ..tools.settings import ToolsSettings

CONFIG_FILE = "aios.toml"

# Settings `aios up` decides itself: the file may not set them.
_OWNED = {"nats_url", "namespace", "instance", "llm_config"}


class ConfigError(Exception):
    """The operator's configuration is wrong; the message names the file and the key."""


class _File(BaseModel):
    """The top level of `aios.toml`; each section is validated by the model of its service."""

    model_config = ConfigDict(extra="forbid")
    agents: list[str] = Field(default_factory=list, description="Agents to create tokens for.")
    scheduler: dict[str, Any] = Field(default_factory=dict, description="Scheduler settings.")
    llm: dict[str, Any] = Field(default_factory=dict, description="llm service settings.")
    models: dict[str, Any] = Field(default_factory=dict, description="Models and their backends.")
    tools: dict[str, Any] = Field(default_factory=dict, description="Tools service settings and tools.")


@dataclass(frozen=True)
class StackConfig:
    """Everything `aios up` starts the services with, validated."""

    source: str  # the file it came from, or "aios up" (no file)
    llm: LlmConfig = field(default_factory=LlmConfig)
    agents: tuple[str, ...] = ()
    scheduler_env: Mapping[str, str] = field(default_factory=dict)
    llm_env: Mapping[str, str] = field(default_factory=dict)
    tools_env: Mapping[str, str] = field(default_factory=dict)


def default_config_path(home: Path) -> Path:
    """`aios.toml` beside the home (the home's parent directory)."""
    return home.parent / CONFIG_FILE


def key_path(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a TOML-style key: models."llama3:8b".backends.0.slots."""
    return ".".join(
        str(p) if isinstance(p, int) or re.fullmatch(r"[A-Za-z0-9_-]+", p) else json.dumps(p) for p in loc
    )


def _input_loc(data: object, loc: Sequence[int | str], missing: bool) -> list[int | str]:
    """The part of a pydantic error location that is in the input: the steps pydantic adds to say
    which member of a union it tried (`Quota`, `list[Quota]`) are dropped. `missing`: the last
    step is a key the input lacks."""
    path: list[int | str] = []
    for i, step in enumerate(loc):
        children = dict(enumerate(data)) if isinstance(data, list) else data
        if not isinstance(children, dict):
            path.append(step)  # below a scalar value: keep the rest as it is
            continue
        if step in children:
            data = children[step]
            path.append(step)
        elif missing and i == len(loc) - 1:
            path.append(step)
    return path


def _errors(
    source: str, prefix: Sequence[str | int], data: object, exc: ValidationError, top: str = "(top level)"
) -> ConfigError:
    lines = []
    for err in exc.errors():
        loc = [*prefix, *_input_loc(data, err["loc"], missing=err["type"] == "missing")]
        msg = err["msg"].removeprefix("Value error, ")
        line = f"{source}: {key_path(loc) or top}: {msg}"
        if line not in lines:
            lines.append(line)
    return ConfigError("\n".join(lines))


def _settings_env(
    source: str,
    section: str,
    cls: type[BaseSettings],
    values: Mapping[str, Any],
) -> tuple[BaseSettings, dict[str, str]]:
    """Validate a service's settings section; the environment variables that pass it on."""
    for key in values:
        if key not in cls.model_fields or key in _OWNED:
            known = sorted(set(cls.model_fields) - _OWNED)
            raise ConfigError(f"{source}: {section}.{key}: unknown key; one of {', '.join(known)}")
    try:
        # Built as the service builds it: the environment fills in what the file does not set.
        settings = cls(**values)
    except ValidationError as exc:
        raise _errors(source, [section], dict(values), exc) from exc
    prefix = str(cls.model_config.get("env_prefix", ""))
    dumped = settings.model_dump(mode="json", include=set(values))
    env = {
        prefix + key.upper(): value if isinstance(value, str) else json.dumps(value)
        for key, value in dumped.items()
    }
    return settings, env


def _check_policies(source: str, values: Mapping[str, Any], policy_flag: bool) -> None:
    """The policy and its parameters, as the scheduler will build them, checked before the settings
    (which refuse them too, less readably). Values of the wrong type are left to the settings."""
    policy = values.get("policy", SchedulerSettings.model_fields["policy"].default)
    params = values.get("policy_params", {})
    overrides = values.get("resource_policies", {})
    if not isinstance(policy, str) or not isinstance(params, dict) or not isinstance(overrides, dict):
        return
    checks: list[tuple[str, str, dict[str, Any]]] = [
        ("--policy" if policy_flag else "scheduler.policy", policy, dict(params))
    ]
    for resource, override in overrides.items():
        if not isinstance(override, dict):
            return
        extra = dict(override)
        name = str(extra.pop("name", policy))
        checks.append((f"scheduler.resource_policies.{key_path([resource])}", name, extra))
    for where, name, params in checks:
        try:
            parse_policy_config(name, **params)
        except ValidationError as exc:
            err = exc.errors()[0]
            if err["type"] == "union_tag_invalid" or list(err["loc"]) == ["name"]:
                at = where if where.startswith("--") else f"{source}: {where}"
                raise ConfigError(f"{at}: unknown policy {name!r}; one of fifo, rr, priority, las") from exc
            param = key_path([str(p) for p in err["loc"][1:]])
            raise ConfigError(f"{source}: {where} {name!r}: parameter {param}: {err['msg']}") from exc


def _check_models(source: str, cfg: LlmConfig, env: Mapping[str, str]) -> None:
    for model, m in cfg.models.items():
        for i, b in enumerate(m.backends):
            try:
                host = httpx.URL(b.base_url).host
            except httpx.InvalidURL as exc:
                host, why = "", str(exc)
            else:
                why = "no host"
            if not host:
                where = key_path(["models", model, "backends", i, "base_url"])
                raise ConfigError(f"{source}: {where}: {b.base_url!r} is not a URL ({why})")
    try:
        api_keys(cfg, env)  # the variables the backends name are set (the llm service needs them)
    except LlmConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


def load_stack_config(
    path: Path | None,
    generated: Mapping[str, ModelConfig],
    *,
    policy: str | None = None,
    env: Mapping[str, str] | None = None,
) -> StackConfig:
    """Read and validate the operator's file (None: no file) merged with the `generated` models.

    `policy` is `aios up --policy`, which wins over the file. Raises ConfigError naming the file,
    the key and (for a TOML syntax error) the line.
    """
    env = os.environ if env is None else env
    source = str(path) if path else "aios up"
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        top = _File.model_validate(raw)
    except ValidationError as exc:
        raise _errors(source, [], raw, exc) from exc

    for i, agent in enumerate(top.agents):
        if not re.fullmatch(AGENT_PATTERN, agent):
            raise ConfigError(f"{source}: agents.{i}: {agent!r} is not a valid agent name ({AGENT_PATTERN})")
        if agent == "local" or agent in top.agents[:i]:
            raise ConfigError(f"{source}: agents.{i}: {agent!r} is listed twice or is the reserved 'local'")

    sched_values = dict(top.scheduler)
    if policy is not None:
        sched_values["policy"] = policy
    _check_policies(source, sched_values, policy_flag=policy is not None)
    sched, scheduler_env = _settings_env(source, "scheduler", SchedulerSettings, sched_values)
    assert isinstance(sched, SchedulerSettings)
    _, llm_env = _settings_env(source, "llm", LlmSettings, top.llm)
    tools, tools_env = _settings_env(source, "tools", ToolsSettings, top.tools)
    assert isinstance(tools, ToolsSettings)
    try:
        check_settings(dict(tools.tool), BUILTINS)
    except ToolConfigError as exc:
        raise ConfigError(f"{source}: tools: {exc}") from exc

    models: dict[str, Any] = {name: m.model_dump() for name, m in generated.items()}
    models.update(top.models)
    try:
        llm = LlmConfig.model_validate({"models": models})
    except ValidationError as exc:
        err = _errors(source, [], {"models": models}, exc, top="models")
        if any(not e["loc"] for e in exc.errors()):  # a model-wide rule, e.g. a backend name used twice
            own = ", ".join(b.name for m in generated.values() for b in m.backends)
            err = ConfigError(f"{err} (backends `aios up` adds: {own or 'none'})")
        raise err from exc
    _check_models(source, llm, env)
    return StackConfig(
        source=source,
        llm=llm,
        agents=tuple(top.agents),
        scheduler_env=scheduler_env,
        llm_env=llm_env,
        tools_env=tools_env,
    )


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string or integer is a TOML one
    if isinstance(v, float):
        return repr(v)  # 1e-05, inf, nan: TOML spells them alike
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{key_path([k])} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def llm_toml(cfg: LlmConfig) -> str:
    """The llm catalogue as the llm service reads it (`$AIOS_HOME/llm.toml`)."""
    lines = ["# Written by `aios up` at each start (the operator's file is aios.toml); do not edit.", ""]
    for name, model in cfg.models.items():
        lines.append(f"[models.{json.dumps(name, ensure_ascii=False)}]")  # quoted: `llama3:8b`
        lines.append(f"kind = {_toml_value(model.kind)}")
        lines.append("backends = [")
        for b in model.backends:
            lines.append(f"  {_toml_value(b.model_dump(mode='json', by_alias=True, exclude_none=True))},")
        lines += ["]", ""]
    return "\n".join(lines)
