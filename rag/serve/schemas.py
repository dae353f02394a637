"""The bodies of the /v1 routes (but the OpenAI-compatible ones, rag.serve.openai_schemas):
requests, strict (unknown fields are an error, not ignored), and responses, so that /docs and
/openapi.json describe every answer. Document listings, details and facets are the dataclasses
of rag.records, returned as the engine gives them."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rag.citations import Answer
from rag.conversation import Turn
from rag.names import GeneratorName, SearchMode
from rag.records import Hit
from rag.serve.feedback import Rating
from rag.serve.jobs import Job, State
from rag.serve.callers import Caller
from rag.serve.keys import Scope

FilterList = list[str]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HistoryTurn(_Strict):
    """One earlier turn of the conversation."""

    role: Literal["user", "assistant"]
    content: str = Field(max_length=100_000)


class _Question(_Strict):
    question: str = Field(min_length=1, max_length=100_000)
    k: int | None = Field(default=None, ge=1, le=1000)
    filters: FilterList = Field(default_factory=list, max_length=32,
                                description="`rag search --filter` expressions, e.g. source=hr/*")
    history: list[HistoryTurn] = Field(
        default_factory=list, max_length=200,
        description="The conversation's earlier turns, oldest first: a follow-up (\"and in Shanghai?\") is "
                    "searched as a standalone question (`query`) and answered in context. Only the documents the "
                    "key may see are ever searched, whatever the turns say.")

    def turns(self) -> list[Turn]:
        return [Turn(t.role, t.content) for t in self.history]


class SearchRequest(_Question):
    mode: SearchMode | None = None


class AskRequest(_Question):
    mode: SearchMode | None = None
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


# -- responses ------------------------------------------------------------------------------


class Alive(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    ready: bool = Field(description="Models and index are loaded (answered 503 while not)")


class SearchHit(BaseModel):
    """One passage found: the `rag search --json` shape."""

    text: str
    score: float
    doc_id: str
    source: str
    metadata: dict[str, Any] = Field(description="The chunk's metadata, with its `chunk_id`")


class SearchResults(BaseModel):
    query: str = Field(description="What was searched: the question, or a follow-up's standalone form")
    hits: list[SearchHit]

    @classmethod
    def of(cls, query: str, hits: list[Hit]) -> SearchResults:
        return cls.model_validate({"query": query, "hits": [hit.as_dict() for hit in hits]})


class CitationBody(BaseModel):
    """A validated citation: `number` is the `n` of an `[n]` marker in the answer."""

    number: int
    doc_id: str
    source: str
    title: str
    location: str
    quote: str


class PassageBody(BaseModel):
    """A numbered passage as given to the generator (neighbouring chunks merged)."""

    number: int
    text: str
    doc_id: str
    source: str
    title: str
    location: str
    score: float
    chunk_ids: list[int]


class PassagesEvent(BaseModel):
    """The data of a stream's `passages` event: what was searched, and the numbered passages."""

    query: str
    passages: list[PassageBody]


class AnswerBody(BaseModel):
    """The `rag ask --json` object plus its `id` (for POST /v1/feedback)."""

    id: str
    question: str
    query: str = Field(description="What was searched: the question, or a follow-up's standalone form")
    answer: str
    citations: list[CitationBody]
    passages: list[PassageBody]
    abstained: bool
    grounded: bool
    timings: dict[str, float] = Field(description="Seconds per stage")
    tokens: dict[str, int] = Field(description="`prompt` and `completion` tokens through the generator")
    generator: str
    warnings: list[str]

    @classmethod
    def of(cls, answer_id: str, answer: Answer) -> AnswerBody:
        return cls.model_validate({"id": answer_id, **answer.as_dict()})


class DeletedDocument(BaseModel):
    collection: str
    doc_id: str


class Deleted(BaseModel):
    deleted: list[DeletedDocument]


class DeletedMatching(Deleted):
    count: int


class JobCounts(BaseModel):
    documents: int
    added: int
    updated: int
    unchanged: int
    chunks: int
    skipped: int
    failed: int


class JobProblem(BaseModel):
    path: str
    reason: str
    kind: Literal["skipped", "failed"]


class JobStatus(BaseModel):
    """An upload job: its state, counts and per-file problems."""

    id: str
    state: State
    collection: str
    files: list[str]
    created: float
    finished: float | None
    counts: JobCounts
    problems: list[JobProblem]
    error: str | None

    @classmethod
    def of(cls, job: Job) -> JobStatus:
        return cls.model_validate(job.as_dict())


class Rated(BaseModel):
    answer_id: str
    rating: Rating
    replaced: bool = Field(description="The answer had a rating, which this one replaces")


class OpenAccess(BaseModel):
    """The service has no keys (loopback only): every route is open."""

    open: Literal[True]


class KeyInfo(BaseModel):
    """The calling key (never its secret) and the person whose access applies."""

    open: Literal[False]
    name: str = Field(description="The key's name; `oidc` for a person signed in with the identity provider")
    scope: Scope
    filters: list[str]
    on_behalf: bool = Field(default=False, description="The key passes the people it serves (X-Rag-User)")
    user: str | None = Field(default=None, description="The person whose access applies")
    groups: list[str] = Field(default_factory=list, description="Their groups")

    @classmethod
    def of(cls, caller: Caller) -> KeyInfo:
        key, person = caller.key, caller.person
        return cls(open=False, name=caller.name or "", scope=caller.scope, filters=list(key.filters if key else ()),
                   on_behalf=bool(key and key.on_behalf), user=person.user if person else None,
                   groups=list(person.groups) if person else [])


class IndexStatus(BaseModel):
    """Whether the index exists; its live version, counts and time of the last write when it can
    be read, or the name of the error that keeps it from being read."""

    exists: bool
    version: str | None = None
    counts: dict[str, int] | None = None
    updated_at: str | None = None
    error: str | None = None


class ModelNames(BaseModel):
    embedding: str | None
    generator: str
    local_model: str
    reranker: str | None


class RequestCounts(BaseModel):
    total: int
    by_status: dict[str, int]


class Percentiles(BaseModel):
    count: int
    p50: float
    p95: float
    p99: float


class Latencies(BaseModel):
    routes: dict[str, Percentiles]
    stages: dict[str, Percentiles]


class StatsScope(BaseModel):
    """Which figures are this process's own and which every worker's together."""

    requests: str
    queues: str
    latency_seconds: str
    pid: int


class Stats(BaseModel):
    index: IndexStatus
    models: ModelNames
    requests: RequestCounts
    latency_seconds: Latencies
    queues: dict[str, int]
    scope: StatsScope


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
