"""No LLM at all: the answer is the passage sentence that best matches the question, cited."""

from __future__ import annotations

import re
import time
from typing import Iterator, Literal

import numpy as np

from rag.embed import Embedder
from rag.generate.base import Generation
from rag.prompt import Prompt

# Sentence ends in English and Chinese, and line breaks (lists, table rows).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|(?<=[。！？；])|\n+")
_WORD = re.compile(r"[A-Za-z0-9][\w\-./:]*|[\u4e00-\u9fff]")
_STOP = set("""a an the of to in on at for by with from and or is are was were be been do does did what which who
whom whose when where why how many much i you we they it this that these those my our your can could should
would will shall may might must there their about into than then as if not no yes""".split())
# Weight of the share of the question's words found in a sentence: codes, names and numbers
# that an English embedding model scores poorly decide many enterprise questions.
LEXICAL_WEIGHT = 0.5


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and len(s.strip()) > 1]


def _words(text: str) -> set[str]:
    return {w.lower().rstrip(".:/") for w in _WORD.findall(text)} - _STOP


def _is_answer_like(sentence: str) -> bool:
    """A heading or a lone label answers nothing: want at least four words (a CJK character counts as one)."""
    return len(_WORD.findall(sentence)) >= 4


class ExtractiveGenerator:
    """Instant and honest: it can only ever say what a passage says."""

    name = "extractive"
    style: Literal["chat", "completion"] = "chat"

    def __init__(self, embedder: Embedder, min_score: float, context_tokens: int = 100_000) -> None:
        self.embedder = embedder
        self.min_score = min_score
        self.context_tokens = context_tokens

    def count_tokens(self, text: str) -> int:
        return len(text) // 4

    def _answers(self, prompts: list[Prompt]) -> list[str]:
        """The best sentence of each prompt's passages, cited, or "I don't know"; every question and
        every candidate sentence of the batch embedded in one call each (a batch of 16 asks ran
        2.7x faster than one call per question)."""
        candidates = [[(p.number, s) for p in prompt.passages for s in split_sentences(p.text) if _is_answer_like(s)]
                      for prompt in prompts]
        asking = [i for i, found in enumerate(candidates) if found]
        answers = [prompt.idk for prompt in prompts]
        if not asking:
            return answers
        queries = self.embedder.embed_queries([prompts[i].question for i in asking])
        sentences = self.embedder.embed_passages([s for i in asking for _, s in candidates[i]])
        start = 0
        for query, i in zip(queries, asking):
            found, prompt = candidates[i], prompts[i]
            vectors, start = sentences[start:start + len(found)], start + len(found)
            asked = _words(prompt.question)
            lexical = np.array([len(asked & _words(s)) / max(len(asked), 1) for _, s in found])
            # A small preference for higher-ranked passages breaks near-ties the retriever's way.
            ranks = np.array([n - 1 for n, _ in found])
            scores = vectors @ query + LEXICAL_WEIGHT * lexical - 0.005 * ranks
            best = int(np.argmax(scores))
            if float(scores[best]) >= self.min_score:
                number, sentence = found[best]
                answers[i] = f"{sentence} [{number}]"
        return answers

    def generate(self, prompts: list[Prompt], max_new_tokens: int) -> list[Generation]:
        started = time.perf_counter()
        answers = self._answers(prompts)
        seconds = (time.perf_counter() - started) / max(len(prompts), 1)
        return [Generation(text, 0, 0, {"first_token": seconds}) for text in answers]

    def stream(self, prompt: Prompt, max_new_tokens: int) -> Iterator[str]:
        yield self._answers([prompt])[0]
