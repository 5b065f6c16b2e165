"""`aios sim`: command line of the LLM engine simulator (argparse; every profile field is a flag)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import types
import typing
from typing import Any

from aios_services.sim.profiles import PROFILES, EngineProfile, get_profile
from aios_services.sim.runner import serve

# Short names the brief and the README use, on top of one flag per profile field.
_ALIASES = {"max_num_seqs": ["--slots"]}
_SKIP = {"name", "models"}


def _flag_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """argparse type and choices for a profile field's annotation."""
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation, None


def _port(text: str) -> int:
    port = int(text) if text.lstrip("-").isdigit() else -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aios sim",
        usage="aios sim [--host HOST] [--port PORT] [--profile NAME] [--model ID ...] [OVERRIDES]",
        description="OpenAI-compatible LLM engine SIMULATOR (vLLM-like timing; text is synthetic).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_port, default=8000, help="0 picks a free port")
    parser.add_argument("--profile", default="fixed", choices=sorted(PROFILES))
    parser.add_argument("--model", action="append", dest="models", help="served model id (repeatable)")
    group = parser.add_argument_group("profile overrides (defaults come from --profile)")
    for name, info in EngineProfile.model_fields.items():
        if name in _SKIP:
            continue
        flag = "--" + name.replace("_", "-")
        kind, choices = _flag_type(info.annotation)
        help_text = info.description
        if kind is bool:
            group.add_argument(
                flag,
                *_ALIASES.get(name, []),
                dest=name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            group.add_argument(
                flag,
                *_ALIASES.get(name, []),
                dest=name,
                default=None,
                type=kind,
                choices=choices,
                help=help_text,
            )
    return parser


def profile_from_args(args: argparse.Namespace) -> EngineProfile:
    overrides = {name: getattr(args, name) for name in EngineProfile.model_fields if name not in _SKIP}
    if args.models:
        overrides["models"] = tuple(args.models)
    return get_profile(args.profile).with_overrides(**overrides)


async def _serve(profile: EngineProfile, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with serve(profile, host, port) as sim:
        print(f"AIOS-SIM LISTENING http://{sim.host}:{sim.port}", flush=True)
        print(
            f"profile={profile.name} models={','.join(profile.models)} time_scale={profile.time_scale} "
            "(this is a simulator: synthetic text, modelled timing)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Entry point of `aios sim ARGS` and `python -m aios_services.sim`."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(profile_from_args(args), args.host, args.port))
    except OSError as exc:  # the address is taken or cannot be bound: one line, not a traceback
        parser.exit(2, f"aios sim: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}\n")
