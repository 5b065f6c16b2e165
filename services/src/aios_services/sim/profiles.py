"""Engine parameters of the simulator and its named profiles (constants from calibration.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SchedulingPolicy = Literal["fcfs", "priority"]


class EngineProfile(BaseModel):
    """Every knob of the simulated engine. All durations are model milliseconds before `time_scale`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Profile name (informational).")
    models: tuple[str, ...] = Field(description="Chat model ids served; all share one engine.")
    decode_ms: float = Field(ge=0, description="a: fixed cost of every engine step (weight read + overhead).")
    per_seq_ms: float = Field(default=0.0, ge=0, description="b: cost per decoding sequence in a step.")
    per_ctx_token_ms: float = Field(
        default=0.0, ge=0, description="k: KV read cost per cached context token of each decoding sequence."
    )
    prefill_ms_per_token: float = Field(ge=0, description="c: prefill cost per prompt token.")
    prefill_quad_ms: float = Field(
        default=0.0, ge=0, description="q: prefill attention cost per token squared (quadratic term)."
    )
    max_num_seqs: int = Field(ge=1, description="Slots: sequences running at once (vLLM max_num_seqs).")
    max_num_batched_tokens: int = Field(ge=1, description="Token budget of one step (chunked prefill).")
    kv_tokens: int = Field(ge=16, description="KV-cache capacity in tokens.")
    block_size: int = Field(default=16, ge=1, description="Tokens per KV block.")
    max_model_len: int = Field(ge=2, description="Longest prompt + output accepted (400 beyond).")
    scheduling_policy: SchedulingPolicy = Field(
        default="fcfs", description="fcfs, or priority (lower first)."
    )
    enable_prefix_caching: bool = Field(default=True, description="Reuse cached full KV blocks of prompts.")
    ttft_ms: float = Field(
        default=0.0, ge=0, description="Fixed extra latency before a request is scheduled."
    )
    rpm: int = Field(default=0, ge=0, description="Requests per minute limit (0 = unlimited; 429 beyond).")
    tpm: int = Field(
        default=0, ge=0, description="Tokens per minute limit, input + max output (0 = unlimited)."
    )
    time_scale: float = Field(default=1.0, ge=0, description="Multiplies every modelled duration.")
    seed: int = Field(default=0, description="Mixed into every request hash; changes all outputs.")
    min_output_tokens: int = Field(default=16, ge=1, description="Shortest natural completion.")
    max_output_tokens: int = Field(default=256, ge=1, description="Longest natural completion.")
    tool_call_probability: float = Field(
        default=0.5, ge=0, le=1, description="Chance of a tool call under tool_choice auto (by request hash)."
    )
    embedding_dim: int = Field(default=384, ge=1, description="Dimension of /v1/embeddings vectors.")
    embedding_model: str = Field(default="sim-embed", description="Extra model id served for embeddings.")

    def with_overrides(self, **overrides: Any) -> EngineProfile:
        """A validated copy with some fields replaced (None values are ignored)."""
        data = self.model_dump()
        data.update({key: value for key, value in overrides.items() if value is not None})
        return EngineProfile.model_validate(data)


# Calibration.md §1 and §4: vLLM V1, Llama-3.1-8B bf16 on one H100 80GB.
H100_LLAMA8B = EngineProfile(
    name="h100-llama8b",
    models=("sim-llama-8b",),
    decode_ms=6.4,
    per_seq_ms=0.05,
    per_ctx_token_ms=4.4e-5,
    prefill_ms_per_token=0.023,
    prefill_quad_ms=4.55e-7,
    max_num_seqs=1024,
    max_num_batched_tokens=8192,
    kv_tokens=27_793 * 16,
    max_model_len=131_072,
)

# Calibration.md §2 and §4: same model on one A100 80GB (vLLM's "a100" batch defaults).
A100_LLAMA8B = H100_LLAMA8B.with_overrides(
    name="a100-llama8b",
    decode_ms=11.0,
    per_seq_ms=0.09,
    per_ctx_token_ms=7.2e-5,
    prefill_ms_per_token=0.073,
    prefill_quad_ms=1.44e-6,
    max_num_seqs=256,
    max_num_batched_tokens=2048,
)

# Calibration.md §3: gpt-4o-mini at tier 1. Latency is per request (no batching interference): a fixed
# TTFT and a per-token time; both are unverified placeholders (tag U in the README).
HOSTED_API = EngineProfile(
    name="hosted-api",
    models=("sim-gpt-4o-mini",),
    decode_ms=12.0,
    prefill_ms_per_token=0.0,
    ttft_ms=350.0,
    max_num_seqs=100_000,
    max_num_batched_tokens=100_000_000,
    kv_tokens=1_000_000_000,
    max_model_len=128_000,
    enable_prefix_caching=False,
    rpm=500,
    tpm=200_000,
)

# The simplest engine: a fixed time per token and per prompt token, plenty of KV. Fast by default.
FIXED = EngineProfile(
    name="fixed",
    models=("sim-llama-8b",),
    decode_ms=2.0,
    prefill_ms_per_token=0.01,
    max_num_seqs=256,
    max_num_batched_tokens=10_000_000,
    kv_tokens=100_000_000,
    max_model_len=1_000_000,
)

# H100 constants with a tiny KV budget and few slots, so overload is reachable with small tests.
H100_TINY = H100_LLAMA8B.with_overrides(
    name="h100-tiny",
    max_num_seqs=8,
    max_num_batched_tokens=1024,
    kv_tokens=4096,
    max_model_len=4096,
)

PROFILES: dict[str, EngineProfile] = {
    p.name: p for p in (H100_LLAMA8B, A100_LLAMA8B, HOSTED_API, FIXED, H100_TINY)
}


def get_profile(name: str) -> EngineProfile:
    """The named profile; KeyError lists the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown sim profile {name!r}; known: {', '.join(PROFILES)}") from None
