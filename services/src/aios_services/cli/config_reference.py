"""The configuration reference (`infra/CONFIG.md`): every setting of every kernel service, generated
from the services' settings models, so the document cannot drift from the code.

`python -m aios_services.cli.config_reference` prints it; `--out FILE` writes it
(tests/unit/test_infra.py asserts the committed file equals the output).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from ..llm.config import LlmConfig
from ..runtime.settings import ServiceSettings
from ..runtime.worker import WorkerSettings
from .supervisor import SERVICES

GENERATOR = "python -m aios_services.cli.config_reference --out infra/CONFIG.md"


def settings_models() -> dict[str, type[ServiceSettings]]:
    """Each kernel service (as `aios up` runs them) -> its settings model (`<package>.settings`)."""
    out: dict[str, type[ServiceSettings]] = {}
    for name, module in SERVICES:
        mod = importlib.import_module(f"{module}.settings")
        found = [
            c
            for c in vars(mod).values()
            if isinstance(c, type) and issubclass(c, ServiceSettings) and c.__module__ == mod.__name__
        ]
        if len(found) != 1:
            raise RuntimeError(f"{mod.__name__} defines {len(found)} settings models, not one")
        out[name] = found[0]
    return out


def env_name(model: type[ServiceSettings], field: str) -> str:
    """The environment variable of a setting (pydantic-settings: the prefix and the field's name)."""
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


def env_names(model: type[ServiceSettings]) -> set[str]:
    return {env_name(model, f) for f in model.model_fields}


def own_fields(model: type[BaseModel], base: type[BaseModel] | None) -> dict[str, FieldInfo]:
    """The fields `model` adds to `base` (all of them without a base)."""
    inherited = set(base.model_fields) if base else set()
    return {n: f for n, f in model.model_fields.items() if n not in inherited}


def _type(annotation: object) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    text = repr(annotation).replace("typing.", "")
    return re.sub(r"\b(?:[A-Za-z_][A-Za-z0-9_]*\.)+([A-Za-z_][A-Za-z0-9_]*)", r"\1", text)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        factory = field.default_factory
        if factory in (dict, list):
            return f"`{json.dumps(factory())}`"
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            return "its defaults"
        return "set per process"
    value = field.default
    if isinstance(value, SecretStr):
        return '`""`' if not value.get_secret_value() else "(set)"
    if isinstance(value, Path):
        return f"`{value}`"
    if value is None:
        return "none"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _nested(annotation: object) -> Iterator[type[BaseModel]]:
    """The models a field's type refers to (a table of tables: quotas, tools, MCP servers)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _nested(arg)


def _table(rows: list[tuple[str, str, str, str]], first: str) -> list[str]:
    lines = [f"| {first} | type | default | description |", "|---|---|---|---|"]
    lines += [f"| `{a}` | `{_cell(b)}` | {_cell(c)} | {_cell(d)} |" for a, b, c, d in rows]
    return lines


def _env_rows(model: type[ServiceSettings], fields: dict[str, FieldInfo]) -> list[tuple[str, str, str, str]]:
    return [
        (env_name(model, n), _type(f.annotation), _default(f), f.description or "") for n, f in fields.items()
    ]


def _key_rows(model: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    return [
        (f.alias or n, _type(f.annotation), _default(f), f.description or "")
        for n, f in model.model_fields.items()
    ]


def _models_below(roots: list[type[BaseModel]]) -> list[type[BaseModel]]:
    """Every model reachable from the fields of `roots` (not the roots), in order of first use."""
    seen: list[type[BaseModel]] = []
    todo = list(roots)
    while todo:
        for f in todo.pop(0).model_fields.values():
            for m in _nested(f.annotation):
                if m not in seen and m not in roots and not issubclass(m, SecretStr):
                    seen.append(m)
                    todo.append(m)
    return seen


def render() -> str:
    models = settings_models()
    out = [
        "# Configuration reference",
        "",
        f"Generated from the services' settings models by `{GENERATOR}`; do not edit by hand",
        "(`tests/unit/test_infra.py` fails when this file and the models differ).",
        "",
        "Every kernel service reads its settings once, at start, from its environment (pydantic-settings,",
        "prefix `AIOS_`, names case-insensitive); a table or a list is JSON, e.g.",
        "`AIOS_POLICY_PARAMS='{\"beta\": 4}'`. A bad value stops the service at start, naming the",
        "variable. Under `aios up`, the `[scheduler]`, `[llm]` and `[tools]` tables of `aios.toml` become",
        "these variables (keys without the `AIOS_` prefix) and `aios up` sets the addresses, credentials",
        "and files itself; in a deployment of your own (`infra/compose.yaml`, `infra/PROCESSES.md`) you",
        "set them.",
        "",
        "## Every service",
        "",
        *_table(_env_rows(ServiceSettings, own_fields(ServiceSettings, None)), "variable"),
        "",
        "## Every worker service (memory, storage, tools)",
        "",
        *_table(_env_rows(WorkerSettings, own_fields(WorkerSettings, ServiceSettings)), "variable"),
    ]
    for name, model in models.items():
        module = dict(SERVICES)[name]
        base = WorkerSettings if issubclass(model, WorkerSettings) else ServiceSettings
        also = "every worker service's and every service's" if base is WorkerSettings else "every service's"
        out += [
            "",
            f"## {name}",
            "",
            f"`python -m {module}`; `{model.__module__}.{model.__name__}`, with {also} settings above.",
            "",
            *_table(_env_rows(model, own_fields(model, base)), "variable"),
        ]
    nested = _models_below(list(models.values()))
    if nested:
        out += ["", "## Tables inside settings", ""]
        out += ["The values of the JSON settings above that hold tables (keys of each entry)."]
        for m in nested:
            out += ["", f"### {m.__name__}", "", *_table(_key_rows(m), "key")]
    out += [
        "",
        "## The LLM catalogue (`AIOS_LLM_CONFIG`, TOML)",
        "",
        "The llm service's models and backends (`aios up` writes it from `aios.toml`'s `[models]`).",
        "",
        "### LlmConfig (the file)",
        "",
        *_table(_key_rows(LlmConfig), "key"),
    ]
    for m in _models_below([LlmConfig]):
        out += ["", f"### {m.__name__}", "", *_table(_key_rows(m), "key")]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, help="write here (default: print)")
    args = ap.parse_args(argv)
    text = render()
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()


__all__ = ["env_name", "env_names", "render", "settings_models"]
