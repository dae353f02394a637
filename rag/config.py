"""Settings: config.toml defaults, then a user file, then RAG_* variables, then flags.

Every layer is plain data; pydantic validates the merged result once, so a bad value is
reported with its key, the rule it broke and the layer it came from.
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from rag.errors import ConfigError
from rag.names import GeneratorName, SearchMode

DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.toml")
ENV_PREFIX = "RAG_"
# Collection names: letters, digits, '_', '-', '.', starting with a letter or digit; they appear in
# filters, URLs and messages, so no spaces, slashes or control characters.
COLLECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EmbeddingSettings(_Section):
    model: str = Field(min_length=1)
    batch_size: int = Field(ge=0, le=4096)
    device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"]
    backend: Literal["auto", "torch", "openvino", "onnxruntime"]
    normalize: bool
    query_prefix: str
    passage_prefix: str
    max_seq_length: int = Field(ge=0, le=32768)
    languages: list[Literal["en", "zh", "*"]]


class ChunkingSettings(_Section):
    chunk_size: int = Field(ge=16, le=8192)
    chunk_overlap: int = Field(ge=0, le=4096)
    heading_prefix: bool

    @model_validator(mode="after")
    def _overlap_below_size(self) -> "ChunkingSettings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self


class IngestSettings(_Section):
    json_id_field: str = Field(min_length=1)
    json_text_field: str = Field(min_length=1)
    json_title_field: str = Field(min_length=1)
    ignore_file: str
    exclude: list[str]
    max_file_mb: float = Field(gt=0, le=100_000)
    max_unpacked_mb: float = Field(gt=0, le=100_000)
    max_unpack_ratio: float = Field(ge=10, le=2000)
    max_archive_members: int = Field(ge=100, le=10_000_000)
    max_xml_elements: int = Field(ge=10_000, le=1_000_000_000)
    max_nesting_depth: int = Field(ge=32, le=1_000_000)
    csv_rows_per_chunk: int = Field(ge=1, le=10_000)
    ocr: Literal["auto", "never", "always"]
    ocr_min_confidence: float = Field(ge=0, le=1)
    ocr_dpi: int = Field(ge=72, le=600)
    workers: int = Field(ge=0, le=64)
    collection: str
    follow_symlinks: Literal["inside", "never", "all"]

    @field_validator("collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        if not re.fullmatch(COLLECTION_PATTERN, value):
            raise ValueError("a collection name is 1-64 letters, digits, '_', '-' or '.', starting with a letter "
                             "or digit (e.g. hr, it-faq, sales.2026)")
        return value


class IndexSettings(_Section):
    path: Path
    factory: str = Field(min_length=1)
    train_sample: int = Field(ge=256, le=10_000_000)
    nprobe: int = Field(ge=1, le=65536)
    hnsw_ef_search: int = Field(ge=1, le=65536)
    device: Literal["auto", "cpu"]
    keep_versions: int = Field(ge=0, le=100)
    max_segments: int = Field(ge=1, le=10)
    shards: int = Field(ge=1, le=64)
    ondisk_bytes: int = Field(ge=0)
    sync_max_delete: float = Field(ge=0, le=1)
    bm25_stem: bool
    bm25_stopwords: Literal["en", "none"]
    bm25_chinese: Literal["jieba", "bigrams"]
    bm25_k1: float = Field(gt=0, le=10)
    bm25_b: float = Field(ge=0, le=1)


class SearchSettings(_Section):
    k: int = Field(ge=1, le=1000)
    mode: SearchMode
    fusion: Literal["scores", "rrf"]
    candidates: int = Field(ge=1, le=10000)
    rrf_k: float = Field(ge=0, le=10000)
    dense_weight: float = Field(ge=0, le=100)
    bm25_weight: float = Field(ge=0, le=100)
    reranker: str
    rerank_top_n: int = Field(ge=1, le=1000)


class CorpusSettings(_Section):
    path: Path


class ServeSettings(_Section):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    workers: int = Field(ge=1, le=64)
    keys_file: str
    feedback_file: str
    feedback_hours: float = Field(ge=0, le=24 * 366)
    cors_origins: list[str]
    max_request_mb: float = Field(gt=0, le=10_000)
    max_upload_mb: float = Field(gt=0, le=100_000)
    upload_collection: str
    upload_dir: str
    upload_spool_mb: float = Field(gt=0, le=10_000_000)
    generators: list[GeneratorName]
    queue_depth: int = Field(ge=1, le=100_000)
    batch_size: int = Field(ge=1, le=1024)
    timeout: float = Field(gt=0, le=86_400)
    log_questions: bool
    header_timeout: float = Field(ge=0, le=3600)
    body_timeout: float = Field(ge=0, le=86_400)
    body_min_rate_kb: float = Field(ge=0, le=1_048_576)
    max_connections_per_client: int = Field(ge=0, le=1_000_000)
    audit: bool
    audit_days: float = Field(gt=0, le=3660)
    audit_file: str

    @field_validator("upload_collection")
    @classmethod
    def _collection_name(cls, value: str) -> str:
        return IngestSettings._collection_name(value)


class AnswerSettings(_Section):
    generator: GeneratorName
    rewrite: Literal["auto", "rewrite", "combine", "off"]
    rewrite_max_tokens: int = Field(ge=8, le=512)
    rewrite_timeout: float = Field(gt=0, le=600)
    k: int = Field(ge=1, le=100)
    max_new_tokens: int = Field(ge=1, le=8192)
    context_tokens: int = Field(ge=0, le=1_000_000)
    max_question_chars: int = Field(ge=16, le=100_000)
    min_relevance: float = Field(ge=-1, le=1)
    verify: Literal["auto", "abstain", "warn", "off"]
    verify_min_words: float = Field(ge=0, le=1)
    extractive_min_score: float = Field(ge=-1.0, le=1.5)


class GenerateSettings(_Section):
    local_model: str = Field(min_length=1)
    local_style: Literal["auto", "chat", "completion"]
    local_decoding: Literal["auto", "span", "free"]
    local_max_passages: int = Field(ge=0, le=100)
    local_focus_sentences: int = Field(ge=0, le=1000)
    span_stop_bonus: float = Field(ge=0, le=100)
    span_free_words: int = Field(ge=0, le=1000)
    local_prompt_lookup: int = Field(ge=0, le=64)
    local_device: str = Field(pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    local_precision: Literal["auto", "bf16", "fp16", "fp32"]
    local_runtime: Literal["auto", "openvino", "torch"]
    cache_dir: str
    openai_base_url: str
    openai_model: str
    openai_api_key: str
    openai_concurrency: int
    timeout: float = Field(gt=0, le=3600)
    retries: int = Field(ge=0, le=20)

    @field_validator("openai_concurrency")
    @classmethod
    def _concurrency_range(cls, value: int) -> int:
        if not 1 <= value <= 256:
            raise ValueError("must be 1 to 256 requests at once; set it near the OpenAI-compatible server's "
                             "batch size (vLLM's --max-num-seqs)")
        return value


_FENCES = {"open", "close"}
# What the prompt builder fills in each kind of template (rag/prompt.py).
_TEMPLATE_FIELDS: dict[str, set[str]] = {
    **{kind: {"passages", "question", "idk", *_FENCES} for kind in ("system", "user", "completion")},
    **{kind: {"number", "title", "source", "location", "text", *_FENCES} for kind in ("passage", "chat_passage")},
    **{kind: {"idk", *_FENCES} for kind in ("example_passages", "examples")},
    **{kind: {"conversation", "question"} for kind in ("rewrite_system", "rewrite_user")},
}


class PromptSettings(_Section):
    fence_open: str = Field(min_length=1)
    fence_close: str = Field(min_length=1)
    idk_en: str = Field(min_length=1)
    idk_zh: str = Field(min_length=1)
    passage_en: str
    passage_zh: str
    chat_passage_en: str
    chat_passage_zh: str
    system_en: str
    user_en: str
    system_zh: str
    user_zh: str
    example_passages_en: str
    examples_en: list[tuple[str, str]]
    example_passages_zh: str
    examples_zh: list[tuple[str, str]]
    completion_en: str
    completion_zh: str
    rewrite_system_en: str = Field(min_length=1)
    rewrite_user_en: str = Field(min_length=1)
    rewrite_labels_en: tuple[str, str]
    rewrite_examples_en: list[tuple[str, str, str]]
    rewrite_system_zh: str = Field(min_length=1)
    rewrite_user_zh: str = Field(min_length=1)
    rewrite_labels_zh: tuple[str, str]
    rewrite_examples_zh: list[tuple[str, str, str]]

    @field_validator("*")
    @classmethod
    def _known_fields(cls, value: Any, info: ValidationInfo) -> Any:
        """A template naming a field the prompt builder never fills fails here, with the setting's
        name, rather than as a KeyError at the first question."""
        name = info.field_name or ""
        allowed = _TEMPLATE_FIELDS.get(name.rsplit("_", 1)[0])
        if allowed is None:
            return value
        texts = [answer for _, answer in value] if name.startswith("examples_") else [value]
        for text in texts:
            unknown = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None and f not in allowed]
            if unknown:
                raise ValueError(f"unknown template field {{{unknown[0]}}} (use {', '.join(sorted(allowed))}; "
                                 "a literal brace is written twice)")
        return value


class AccessSettings(_Section):
    default: Literal["public", "private"]
    collections: dict[str, Literal["public", "private"]]


class OidcSettings(_Section):
    issuer: str
    audience: str
    client_id: str
    client_secret: str
    user_claim: str = Field(min_length=1)
    groups_claim: str
    scope: Literal["read", "write"]
    algorithms: list[Literal["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                             "EdDSA"]] = Field(min_length=1)
    leeway: float = Field(ge=0, le=600)
    jwks_refresh: float = Field(ge=0, le=86_400)
    login_scopes: str = Field(min_length=1)
    redirect_url: str

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError("give the provider's issuer URL, e.g. https://login.example.com/realms/corp")
        return value.rstrip("/")


class Settings(_Section):
    embedding: EmbeddingSettings
    chunking: ChunkingSettings
    ingest: IngestSettings
    index: IndexSettings
    search: SearchSettings
    corpus: CorpusSettings
    serve: ServeSettings
    answer: AnswerSettings
    generate: GenerateSettings
    prompt: PromptSettings
    access: AccessSettings
    oidc: OidcSettings

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Effective settings: defaults < config_file (or $RAG_CONFIG) < RAG_* env < overrides."""
        return load_settings(config_file, overrides, environ)[0]


