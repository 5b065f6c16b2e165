"""OpenAI wire shapes the simulator reads (requests) and writes (errors, usage)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

JSONObject = dict[str, Any]


class ChatMessage(BaseModel):
    """One chat message; unknown fields (name, refusal, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[JSONObject] | None = None
    tool_calls: list[JSONObject] | None = None
    tool_call_id: str | None = None


class ChatRequest(BaseModel):
    """The fields of /v1/chat/completions the simulator honours (others pass through to stats only)."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: JSONObject | None = None
    tools: list[JSONObject] | None = None
    tool_choice: str | JSONObject | None = None
    response_format: JSONObject | None = None
    # vLLM extra-body fields
    priority: int = 0
    ignore_eos: bool = False
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    @property
    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def continues_partial(self) -> bool:
        """vLLM's continue-final-message mode: the last (assistant) message is a partial answer."""
        return (
            self.continue_final_message
            and not self.add_generation_prompt
            and self.messages[-1].role == "assistant"
        )


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: str = "float"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> JSONObject:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
