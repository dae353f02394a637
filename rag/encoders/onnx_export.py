"""Exports a sentence-transformers model to ONNX once, into the cache, and checks it before use.

The export runs torch on the model's safetensors weights (never a pickle), puts the pooling into
the graph, and is kept only if its vectors agree with sentence-transformers' own (cosine of at
least `MIN_COSINE` on probe texts, padded batches and a truncated text among them). The file's
SHA-256 is recorded beside it and checked at every load, so a truncated or altered cache is
exported again instead of read. Nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from rag.encoders import installed
from rag.errors import ConfigError

log = logging.getLogger(__name__)

# Bump when the exported graph changes, so old caches are not read.
# 2: an OpenVINO IR copy (model.xml, model.bin) beside model.onnx.
EXPORT_VERSION = 2
IR_FILES = ("model.xml", "model.bin")
MIN_COSINE = 0.9999
# int8 (dynamic quantization) is lossy by design; below this it is refused, not used.
MIN_COSINE_INT8 = 0.95
RECORD = "export.json"
PROBES = [
    "How many days of annual leave do employees in Lisbon get?",
    "Revenue",
    "The committee approved the budget for the new data centre on 12 March 2024, subject to review.",
    "Mitochondria are the site of oxidative phosphorylation in eukaryotic cells. " * 40,  # over the limit
    "Zu Hause arbeiten: dreimal pro Woche erlaubt.",
    "员工每年有二十天带薪年假。",
]


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def export_folder(name: str, model_dir: Path, cache_dir: Path) -> Path:
    weights = _sha256(model_dir / "model.safetensors")
    label = name.replace("/", "--")
    return cache_dir / "encoders" / f"{label}-{weights[:16]}-v{EXPORT_VERSION}"


def _verified(folder: Path, name: str) -> Path | None:
    """The file if the record vouches for it (same size and SHA-256), else None."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        entry = record["files"][name]
        path = folder / name
        if path.stat().st_size == entry["size"] and _sha256(path) == entry["sha256"]:
            return path
        log.warning("%s does not match its export record: exporting it again", path)
    except (OSError, KeyError, ValueError, TypeError):
        pass
    return None


def exported_model(name: str, model_dir: Path, cache_dir: Path, pooling: str, backend: str,
                   int8: bool = False) -> Path:
    """The verified file `backend` reads for this model, exported on first use (a few seconds
    for MiniLM): OpenVINO's IR (its 8-bit weights are made from it when compiled), or for ONNX
    Runtime the ONNX file (int8: its dynamically quantized copy). Only the files read are
    hashed. Concurrent first uses export once."""
    folder = export_folder(name, model_dir, cache_dir)
    int8 = int8 and backend != "openvino"
    file_name = "model.xml" if backend == "openvino" else "model-int8.onnx" if int8 else "model.onnx"

    def found() -> Path | None:
        return openvino_ir(folder / "model.onnx") if backend == "openvino" else _verified(folder, file_name)

    if (path := found()) is not None:
        return path
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be exporting the same model
        if (path := found()) is not None:
            return path
        _export(name, model_dir, folder, pooling, int8)
    path = found()
    if path is None:
        raise ConfigError(f"the export of {name} to {file_name} in {folder} could not be verified after writing it")
    return path


def _reference_vectors(model_dir: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    return model.encode(PROBES, batch_size=4, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)


def _export(name: str, model_dir: Path, folder: Path, pooling: str, int8: bool) -> None:
    started = time.perf_counter()
    log.warning("exporting the embedding model %s to ONNX once (a few seconds); later runs load it from %s",
                name, folder)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=folder.parent))
    try:
        record = {"files": {}}
        if (folder / RECORD).is_file() and _verified(folder, "model.onnx"):
            record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
            for kept in ("model.onnx", *IR_FILES):
                if _verified(folder, kept):
                    shutil.copy2(folder / kept, work / kept)
                else:
                    record["files"].pop(kept, None)
        else:
            _write_onnx(model_dir, work / "model.onnx", pooling)
            record = {"source": str(model_dir), "pooling": pooling, "export_version": EXPORT_VERSION, "files": {}}
            record["files"]["model.onnx"] = _check(model_dir, work / "model.onnx", MIN_COSINE)
        if installed("openvino") and not all(name in record["files"] for name in IR_FILES):
            _write_ir(work)
            record["files"].update({name: {"size": (work / name).stat().st_size, "sha256": _sha256(work / name)}
                                    for name in IR_FILES})
        if int8:
            try:
                from onnxruntime.quantization import QuantType, quantize_dynamic
            except ImportError:
                raise ConfigError("embedding.precision = 'int8' needs the onnx package: pip install 'rag[int8]'") from None

            root = logging.getLogger()
            quiet = _Without("pre-processing before quantization")  # its advice for image models
            root.addFilter(quiet)
            try:
                quantize_dynamic(str(work / "model.onnx"), str(work / "model-int8.onnx"),
                                 weight_type=QuantType.QInt8, per_channel=True)
            finally:
                root.removeFilter(quiet)
            record["files"]["model-int8.onnx"] = _check(model_dir, work / "model-int8.onnx", MIN_COSINE_INT8)
        (work / RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
        for path in work.iterdir():
            with path.open("rb") as fh:
                os.fsync(fh.fileno())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.warning("exported %s in %.1f s", name, time.perf_counter() - started)


def _write_ir(work: Path) -> None:
    """model.onnx saved as OpenVINO IR: OpenVINO maps an IR's weights from the file, where from
    ONNX it holds its reader's copy for as long as the compiled model lives (90 MB for MiniLM)."""
    import openvino as ov

    ov.save_model(ov.Core().read_model(work / "model.onnx"), work / "model.xml", compress_to_fp16=False)


def openvino_ir(onnx_path: Path) -> Path | None:
    """The verified IR copy of an exported fp32 model, or None (an export made without OpenVINO,
    or a damaged one: exported_model writes it again)."""
    if onnx_path.name != "model.onnx" or any(_verified(onnx_path.parent, name) is None for name in IR_FILES):
        return None
    return onnx_path.parent / "model.xml"


class _Without(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _check(model_dir: Path, onnx_path: Path, minimum: float) -> dict:
    """Size, SHA-256 and the agreement with sentence-transformers of one exported file."""
    from rag.encoders.compiled import CompiledEncoder

    backend = "onnxruntime" if "int8" in onnx_path.name else (
        "openvino" if installed("openvino") else "onnxruntime")
    encoder = CompiledEncoder(model_dir, onnx_path, backend, "fp32", 0)
    cosine = float((encoder.encode(PROBES, 4, True) * _reference_vectors(model_dir)).sum(axis=1).min())
    if cosine < minimum:
        raise ConfigError(f"the ONNX export of {model_dir.name} disagrees with sentence-transformers (cosine "
                          f"{cosine:.5f} < {minimum}); use embedding.backend = 'torch'")
    return {"size": onnx_path.stat().st_size, "sha256": _sha256(onnx_path), "min_cosine": round(cosine, 6),
            "runtime_checked": backend}


def _write_onnx(model_dir: Path, path: Path, pooling: str) -> None:
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    # Eager attention: a plain masked softmax exports to ONNX operators every runtime has.
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager", local_files_only=True,
                                      use_safetensors=True).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pooling == "cls":
                return hidden[:, 0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    dynamic = {0: "batch", 1: "tokens"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes it fixes: checked by _check
        torch.onnx.export(Pooled(), example, str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "embedding": {0: "batch"}})
