"""An exported sentence-transformers model run by OpenVINO or ONNX Runtime, with the model's own
fast tokenizer: no torch or transformers import, so a fresh `rag search` is ready in about a second.

The ONNX graph holds the transformer and the pooling (rag.encoders.onnx_export); normalization
is done here. Texts are tokenized once, sorted by length and batched, so that a batch pads to
its longest text, not the longest of all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rag.encoders import sequence_limit
from rag.encoders.weight_int8 import compress_matmul_weights
from rag.mapped_files import release_mapped_weights


def native_max_length(model_dir: Path) -> int:
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("max_seq_length")
        if value:
            return int(value)
    return int(json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings", 512))


def _lower_case(model_dir: Path) -> bool:
    config = model_dir / "sentence_bert_config.json"
    return config.is_file() and bool(json.loads(config.read_text(encoding="utf-8")).get("do_lower_case"))


def default_threads() -> int:
    """What torch would take: every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows of the output, input_ids, attention_mask)
Runner = Callable[[list[Batch], np.ndarray], None]


# Calls with at most this many texts (a question, a question's sentences for rag.focus: 36 of
# them in 82 ms instead of 98 ms, and without the throughput compilation's 200 MB in a server)
# run on the latency compilation; more (passages being indexed) on the throughput one.
FEW_TEXTS = 256


class _OpenVINO:
    """Two compilations of one model, each made on first need: for latency (one request on every
    core: a question), and for throughput (a stream per core, requests in flight together:
    passages), which embedded rag's SciFact chunks 1.11x faster. Each holds its own copy of the
    weights and buffers (160 and 260 MB for MiniLM), so a process that only searches and answers
    never makes the second, and `rag index` makes the first only for a group of at most
    FEW_TEXTS chunks (a small folder, or the last group of a large one)."""

    def __init__(self, model_path: Path, precision: str, threads: int) -> None:
        import openvino as ov

        self._ov = ov
        self._core = ov.Core()
        # An IR's weights are mapped from the file, and their pages handed back once the plugin
        # has packed its own (mapped_files); an ONNX file's would be copied into memory.
        self._model_path = str(model_path)
        self._folder = model_path.parent
        self._int8 = precision == "int8"
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                        "INFERENCE_NUM_THREADS": threads}
        self._request: Any = None
        self._queue: Any = None

    def _compile(self, hint: str) -> Any:
        config = {**self._config, "PERFORMANCE_HINT": hint}
        if not self._int8:
            return self._core.compile_model(self._model_path, "CPU", config)
        model = self._core.read_model(self._model_path)
        compress_matmul_weights(model)
        return self._core.compile_model(model, "CPU", config)

    def __call__(self, batches: list[Batch], out: np.ndarray) -> None:
        if sum(len(rows) for rows, _, _ in batches) <= FEW_TEXTS:
            first = self._request is None
            if first:  # one at a time: the Embedder serializes calls
                self._request = self._compile("LATENCY").create_infer_request()
            for rows, ids, mask in batches:
                out[rows] = self._request.infer({"input_ids": ids, "attention_mask": mask})[0]
            if first:
                release_mapped_weights(self._folder)
            return
        first = self._queue is None
        if first:
            compiled = self._compile("THROUGHPUT")
            self._queue = self._ov.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

        def done(request: Any, rows: np.ndarray) -> None:
            out[rows] = request.get_output_tensor(0).data

        self._queue.set_callback(done)
        for rows, ids, mask in batches:
            self._queue.start_async({"input_ids": ids, "attention_mask": mask}, rows)
        self._queue.wait_all()
        if first:
            release_mapped_weights(self._folder)


def _onnxruntime_runner(onnx_path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Its threads spin while waiting for work by default: beside a busy process a SciFact query
    # took 8.0 ms instead of 3.7 at the median, and 12.9 at p95.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(batches: list[Batch], out: np.ndarray) -> None:
        for rows, ids, mask in batches:
            out[rows] = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

    return run


class CompiledEncoder:
    def __init__(self, model_dir: Path, model_path: Path, backend: str, precision: str, max_seq_length: int,
                 threads: int = 0) -> None:
        from tokenizers import Tokenizer

        self.backend = backend
        # ONNX Runtime has no bf16 kernels on the CPU: it runs fp32 (or the int8 export).
        self.precision = precision if backend == "openvino" or precision == "int8" else "fp32"
        self.max_seq_length = sequence_limit(max_seq_length, native_max_length(model_dir))
        self._lower = _lower_case(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self.tokenizer: Any = tokenizer  # counts, for the chunker
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.enable_truncation(self.max_seq_length)
        # The special tokens around a text ([CLS] ... [SEP]), to wrap ids the chunker made.
        bare = tokenizer.encode("a", add_special_tokens=False).ids
        full = tokenizer.encode("a").ids
        at = next((i for i in range(len(full)) if full[i:i + len(bare)] == bare), None)
        self._wrap = None if at is None or self._lower else (full[:at], full[at + len(bare):])
        threads = threads or default_threads()
        self._run: Runner = (_OpenVINO(model_path, self.precision, threads) if backend == "openvino"
                             else _onnxruntime_runner(model_path, threads))
        self.dimension = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["hidden_size"])

    def _token_ids(self, texts: list[str], known: list[list[int] | None] | None) -> list[list[int]]:
        """Each text's ids with special tokens: `known` ids (the chunker's, no special tokens) where
        given, the tokenizer's otherwise."""
        if known is None or self._wrap is None:
            known = [None] * len(texts)
        missing = [i for i, ids in enumerate(known) if ids is None]
        fresh = self._tokenizer.encode_batch([texts[i].lower() if self._lower else texts[i] for i in missing])
        out: list[list[int]] = [[] for _ in texts]
        for i, encoding in zip(missing, fresh):
            out[i] = encoding.ids
        if self._wrap is not None:
            head, tail = self._wrap
            room = self.max_seq_length - len(head) - len(tail)
            for i, ids in enumerate(known):
                if ids is not None:
                    out[i] = [*head, *ids[:room], *tail]
        return out

    def encode(self, texts: list[str], batch_size: int, normalize: bool,
               token_ids: list[list[int] | None] | None = None) -> np.ndarray:
        encoded = self._token_ids(texts, token_ids)
        lengths = np.array([len(ids) for ids in encoded])
        order = np.argsort(-lengths, kind="stable")  # longest first: the largest buffers are made once
        vectors = np.empty((len(texts), self.dimension), dtype=np.float32)
        batches = []
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                n = lengths[row]
                ids[i, :n] = encoded[row]
                mask[i, :n] = 1
            batches.append((rows, ids, mask))
        self._run(batches, vectors)
        if normalize:
            vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
