"""Agent programs for the benchmarks, seeded: the AIOS paper's framework shapes (ReAct, Reflexion)
and Autellix's (chat, tool use), as plans of LLM calls with tool waits between them.

A program is one conversation that grows: a system prompt, then for each step a new user message
(the task, a tool's observation, an evaluation request...) of `prompt_tokens`, one LLM call that
must answer with exactly `output_tokens` (the simulator's `[sim:tokens=N]` directive, and
`max_tokens=N`), the answer appended to the history, then a tool call of `tool_s` modelled seconds
(a local wait, scaled by the simulator's `time_scale`; 0 for none). So every call resends the
whole history, which is what fills an engine's KV cache as programs advance.

Shapes (lengths in simulator tokens; U[a, b] uniform, Geo(m) geometric with mean m):
- `react` (the paper's ReAct, HotpotQA-like): a 400-token system prompt (instructions and
  few-shot examples), a question of U[30, 60]; U[3, 8] thought/action calls of U[40, 120]
  tokens, each followed by a search tool of U[0.2, 1.5] s whose observation (U[60, 200]) opens the
  next call; the last call answers (no tool).
- `reflexion` (the paper's Reflexion): up to 3 trials (another with probability 1/2); a trial is
  U[2, 5] ReAct steps as above, an evaluation call (prompt U[30, 60], output U[20, 40]) and, if
  another trial follows, a reflection call (prompt U[30, 60], output U[80, 160]); trajectories,
  evaluations and reflections all stay in the history, so the context keeps growing.
- `chat` (Autellix, ShareGPT): Geo(6.66) turns (at most 80) of a user message U[128, 384] (mean
  256) and an answer U[139, 415] (mean 277); no tools.
- `tooluse` (Autellix, BFCL ReAct): a 380-token system prompt (tool schemas), Geo(10.75) calls
  (at most 70) of U[20, 48] tokens (mean 34), each but the last followed by a function call of
  U[0.05, 0.3] s whose result (U[30, 70]) is appended: about 735 prompt tokens a call on average.
- `mix`: the four shapes in equal shares, shuffled.

Prompt text is words of 3 or 4 letters, one simulator token each (its tokenizer counts runs of up
to 7 non-space characters), so that characters / 4 (the kernel's estimate of a prompt's tokens)
is close to, and slightly above, the simulator's count, as it is for English under a real
tokenizer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

from aios_services.sim.profiles import EngineProfile

Shape = Literal["react", "reflexion", "chat", "tooluse"]
SHAPES: tuple[Shape, ...] = ("react", "reflexion", "chat", "tooluse")
WORKLOADS = (*SHAPES, "mix")

_LETTERS = "abcdefghijklmnoprstuvwy"
_TEMPLATE_TOKENS = 3  # the simulator's chat template: about 3 tokens around each message


@dataclass(frozen=True)
class Step:
    """One LLM call: a new user message, the forced answer length, then a tool wait."""

    prompt_tokens: int
    output_tokens: int
    tool_s: float = 0.0


@dataclass(frozen=True)
class Program:
    name: str
    shape: Shape
    system_tokens: int
    steps: tuple[Step, ...]

    @property
    def calls(self) -> int:
        return len(self.steps)

    @property
    def peak_context(self) -> int:
        """Tokens of the whole conversation at its last answer (the most KV it ever holds)."""
        per_message = sum(s.prompt_tokens + s.output_tokens + 2 * _TEMPLATE_TOKENS for s in self.steps)
        return self.system_tokens + _TEMPLATE_TOKENS + per_message


def _geo(rng: random.Random, mean: float, cap: int) -> int:
    """Geometric on 1, 2, ... with the given mean, at most `cap`."""
    p = 1.0 / mean
    return min(cap, 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p)))


def _react_steps(rng: random.Random, n: int, first_prompt: int) -> list[Step]:
    steps = []
    prompt = first_prompt
    for _ in range(n):
        steps.append(Step(prompt, rng.randint(40, 120), rng.uniform(0.2, 1.5)))
        prompt = rng.randint(60, 200)  # the observation, the next call's new message
    return steps


def react(rng: random.Random, name: str) -> Program:
    steps = _react_steps(rng, rng.randint(3, 8), rng.randint(30, 60))
    steps[-1] = Step(steps[-1].prompt_tokens, steps[-1].output_tokens)  # the answer: no tool after it
    return Program(name, "react", 400, tuple(steps))


def reflexion(rng: random.Random, name: str) -> Program:
    steps: list[Step] = []
    prompt = rng.randint(30, 60)
    for trial in range(3):
        act = _react_steps(rng, rng.randint(2, 5), prompt)
        steps += act
        steps.append(Step(rng.randint(30, 60), rng.randint(20, 40)))  # evaluate the trajectory
        if trial == 2 or rng.random() < 0.5:
            break
        steps.append(Step(rng.randint(30, 60), rng.randint(80, 160)))  # reflect on the failure
        prompt = rng.randint(30, 60)  # retry the task with the reflection in context
    return Program(name, "reflexion", 400, tuple(steps))


def chat(rng: random.Random, name: str) -> Program:
    turns = _geo(rng, 6.66, 80)
    return Program(
        name, "chat", 0, tuple(Step(rng.randint(128, 384), rng.randint(139, 415)) for _ in range(turns))
    )


def tooluse(rng: random.Random, name: str) -> Program:
    calls = _geo(rng, 10.75, 70)
    steps = [Step(rng.randint(30, 70), rng.randint(20, 48), rng.uniform(0.05, 0.3)) for _ in range(calls)]
    steps[-1] = Step(steps[-1].prompt_tokens, steps[-1].output_tokens)
    return Program(name, "tooluse", 380, tuple(steps))


_BUILD = {"react": react, "reflexion": reflexion, "chat": chat, "tooluse": tooluse}


def programs(workload: str, n: int, seed: int) -> list[Program]:
    """`n` programs of one shape or of the `mix`, the same for the same seed."""
    rng = random.Random(seed)
    if workload == "mix":
        shapes = [SHAPES[i % len(SHAPES)] for i in range(n)]
        rng.shuffle(shapes)
    elif workload in SHAPES:
        shapes = [workload] * n
    else:
        raise ValueError(f"unknown workload {workload!r}; known: {', '.join(WORKLOADS)}")
    return [
        _BUILD[shape](random.Random(rng.getrandbits(64)), f"agent-{i:04d}") for i, shape in enumerate(shapes)
    ]


def words(rng: random.Random, n: int) -> str:
    """`n` simulator tokens of text: words of 3 or 4 letters."""
    return " ".join("".join(rng.choices(_LETTERS, k=rng.choice((3, 4)))) for _ in range(n))


def system_text(program: Program) -> str:
    return words(random.Random(f"{program.name}/system"), program.system_tokens)


def user_text(program: Program, step: int) -> str:
    """The new message of `step`, ending with the directive that fixes the answer's length."""
    s = program.steps[step]
    body = words(random.Random(f"{program.name}/{step}"), max(1, s.prompt_tokens - 2))
    return f"{body} [sim:tokens={s.output_tokens}]"


def ideal_s(program: Program, profile: EngineProfile) -> float:
    """Modelled seconds the program takes alone on the engine (the simulator's step formula, with
    the prefix cache holding its history), tool waits included: the denominator of slowdown."""
    p = profile
    total_ms = 0.0
    cached = 0
    context = program.system_tokens + _TEMPLATE_TOKENS
    for s in program.steps:
        p_len = context + s.prompt_tokens + 2 * _TEMPLATE_TOKENS
        hit = min(cached, p_len - 1) if p.enable_prefix_caching else 0
        new = p_len - hit
        total_ms += (
            p.ttft_ms + p.decode_ms + p.prefill_ms_per_token * new + p.prefill_quad_ms * (p_len**2 - hit**2)
        )
        for i in range(1, s.output_tokens):
            total_ms += p.decode_ms + p.per_seq_ms + p.per_ctx_token_ms * (p_len + i)
        context = p_len + s.output_tokens
        cached = (context // p.block_size) * p.block_size
        total_ms += s.tool_s * 1000.0
    return total_ms / 1000.0
