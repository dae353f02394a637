"""sentence-transformers on torch: the reference encoder, and the one for GPUs."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from rag.encoders import sequence_limit

log = logging.getLogger(__name__)

# Below this many texts (a single query, say) autocast's casting costs more than it saves.
BF16_MIN_BATCH = 8


class TorchEncoder:
    backend = "torch"

    def __init__(self, model_dir: Path, device: str, precision: str, max_seq_length: int) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the CLI draws its own progress; this one is noise
        model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        if precision == "fp16":
            model.half()
        model.max_seq_length = sequence_limit(max_seq_length, model.max_seq_length or 512)
        self.model: Any = model
        self.precision = precision
        self._device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.tokenizer = model.tokenizer
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dimension = int(getter())
        self.max_seq_length = int(model.max_seq_length)

    def encode(self, texts: list[str], batch_size: int, normalize: bool,
               token_ids: list[list[int] | None] | None = None) -> np.ndarray:
        """`token_ids` is ignored: sentence-transformers tokenizes itself."""
        import torch

        # bf16 through autocast: weights stay fp32, so vectors stay within cosine 1e-4 of fp32.
        bf16 = self.precision == "bf16" and len(texts) >= BF16_MIN_BATCH
        precision = torch.autocast(self._device_type, dtype=torch.bfloat16) if bf16 else nullcontext()
        with precision:
            return self.model.encode(texts, batch_size=batch_size, normalize_embeddings=normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
