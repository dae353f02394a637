"""The GGUF chat model prepared once for OpenVINO GenAI, cached and checked like the embedder's
ONNX export (rag/encoders/onnx_export.py).

OpenVINO GenAI reads a GGUF into a model whose Q4_K/Q6_K weights stay 4- and 8-bit, but
building it from the GGUF on every start holds the weights twice in anonymous memory (the read
arrays and the CPU plugin's packed copy): 3.0 GB resident for the 1.5B. Saved once as OpenVINO
IR, the weights are memory-mapped from the file instead, and once the plugin has packed its own
copy (on the first generation) `release_mapped_weights` hands the file's pages back to the page
cache. The IR is written from the SHA-256-verified GGUF into a folder named by that SHA-256,
with a record of every file's size and SHA-256 that is checked at every load: a truncated or
altered cache is prepared again, never read.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from rag.generate.base import GeneratorError
from rag.generate.bundled import sha256_file

log = logging.getLogger(__name__)

# Bump when what is prepared changes, so that old folders are not read.
# 2: Q6_K's zero points, all 32, held as one number (uniform_zero_points).
PREPARED_VERSION = 2
RECORD = "prepared.json"
FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_tokenizer.bin",
         "openvino_detokenizer.xml", "openvino_detokenizer.bin")


def prepared_folder(cache_dir: Path, gguf: Path, sha256: str) -> Path:
    return cache_dir / "openvino-genai" / f"{gguf.stem}-{sha256[:16]}-v{PREPARED_VERSION}"


def read_record(folder: Path, sha256: str) -> dict[str, Any] | None:
    """The folder's record if every file matches it (size and SHA-256) and it was prepared from
    the GGUF with this SHA-256; else None."""
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        if record["source_sha256"] != sha256 or record["version"] != PREPARED_VERSION:
            return None
        for name in FILES:
            entry, path = record["files"][name], folder / name
            if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
                log.warning("%s does not match its record: preparing the model again", path)
                return None
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return dict(record)


def prepared_model(gguf: Path, sha256: str, cache_dir: Path,
                   provide_source: Callable[[], object] = lambda: None) -> tuple[Path, dict[str, Any]]:
    """The verified IR folder of this GGUF and its record, prepared on first use (about 25 s for
    the 1.5B on 2 cores). A verified folder is loaded without the GGUF; `provide_source` makes
    it present (a bundled model joins and verifies its parts) only when the folder is to be
    prepared. Concurrent first uses prepare once."""
    folder = prepared_folder(cache_dir, gguf, sha256)
    record = read_record(folder, sha256)
    if record is not None:
        return folder, record
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be preparing the same model
        record = read_record(folder, sha256)
        if record is None:
            provide_source()
            _prepare(gguf, sha256, folder)
            record = read_record(folder, sha256)
    if record is None:
        raise GeneratorError(f"the OpenVINO model prepared from {gguf.name} in {folder} could not be verified "
                             "after writing it; is the disk full?")
    return folder, record


def _prepare(gguf: Path, sha256: str, folder: Path) -> None:
    import openvino_genai as og

    started = time.perf_counter()
    log.warning("preparing %s for OpenVINO once (about 25 s on 2 cores); later runs load it from %s",
                gguf.name, folder)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=folder.parent))
    try:
        # OpenVINO writes the IR beside the GGUF it reads: a link to it in a folder of our own.
        (work / gguf.name).symlink_to(gguf.resolve())
        try:
            pipe = og.LLMPipeline(str(work / gguf.name), "CPU", enable_save_ov_model=True)
        except RuntimeError as exc:
            raise GeneratorError(f"OpenVINO GenAI cannot read {gguf.name}: {str(exc).splitlines()[0]} "
                                 "(set generate.local_runtime = 'torch' to run it through transformers)") from None
        config = pipe.get_generation_config()
        del pipe
        (work / gguf.name).unlink()
        uniform_zero_points(work)
        record = {"version": PREPARED_VERSION, "source": gguf.name, "source_sha256": sha256,
                  "openvino_genai": og.__version__, "eos_token_id": int(config.eos_token_id),
                  "stop_token_ids": sorted(int(t) for t in config.stop_token_ids),
                  "context_length": gguf_context_length(gguf),
                  "files": {name: {"size": (work / name).stat().st_size, "sha256": sha256_file(work / name)}
                            for name in FILES}}
        (work / RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.warning("prepared %s for OpenVINO in %.1f s", gguf.name, time.perf_counter() - started)


def uniform_zero_points(folder: Path) -> int:
    """Rewrites the folder's IR so that an 8-bit weight's zero points that are all the same number
    are held as that one number; returns how many. OpenVINO reads Q6_K, which is symmetric, with
    a zero point of 32 for every group of 16 weights, and the CPU plugin widens each to 32 bits:
    100 MB of the 1.5B's resident memory, for a value that never changes. The weights the
    model computes are the same (the same answers, measured on the sample questions)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    model = ov.Core().read_model(folder / "openvino_model.xml")
    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "Subtract" or (convert := node.input_value(1).get_node()).get_type_name() != "Convert":
            continue
        zero = convert.input_value(0).get_node()
        if zero.get_type_name() != "Constant" or zero.get_element_type() != ov.Type.u8:
            continue
        values = zero.get_data()
        if values.size > 1 and (values == values.flat[0]).all():
            convert.input(0).replace_source_output(ops.constant(np.uint8(values.flat[0]), ov.Type.u8).output(0))
            count += 1
    if count:
        # Written beside the mapped original, then renamed over it: the mapping keeps the old file.
        ov.save_model(model, folder / "rewritten.xml", compress_to_fp16=False)
        (folder / "rewritten.bin").replace(folder / "openvino_model.bin")
        (folder / "rewritten.xml").replace(folder / "openvino_model.xml")
    return count


def gguf_header(path: Path) -> Any:
    """The gguf package's reader of a GGUF file (header fields and tensor types through its
    memory map), or None for a file it cannot read."""
    try:
        from gguf import GGUFReader

        return GGUFReader(str(path))
    except (ImportError, OSError, ValueError):
        return None


def gguf_context_length(path: Path) -> int | None:
    """The context length a GGUF file declares (`<arch>.context_length`)."""
    reader = gguf_header(path)
    for name, field in reader.fields.items() if reader is not None else ():
        if name.endswith(".context_length"):
            return int(field.contents())
    return None
