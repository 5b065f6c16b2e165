"""`llm.*` payloads, OpenAI-shaped so agents and backends speak the same language."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

_STRICT = ConfigDict(extra="forbid", frozen=True)

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: str = Field(description="Name of the function the model calls.")
    arguments: str = Field(description="Arguments as a JSON string, exactly as the model produced them.")


class ToolCall(BaseModel):
    model_config = _STRICT
    id: str = Field(description="Id of this call; a `tool` message answers it by `tool_call_id`.")
    type: Literal["function"] = Field("function", description="Only function tools exist today.")
    function: FunctionCall = Field(description="The call.")


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Role = Field(description="Who speaks.")
    content: str | None = Field(None, description="Text of the message (None for pure tool calls).")
    name: str | None = Field(None, description="Optional participant name.")
    tool_calls: list[ToolCall] | None = Field(None, description="Tool calls made by an assistant message.")
    tool_call_id: str | None = Field(None, description="For role=tool: the call this message answers.")


def _empty_object_schema() -> dict[str, JsonValue]:
    return {"type": "object", "properties": {}}


class FunctionDef(BaseModel):
    model_config = _STRICT
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Function name.")
    description: str | None = Field(None, description="What the function does, for the model.")
    parameters: dict[str, JsonValue] = Field(
        default_factory=_empty_object_schema,
        description="JSON schema of the arguments.",
    )
    strict: bool | None = Field(None, description="Ask the backend to follow the schema exactly.")


class ToolDef(BaseModel):
    model_config = _STRICT
    type: Literal["function"] = Field("function", description="Tool type.")
    function: FunctionDef = Field(description="The function the model may call.")


class NamedFunction(BaseModel):
    model_config = _STRICT
    name: str = Field(description="Function the model must call.")


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"] = Field("function", description="Tool type.")
    function: NamedFunction = Field(description="The forced function.")


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"] = Field(description="Plain text output.")


class JsonObjectFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_object"] = Field(description="Any valid JSON object.")


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(description="Name of the schema.")
    description: str | None = Field(None, description="What the output is.")
    schema_: dict[str, JsonValue] = Field(alias="schema", description="The JSON schema to satisfy.")
    strict: bool | None = Field(None, description="Ask the backend for exact adherence.")


class JsonSchemaFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"] = Field(description="JSON matching `json_schema`.")
    json_schema: JsonSchemaSpec = Field(description="The schema.")


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class LlmChat(BaseModel):
    """Payload of an `llm.chat` syscall. Every sampling parameter given here reaches the backend."""

    model_config = _STRICT
    kind: Literal["llm.chat"] = Field("llm.chat", description="Syscall kind.")
    model: str = Field(min_length=1, max_length=200, description="Model name as configured in the kernel.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    tools: list[ToolDef] | None = Field(None, description="Functions the model may call.")
    tool_choice: ToolChoice | None = Field(None, description="Whether and which tool must be called.")
    response_format: ResponseFormat | None = Field(None, description="Output format constraint.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int | None = Field(None, ge=1, le=1_000_000, description="Upper bound on output tokens.")
    stop: list[str] | None = Field(None, max_length=8, description="Stop sequences.")
    seed: int | None = Field(None, description="Sampling seed, for backends that honour it.")
    stream: bool = Field(False, description="Also publish tokens on the syscall's stream subject.")


class Usage(BaseModel):
    model_config = _STRICT
    prompt_tokens: int = Field(0, ge=0, description="Input tokens billed.")
    completion_tokens: int = Field(0, ge=0, description="Output tokens billed.")
    total_tokens: int = Field(0, ge=0, description="Sum of both.")


class ChatReply(BaseModel):
    """Result of an `llm.chat` syscall."""

    model_config = _STRICT
    kind: Literal["llm.chat"] = Field("llm.chat", description="Syscall kind this answers.")
    model: str = Field(description="Model that served the call.")
    backend: str = Field("", description="Name of the backend that served the call.")
    content: str | None = Field(None, description="Assistant text.")
    tool_calls: list[ToolCall] | None = Field(None, description="Tool calls the model made.")
    finish_reason: FinishReason | None = Field(
        None,
        description=(
            "Why generation stopped. With a JSON response_format the content is checked against it"
            ' (one retry, then backend_error), except when it is "length": a reply cut by max_tokens'
            " is returned as it is, unvalidated, as OpenAI does."
        ),
    )
    usage: Usage = Field(default_factory=Usage, description="Token usage.")


class StreamChunk(BaseModel):
    """One piece of a streaming generation, published on `aios.v1.stream.<agent>.<syscall id>`."""

    model_config = _STRICT
    id: str = Field(description="Syscall id.")
    seq: int = Field(ge=0, description="Position of this chunk in the stream, from 0.")
    delta: str = Field("", description="New text.")
    done: bool = Field(False, description="True on the last chunk.")
    finish_reason: FinishReason | None = Field(None, description="Set on the last chunk.")


class LlmEmbed(BaseModel):
    """Payload of an `llm.embed` syscall (OpenAI /v1/embeddings)."""

    model_config = _STRICT
    kind: Literal["llm.embed"] = Field("llm.embed", description="Syscall kind.")
    model: str = Field(min_length=1, max_length=200, description="Embedding model name in the kernel.")
    input: list[str] = Field(min_length=1, max_length=2048, description="Texts to embed.")
    dimensions: int | None = Field(None, ge=1, le=65536, description="Output dimension, if supported.")


class EmbedReply(BaseModel):
    model_config = _STRICT
    kind: Literal["llm.embed"] = Field("llm.embed", description="Syscall kind this answers.")
    model: str = Field(description="Model that served the call.")
    backend: str = Field("", description="Backend that served the call.")
    vectors: list[list[float]] = Field(description="One vector per input, in order.")
    usage: Usage = Field(default_factory=Usage, description="Token usage (prompt tokens).")


class ContextSnapshot(BaseModel):
    """A suspended generation (KV `AIOS_CONTEXTS`, key = syscall id): what was produced so far."""

    model_config = _STRICT
    id: str = Field(description="Syscall id.")
    backend: str = Field(description="Backend that produced the partial output.")
    partial: str = Field(description="Assistant text generated before suspension.")
    chunks: int = Field(0, ge=0, description="Stream chunks already published (next seq).")
    usage: Usage = Field(default_factory=Usage, description="Tokens consumed so far, over all runs.")
    suspensions: int = Field(0, ge=0, description="How many times the generation was suspended.")
