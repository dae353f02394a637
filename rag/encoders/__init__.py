"""The runtimes that turn texts into vectors for `rag.embed.Embedder`.

- `torch`: sentence-transformers on torch, the reference (and the only one on a GPU).
- `openvino`, `onnxruntime`: the same weights exported once to ONNX (`rag.encoders.onnx_export`)
  and run without importing torch or transformers. On this project's 2-core CPU OpenVINO in bf16
  embedded passages 1.3x faster than torch in bf16, and a query in 1.8 ms instead of 7.5 ms;
  a fresh process is ready in well under a second instead of about 4 s of imports.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.errors import ConfigError

log = logging.getLogger(__name__)

COMPILED_BACKENDS = ("openvino", "onnxruntime")


class Encoder(Protocol):
    backend: str
    precision: str
    dimension: int
    max_seq_length: int
    # For counting tokens the way the encoder will (rag.chunk.HFTokenCounter).
    tokenizer: Any

    def encode(self, texts: list[str], batch_size: int, normalize: bool,
               token_ids: list[list[int] | None] | None = None) -> np.ndarray: ...


def sequence_limit(requested: int, native: int) -> int:
    """embedding.max_seq_length (0: the model's own), refused above what the model takes."""
    if requested > native:
        raise ConfigError(f"embedding.max_seq_length = {requested} is over the model's maximum of {native}; "
                          "use 0 (the model's own) or a smaller value")
    return requested or native


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def compiled_support(model_dir: Path) -> tuple[str | None, str]:
    """(pooling, "") when the ONNX runtimes can run this model exactly; (None, why) otherwise.

    Only the plain sentence-transformers layout is exported: a transformer, then mean or CLS
    pooling, then optionally normalization. Anything more (a Dense projection, say) stays on
    torch rather than being run half right."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file() or not (model_dir / "tokenizer.json").is_file():
        return None, "it has no modules.json or tokenizer.json (not a sentence-transformers folder)"
    if not (model_dir / "model.safetensors").is_file():
        return None, "its weights are not in model.safetensors (other formats would be unpickled)"
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
        return None, f"its modules are {kinds}; only Transformer, Pooling (and Normalize) are exported"
    if any(m.get("path") for m in modules[:1]):
        return None, "its transformer sits in a sub-folder"
    pooling_dir = model_dir / modules[1].get("path", "1_Pooling")
    pooling = json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
    modes = [k.removeprefix("pooling_mode_").removesuffix("_token").removesuffix("_tokens")
             for k, v in pooling.items() if k.startswith("pooling_mode_") and v]
    if modes not in (["mean"], ["cls"]):
        return None, f"its pooling is {modes}; only mean or CLS pooling is exported"
    return modes[0], ""


def choose_backend(requested: str, device: str, model_dir: Path) -> str:
    """The backend `embedding.backend` names, or for "auto" the fastest one that can run it."""
    if requested == "torch":
        return "torch"
    if requested in COMPILED_BACKENDS:
        if device != "cpu":
            raise ConfigError(f"embedding.backend = {requested!r} runs on the CPU; embedding.device is {device!r} "
                              "(use backend 'torch' on a GPU)")
        if not installed(requested):
            raise ConfigError(f"embedding.backend = {requested!r} is not installed: pip install {requested}")
        pooling, why = compiled_support(model_dir)
        if pooling is None:
            raise ConfigError(f"embedding.backend = {requested!r} cannot run {model_dir.name}: {why}; "
                              "use embedding.backend = 'torch'")
        return requested
    # auto
    if device != "cpu":
        return "torch"
    pooling, why = compiled_support(model_dir)
    if pooling is None:
        log.info("embedding on torch: %s cannot be exported (%s)", model_dir.name, why)
        return "torch"
    for runtime in COMPILED_BACKENDS:
        if installed(runtime):
            return runtime
    return "torch"
