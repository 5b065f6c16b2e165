"""Deterministic completions: pseudo-tokenizer, prompt rendering, text, JSON and tool-call plans."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aios_services.sim import schemagen
from aios_services.sim.api import ChatMessage, ChatRequest
from aios_services.sim.profiles import EngineProfile

# A token is up to 7 non-space characters plus the whitespace after it (~4-5 characters of English).
# Every vocabulary word, with its punctuation, is at most 7 characters, so each generated word is
# exactly one token, and re-tokenizing a generated text gives back the generated tokens (prefix
# caching of a continued partial answer depends on that).
_TOKEN_RE = re.compile(r"\S{1,7}\s*|\s+")
_TOKENS_DIRECTIVE = re.compile(r"\[sim:tokens=(\d+)\]")
_TOOL_DIRECTIVE = re.compile(r"\[sim:tool=([A-Za-z0-9_.-]+)\]")
_NO_TOOL_DIRECTIVE = "[sim:no-tool]"

_VOCAB_TEXT = (
    "the of and to in is that it for as with was on be by this are from at or an have not "
    "which but all can more one will has about been their other when there what some so into "
    "time only new also any these may first then its over such two model data token agent "
    "system kernel memory queue engine cache batch signal vector graph route plan task step "
    "answer result value number search tool call state event worker output input stream block "
    "simple quick steady bright calm clear exact final early later inner outer upper lower "
    "river stone cloud ember maple orbit field light water earth north south green amber "
    "build check write read send store load parse merge split sort scan find keep move run"
)
_VOCAB = tuple(_VOCAB_TEXT.split())

FinishReason = Literal["stop", "length", "tool_calls"]


def tokenize(text: str) -> list[str]:
    """Split text into pseudo-tokens whose concatenation is exactly `text`."""
    return _TOKEN_RE.findall(text)


def message_text(message: ChatMessage) -> str:
    """The text a chat template would show for a message (content, tool calls, tool results)."""
    content = message.content
    if isinstance(content, list):
        text = "".join(str(p.get("text", "")) if p.get("type") == "text" else "<media>" for p in content)
    else:
        text = content or ""
    if message.tool_call_id:
        text = f"[{message.tool_call_id}] {text}"
    if message.tool_calls:
        text += json.dumps(message.tool_calls, sort_keys=True)
    return text


def render_prompt(request: ChatRequest) -> str:
    """A ChatML-like rendering; a continued partial answer is left open, exactly where generation was."""
    parts: list[str] = []
    if request.tools:
        parts.append(f"<|tools|>\n{json.dumps(request.tools, sort_keys=True)}<|end|>\n")
    continues = request.continues_partial
    last = len(request.messages) - 1
    for i, message in enumerate(request.messages):
        if continues and i == last:
            parts.append(f"<|assistant|>\n{message_text(message)}")
        else:
            parts.append(f"<|{message.role}|>\n{message_text(message)}<|end|>\n")
    if not continues:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def block_hashes(tokens: Sequence[str], block_size: int, salt: str) -> list[int]:
    """Chained hash of every full block, as vLLM's prefix cache keys blocks."""
    out: list[int] = []
    prev = hashlib.blake2b(salt.encode(), digest_size=8).digest()
    for start in range(0, len(tokens) - block_size + 1, block_size):
        payload = prev + "\x1f".join(tokens[start : start + block_size]).encode()
        prev = hashlib.blake2b(payload, digest_size=8).digest()
        out.append(int.from_bytes(prev, "big"))
    return out


