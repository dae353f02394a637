"""Build the configured generator and the prompt templates from settings."""

from __future__ import annotations

from pathlib import Path

from rag.config import GenerateSettings, Settings, default_cache_dir
from rag.embed import Embedder, resolve_device
from rag.generate.base import Generator, GeneratorError
from rag.names import GENERATOR_NAMES
from rag.conversation import RewriteTemplates
from rag.prompt import Language, Templates

GENERATORS = GENERATOR_NAMES


def make_generator(settings: Settings, embedder: Embedder, name: str | None = None) -> Generator:
    name = name or settings.answer.generator
    g = settings.generate
    if name == "extractive":
        from rag.generate.extractive import ExtractiveGenerator

        return ExtractiveGenerator(embedder, settings.answer.extractive_min_score)
    if name == "openai":
        from rag.generate.openai import OpenAIGenerator

        if not g.openai_model:
            raise GeneratorError("generator 'openai' needs a model name: set generate.openai_model "
                                 "(RAG_GENERATE_OPENAI_MODEL)")
        return OpenAIGenerator(g.openai_base_url, g.openai_model, g.openai_api_key, timeout=g.timeout,
                               retries=g.retries, context_tokens=settings.answer.context_tokens or 8192,
                               concurrency=g.openai_concurrency)
    if name == "local":
        from rag.generate.local import LocalGenerator, resolve_local_model

        cache_dir = Path(g.cache_dir) if g.cache_dir else default_cache_dir()
        if local_runtime(g, cache_dir) == "openvino":
            from rag.generate.ovgenai import OpenVINOGenerator

            display, path, sha = resolve_local_model(g.local_model, cache_dir)
            return OpenVINOGenerator(g.local_model, path, sha, display, cache_dir, settings.answer.context_tokens,
                                     g.local_prompt_lookup, g.local_precision)
        return LocalGenerator(g.local_model, Path(g.cache_dir) if g.cache_dir else None, g.local_device,
                              g.local_style, settings.answer.context_tokens, stop=("\n",)
                              if g.local_style != "chat" else (), decoding=g.local_decoding,
                              precision=g.local_precision, span_stop_bonus=g.span_stop_bonus,
                              span_free_words=g.span_free_words,
                              prompt_lookup=g.local_prompt_lookup)
    raise GeneratorError(f"unknown generator {name!r}; choose one of {', '.join(GENERATORS)}")


def local_runtime(g: GenerateSettings, cache_dir: Path) -> str:
    """generate.local_runtime, resolved: "auto" runs a GGUF chat model decoding freely on the
    CPU through OpenVINO GenAI (its 4- and 8-bit kernels need no native bf16: on a CPU with it,
    1.5x torch's answer speed in 58% of its memory, and torch falls to fp32 on one without),
    everything else through torch. The model file is looked at only when the settings leave
    OpenVINO possible (a bundled model's is joined and verified when it is read, not here)."""
    from rag.generate.local import resolve_local_model

    if g.local_runtime == "torch":
        return "torch"
    if g.local_runtime == "openvino":
        if resolve_local_model(g.local_model, cache_dir)[1].suffix.lower() != ".gguf":
            raise GeneratorError("generate.local_runtime = 'openvino' runs GGUF files; "
                                 f"{g.local_model!r} is not one (use 'torch')")
        return "openvino"
    from rag.generate.ovgenai import available, runs_on_openvino

    free = g.local_decoding != "span" and g.local_style != "completion" and g.local_precision != "fp16"
    if not (free and resolve_device(g.local_device) == "cpu" and available()):
        return "torch"
    return "openvino" if runs_on_openvino(g.local_model, resolve_local_model(g.local_model, cache_dir)[1]) else "torch"


def templates_from_settings(settings: Settings) -> dict[Language, Templates]:
    p = settings.prompt
    return {
        "en": Templates(p.system_en, p.user_en, p.completion_en, p.passage_en, p.idk_en, p.fence_open, p.fence_close,
                        p.chat_passage_en, p.example_passages_en, tuple(p.examples_en)),
        "zh": Templates(p.system_zh, p.user_zh, p.completion_zh, p.passage_zh, p.idk_zh, p.fence_open, p.fence_close,
                        p.chat_passage_zh, p.example_passages_zh, tuple(p.examples_zh)),
    }


def rewrite_templates_from_settings(settings: Settings) -> dict[Language, RewriteTemplates]:
    """Per language, the prompt that makes a follow-up standalone ([prompt] rewrite_*)."""
    p = settings.prompt
    return {
        "en": RewriteTemplates(p.rewrite_system_en, p.rewrite_user_en, *p.rewrite_labels_en,
                               tuple(tuple(e) for e in p.rewrite_examples_en)),  # type: ignore[misc]
        "zh": RewriteTemplates(p.rewrite_system_zh, p.rewrite_user_zh, *p.rewrite_labels_zh,
                               tuple(tuple(e) for e in p.rewrite_examples_zh)),  # type: ignore[misc]
    }
