"""Request bodies of the /v1 routes: strict (unknown fields are an error, not ignored)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["hybrid", "dense", "bm25"]
GeneratorName = Literal["local", "openai", "extractive"]
FilterList = list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Question(_Strict):
    question: str = Field(min_length=1, max_length=100_000)
    k: int | None = Field(default=None, ge=1, le=1000)
    filters: FilterList = Field(default_factory=list, max_length=32,
                                description="`rag search --filter` expressions, e.g. source=hr/*")


class SearchRequest(_Question):
    mode: Mode | None = None


class AskRequest(_Question):
    mode: Mode | None = None
    generator: GeneratorName | None = None
    stream: bool = Field(default=False, description="Server-Sent Events: `passages`, then `token`s, then `answer`")


class DocumentRecord(_Strict):
    id: str = Field(min_length=1, max_length=1000)
    text: str = Field(min_length=1)
    title: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _finite(cls, value: dict[str, Any]) -> dict[str, Any]:
        """NaN and Infinity are not JSON: stored, they would break every filter over metadata."""
        if not all_finite(value):
            raise ValueError("metadata numbers must be finite (NaN and Infinity are not JSON); use null instead")
        return value


def all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


class RecordsUpload(_Strict):
    collection: str | None = Field(default=None, description="default: serve.upload_collection")
    records: list[DocumentRecord] = Field(min_length=1, max_length=100_000)


class ErrorItem(BaseModel):
    """One problem with a request's fields (never the input itself: it may hold secrets)."""

    loc: list[str | int]
    msg: str
    type: str | None = None


class ErrorResponse(BaseModel):
    """Every error of the /v1 routes but the OpenAI-compatible ones: a sentence saying what to
    do, or (for fields that failed validation) one item per problem."""

    detail: str | list[ErrorItem]


# The error answers any /v1 route may give, declared so that /openapi.json describes them.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": why} for status, why in (
        (400, "The request cannot be served as sent"), (401, "No valid API key"),
        (403, "The key may not do this, or open mode refused another site's request"),
        (404, "Not found, or not visible to the key"), (409, "Ambiguous: name the collection"),
        (408, "The request was not received in time"), (413, "The body is over its limit"),
        (415, "Unsupported content type"), (422, "Invalid fields or values"), (429, "Too many connections"),
        (503, "Busy, or the index is unavailable: retry after Retry-After"),
        (504, "No result within serve.timeout"))}


# A route that streams with `stream: true` answers Server-Sent Events as well as JSON.
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {"schema": {
    "type": "object", "description": "One Server-Sent Event: its name (where the route names them) and its data",
    "required": ["data"], "properties": {"event": {"type": "string"}, "data": {"type": "string"}}}}}}}