def request_hash(request: ChatRequest, profile: EngineProfile) -> int:
    """Hash of everything that determines the answer; a continued partial is hashed without it."""
    base = request
    if request.continues_partial:
        base = request.model_copy(
            update={
                "messages": request.messages[:-1],
                "continue_final_message": False,
                "add_generation_prompt": True,
            }
        )
    key = {
        "model": request.model,
        "prompt": render_prompt(base),
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "seed": request.seed,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "sim_seed": profile.seed,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Plan:
    """What a request will produce. Token i of the engine releases `pieces[i]` (if any)."""

    prompt_tokens: tuple[str, ...]
    pieces: tuple[str, ...]
    n_tokens: int
    finish_reason: FinishReason
    tool_call: ToolCall | None
    block_hashes: tuple[int, ...]

    @property
    def content(self) -> str:
        return "".join(self.pieces)


def plan(request: ChatRequest, profile: EngineProfile) -> Plan:
    """Decide the full answer of a request (deterministic in the request and the profile seed)."""
    prompt_tokens = tokenize(render_prompt(request))
    h = request_hash(request, profile)
    tool_call = _tool_call(request, profile, h)
    if tool_call is not None:
        # Token 0 carries the call header (id, name); the argument text follows token by token.
        pieces = ["", *tokenize(tool_call.arguments)]
        output_tokens = [tool_call.name, *pieces[1:]]
        pieces, n_tokens, finish = _cap(pieces, len(pieces), "tool_calls", request.output_limit)
    else:
        partial = message_text(request.messages[-1]) if request.continues_partial else None
        pieces, finish = _content(request, profile, h, partial)
        pieces, n_tokens, finish = _cap(pieces, len(pieces), finish, request.output_limit)
        pieces, n_tokens, finish = _apply_stop(pieces, n_tokens, finish, request.stop)
        output_tokens = list(pieces)
    hashes = block_hashes([*prompt_tokens, *output_tokens], profile.block_size, request.model)
    return Plan(
        prompt_tokens=tuple(prompt_tokens),
        pieces=tuple(pieces),
        n_tokens=max(1, n_tokens),  # an engine always samples at least one token (maybe EOS)
        finish_reason=finish,
        tool_call=tool_call,
        block_hashes=tuple(hashes),
    )


def _last_user_text(request: ChatRequest) -> str:
    for message in reversed(request.messages):
        if message.role == "user":
            return message_text(message)
    return ""


def _cap(
    pieces: list[str], n_tokens: int, finish: FinishReason, limit: int | None
) -> tuple[list[str], int, FinishReason]:
    if limit is not None and n_tokens > limit:
        return pieces[:limit], limit, "length"
    return pieces, n_tokens, finish


def _apply_stop(
    pieces: list[str], n_tokens: int, finish: FinishReason, stop: str | list[str] | None
) -> tuple[list[str], int, FinishReason]:
    """Cut at the first stop string; the token holding it is generated but not returned."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or [] if s]
    text = "".join(pieces)
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    if not cuts:
        return pieces, n_tokens, finish
    cut = min(cuts)
    kept: list[str] = []
    pos = 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            return kept, len(kept) + (0 if cut > pos else 1), "stop"
        kept.append(piece)
        pos += len(piece)
    return kept, len(kept), "stop"


# -- plain text and structured content --------------------------------------------------------


def _word_stream(h: int) -> Iterator[str]:
    """Endless words with some sentence punctuation; each yields one token (word + space)."""
    rng = random.Random(f"{h}:words")
    capital = True
    while True:
        word = rng.choice(_VOCAB)
        if capital:
            word = word.capitalize()
        roll = rng.random()
        if roll < 0.08:
            word += "."
        elif roll < 0.14:
            word += ","
        capital = word.endswith(".")
        yield word + " "


def _final(token: str) -> str:
    """The last token of an answer that ended by itself: a full stop, no trailing space."""
    return token.rstrip(" .,") + "."


def _content(
    request: ChatRequest, profile: EngineProfile, h: int, partial: str | None
) -> tuple[list[str], FinishReason]:
    """Content tokens still to generate: all of them, or the rest after a partial answer."""
    fmt = (request.response_format or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        tokens = tokenize(json.dumps(schemagen.generate(_response_schema(request), random.Random(f"{h}:j"))))
        finish: FinishReason = "stop"
    else:
        tokens, finish = _text_tokens(request, profile, h, partial)
    if partial is None:
        return tokens, finish
    rest = _after_partial(tokens, partial)
    if rest is None:
        # The partial is not ours (edited, or from another model): answer freshly, still deterministic.
        fresh = request.model_copy(update={"continue_final_message": False, "add_generation_prompt": True})
        return _content(fresh, profile, request_hash(fresh, profile) ^ 0x5EED, None)
    return rest, finish


def _text_tokens(
    request: ChatRequest, profile: EngineProfile, h: int, partial: str | None
) -> tuple[list[str], FinishReason]:
    directive = _TOKENS_DIRECTIVE.search(_last_user_text(request))
    limit = request.output_limit
    total: int
    finish: FinishReason
    if directive is not None:
        total, finish = max(1, int(directive.group(1))), "stop"
    elif request.ignore_eos and limit is not None:
        # Exactly max_tokens more tokens, also after a partial answer (vLLM counts new tokens).
        total, finish = _complete_tokens_in(h, partial) + limit, "length"
    else:
        rng = random.Random(f"{h}:len")
        total, finish = rng.randint(profile.min_output_tokens, profile.max_output_tokens), "stop"
    stream = _word_stream(h)
    tokens = [next(stream) for _ in range(total)]
    if finish == "stop":
        tokens[-1] = _final(tokens[-1])
    return tokens, finish


def _complete_tokens_in(h: int, partial: str | None) -> int:
    """How many whole stream tokens a partial answer covers (0 when there is none)."""
    if not partial:
        return 0
    pos = 0
    for count, token in enumerate(_word_stream(h)):
        if pos + len(token) > len(partial):
            return count
        pos += len(token)
    raise AssertionError("unreachable: the word stream is endless")


def _after_partial(tokens: list[str], partial: str) -> list[str] | None:
    """The pieces that follow `partial` if it is a prefix of the answer; a cut token's rest first."""
    if not "".join(tokens).startswith(partial):
        return None
    pos = 0
    for i, token in enumerate(tokens):
        end = pos + len(token)
        if end > len(partial):
            head = token[len(partial) - pos :]
            return [head, *tokens[i + 1 :]]
        pos = end
    return []


def _response_schema(request: ChatRequest) -> dict[str, Any]:
    fmt = request.response_format or {}
    if fmt.get("type") == "json_schema":
        schema = (fmt.get("json_schema") or {}).get("schema")
        if isinstance(schema, dict):
            return schema
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["answer", "confidence"],
    }