@dataclass(frozen=True)
class Origin:
    """Where an effective setting came from, for `rag config`."""

    layer: Literal["default", "file", "env", "flag"]
    detail: str

    def __str__(self) -> str:
        return f"{self.layer} ({self.detail})" if self.detail else self.layer


def default_cache_dir() -> Path:
    """Where prepared models are kept (de-quantized generators, exported encoders)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def _flatten(data: Mapping[str, Any], source: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section == "sources" and isinstance(values, list):
            continue  # [[sources]] tables: rag.sources.settings reads them
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: '{section}' must be a [section] table, e.g. [{section}]")
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _parse_env_value(raw: str, default: Any) -> Any:
    """Env values are strings; read lists as TOML and leave the rest for pydantic to coerce."""
    if isinstance(default, list):
        try:
            return tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def known_keys() -> list[str]:
    return sorted(_flatten(_read_toml(DEFAULT_CONFIG_FILE), DEFAULT_CONFIG_FILE))


def env_var_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, dict[str, Origin]]:
    """Merge the layers and validate; returns the settings and the origin of every key."""
    environ = os.environ if environ is None else environ
    values = _flatten(_read_toml(DEFAULT_CONFIG_FILE), DEFAULT_CONFIG_FILE)
    origins = {key: Origin("default", str(DEFAULT_CONFIG_FILE.resolve())) for key in values}

    if config_file is None and environ.get("RAG_CONFIG"):
        config_file = environ["RAG_CONFIG"]
    if config_file is not None:
        path = Path(config_file)
        for key, value in _flatten(_read_toml(path), path).items():
            if key not in values:
                raise ConfigError(f"{path}: unknown setting '{key}'. Known settings: {', '.join(known_keys())}")
            values[key] = value
            origins[key] = Origin("file", str(path))

    for key, default in list(values.items()):
        name = env_var_name(key)
        if name in environ:
            values[key] = _parse_env_value(environ[name], default)
            origins[key] = Origin("env", name)

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in values:
            raise ConfigError(f"unknown setting '{key}'. Known settings: {', '.join(known_keys())}")
        values[key] = value
        origins[key] = Origin("flag", key)

    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    try:
        return Settings.model_validate(nested), origins
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origins)) from None


def _describe(exc: ValidationError, origins: Mapping[str, Origin]) -> str:
    lines = ["invalid settings:"]
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"])
        origin = origins.get(loc)
        where = f" (from {origin})" if origin else ""
        value = f" = {err['input']!r}" if not isinstance(err.get("input"), dict) else ""
        lines.append(f"  {loc}{value}: {err['msg']}{where}")
    return "\n".join(lines)


def settings_as_flat_dict(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, values in settings.model_dump(mode="json").items():
        for key, value in values.items():
            out[f"{section}.{key}"] = value
    return out
