"""Request bodies of the /v1 routes: strict (unknown fields are an error, not ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class RecordsUpload(_Strict):
    collection: str | None = Field(default=None, description="default: serve.upload_collection")
    records: list[DocumentRecord] = Field(min_length=1, max_length=100_000)