# -- tool calls -------------------------------------------------------------------------------


def _tool_call(request: ChatRequest, profile: EngineProfile, h: int) -> ToolCall | None:
    functions = [t["function"] for t in request.tools or [] if isinstance(t.get("function"), dict)]
    if not functions:
        return None
    choice = request.tool_choice
    rng = random.Random(f"{h}:tool")
    chosen: dict[str, Any] | None = None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        chosen = next((f for f in functions if f.get("name") == name), None)
    elif choice == "required":
        chosen = rng.choice(functions)
    elif choice in (None, "auto"):
        text = _last_user_text(request)
        # A directive asks for one tool call: once its result follows, the model answers (an
        # agent's "call a tool, then answer" turn), instead of calling it again forever.
        answered = bool(request.messages) and request.messages[-1].role == "tool"
        named = None if answered else _TOOL_DIRECTIVE.search(text)
        if named is not None:
            chosen = next((f for f in functions if f.get("name") == named.group(1)), None)
        elif _NO_TOOL_DIRECTIVE not in text and rng.random() < profile.tool_call_probability:
            chosen = rng.choice(functions)
    if chosen is None:
        return None
    params = chosen.get("parameters") or {"type": "object", "properties": {}}
    arguments = json.dumps(schemagen.generate(params, random.Random(f"{h}:args")))
    return ToolCall(id=f"call_{h:016x}", name=str(chosen.get("name", "")), arguments=arguments)
