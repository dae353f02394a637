"""The bodies of the OpenAI-compatible routes, in OpenAI's own shapes: the chat completion
request, the completion and model objects, and OpenAI's error body, which its clients raise as
exceptions carrying `message` (FastAPI's `{"detail"}` would reach an OpenAI client's user as a
bare dict)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.citations import Answer
from rag.serve.schemas import CitationBody

# -- request --------------------------------------------------------------------------------


class ContentPart(BaseModel):
    """One part of a message's content; only text parts can be asked about."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    """A message of the conversation. Lenient about the fields OpenAI messages may carry (name,
    tool_calls, refusal, ...): only the last user message's text is read."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Strict about unknown top-level fields, like the other
    /v1 routes (a misspelt parameter is an error, not silently dropped), but every parameter of
    OpenAI's API is accepted, so its clients work unchanged."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=10_000)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = Field(default=1, description="only 1: the knowledge base gives one answer")
    response_format: dict[str, Any] | None = Field(default=None, description="only {\"type\": \"text\"}")
    # Accepted and ignored: the engine's own settings decide generation.
    temperature: Any = None
    top_p: Any = None
    max_tokens: Any = None
    max_completion_tokens: Any = None
    stop: Any = None
    seed: Any = None
    user: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None
    functions: Any = None
    function_call: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    modalities: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    prompt_cache_key: Any = None
    safety_identifier: Any = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int | None) -> int | None:
        if value not in (None, 1):
            raise ValueError("n must be 1: the knowledge base gives one answer per question")
        return value

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only the text response format is possible: answers are cited text")
        return value


# -- responses ------------------------------------------------------------------------------


class ModelCard(BaseModel):
    """A model an OpenAI client may pick: one per generator the server offers."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, answer: Answer) -> Usage:
        prompt, completion = answer.tokens.get("prompt", 0), answer.tokens.get("completion", 0)
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: dict[str, Any] | None = None
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    """OpenAI's chat completion, with one extra top-level field: `citations`."""

    id: str = Field(description="`chatcmpl-<answer id>`; POST /v1/feedback takes the part after `chatcmpl-`")
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[Choice]
    usage: Usage
    citations: list[CitationBody] = Field(description="The validated citations, as /v1/ask gives them")
    query: str = Field(description="What was searched: the last user message, or its standalone form when it "
                                   "follows up on earlier ones")


# -- errors ---------------------------------------------------------------------------------


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """OpenAI's error body, which its clients raise as exceptions carrying `message`."""

    error: OpenAIErrorBody


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError} for status in (400, 401, 403, 404, 408, 413, 422, 429, 503, 504)}


# The error answers of every OpenAI-compatible route, declared so that /openapi.json describes them.
OPENAI_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": OpenAIError} for status in (400, 401, 403, 404, 408, 413, 422, 429, 503, 504)}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          422: "invalid_request_error", 429: "rate_limit_error"}
_CODES = {401: "invalid_api_key", 503: "service_unavailable", 504: "timeout"}


def openai_error(status: int, message: str, code: str | None = None, param: str | None = None) -> OpenAIError:
    """OpenAI's error body for an HTTP status: its clients raise exceptions carrying this message."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return OpenAIError(error=OpenAIErrorBody(message=message, type=kind, param=param, code=code or _CODES.get(status)))
