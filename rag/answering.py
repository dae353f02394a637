"""Question in, cited answer (or an honest "I don't know") out.

Stages, each timed: embed the question, search, build the prompt, generate. The answer's
citations are checked against the passages actually given; numbers that were not in the
prompt are removed and the answer is marked ungrounded.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from rag.citations import Answer, Citation, Passage, is_abstention, resolve_citations, strip_citations
from rag.errors import RagError
from rag.filters import Filter
from rag.generate.base import Generation, Generator
from rag.timing import StageClock
from rag.prompt import Prompt, PromptBuilder
from rag.records import Hit
from rag.verify import adds_to, is_supported, support, unmentioned_names

log = logging.getLogger(__name__)

# (questions, k, timings, filters, mode) -> hits per question; mode None: search.mode.
Retrieve = Callable[[list[str], int, dict[str, float], "list[Filter] | None", "str | None"], list[list[Hit]]]


def best_relevance(hits: list[Hit]) -> float | None:
    """The best cosine of the question with a passage: a relevance comparable across questions,
    which fused ranks are not. None when no dense score was computed (a language the embedding
    model does not cover, or BM25 mode): then there is no floor."""
    scores = [h.metadata.get("scores", {}).get("dense") for h in hits]
    scores = [s for s in scores if s is not None]
    return max(scores) if scores else None


def _named(passages: list[Passage]) -> list[str]:
    """What a name check reads of each passage: its title (a product page is often named only
    there) and its text."""
    return [f"{p.title} {p.text}" for p in passages]


class Answerer:
    def __init__(self, retrieve: Retrieve, generator: Generator, builder: PromptBuilder, k: int,
                 max_new_tokens: int, max_question_chars: int, min_relevance: float = -1.0,
                 verify: str = "off", verify_min_words: float = 0.5) -> None:
        self.retrieve = retrieve
        self.generator = generator
        self.builder = builder
        self.k = k
        self.max_new_tokens = max_new_tokens
        self.max_question_chars = max_question_chars
        self.min_relevance = min_relevance
        # "abstain": an answer no passage supports becomes "I don't know"; "warn": it is kept,
        # ungrounded, with a warning; "off": not checked (see rag/verify.py).
        self.verify = verify
        self.verify_min_words = verify_min_words

    def _clean_question(self, question: str, warnings: list[str]) -> str:
        question = " ".join(question.split())
        if not question:
            raise RagError("the question is empty")
        if len(question) > self.max_question_chars:
            warnings.append(f"the question was {len(question)} characters long and was cut to "
                            f"{self.max_question_chars} (answer.max_question_chars)")
            log.warning(warnings[-1])
            question = question[: self.max_question_chars]
        return question

    def _prepare(self, questions: list[str], k: int | None, filters: list[Filter] | None = None,
                 mode: str | None = None) -> list[tuple[Prompt, dict[str, float], list[str]]]:
        warnings = [[] for _ in questions]
        cleaned = [self._clean_question(q, w) for q, w in zip(questions, warnings)]
        timings: dict[str, float] = {}
        results = self.retrieve(cleaned, k or self.k, timings, filters, mode)
        share = {key: value / len(questions) for key, value in timings.items()}
        prepared = []
        for question, hits, warn in zip(cleaned, results, warnings):
            relevance = best_relevance(hits)
            if relevance is not None and relevance < self.min_relevance:
                warn.append(f"the best passage matches poorly ({relevance:.2f} < answer.min_relevance "
                            f"{self.min_relevance:.2f}), so the generator was not asked")
                hits = []
            clock = StageClock(dict(share))
            with clock("prompt"):
                prompt = self._check_names(self.builder.build(question, hits, self.generator.style), warn)
            prepared.append((prompt, clock.stages, warn))
        return prepared

    def _check_names(self, prompt: Prompt, warnings: list[str]) -> Prompt:
        """Passages that never mention a name the question asks about (the MR-900, a Berlin
        office) do not answer it: with answer.verify, the generator is not asked ("abstain") or
        the answer carries a warning ("warn"). Checked on the passages the generator is given,
        the same ones `_about_question` looks at after it."""
        if not prompt.passages or self.verify == "off":
            return prompt
        missing = unmentioned_names(prompt.question, _named(prompt.passages))
        if not missing:
            return prompt
        problem = "no passage mentions " + ", ".join(repr(n) for n in missing)
        if self._refuses(problem, "the generator was not asked", warnings):
            return self.builder.build(prompt.question, [], self.generator.style)
        return prompt

    def _refuses(self, problem: str, instead: str, warnings: list[str]) -> bool:
        """What answer.verify does about a problem: "abstain" says so and refuses (True);
        "warn" says so and lets the answer stand, ungrounded (False)."""
        if self.verify == "abstain":
            warnings.append(f"{problem}, so {instead} (answer.verify)")
            return True
        warnings.append(f"{problem}: check the answer against the sources (answer.verify)")
        return False

    def _finish(self, prompt: Prompt, generation: Generation, timings: dict[str, float],
                warnings: list[str]) -> Answer:
        text = generation.text.strip()
        abstained = not prompt.passages or is_abstention(text, [prompt.idk, "I don't know", "我不知道"])
        if abstained:
            text, citations, grounded = prompt.idk, [], False
        else:
            text, citations, grounded = resolve_citations(text, prompt.passages)
            if self.verify != "off":
                text, citations, grounded, abstained = self._verified(text, citations, grounded, prompt, warnings)
        tokens = {"prompt": generation.prompt_tokens, "completion": generation.completion_tokens}
        return Answer(prompt.question, text, citations, prompt.passages, abstained, grounded, timings, tokens,
                      getattr(self.generator, "name", type(self.generator).__name__), warnings)

    def _verified(self, text: str, citations: list[Citation], grounded: bool, prompt: Prompt,
                  warnings: list[str]) -> tuple[str, list[Citation], bool, bool]:
        """The answer checked against its passages: cited to the passage that supports it when
        its own citations do not (or it has none); when none does, "I don't know" or a warning."""
        if not adds_to(text, prompt.question):
            return self._unsupported("the answer only repeats the question", text, citations, prompt, warnings)
        cited = [p for p in prompt.passages if p.number in {c.number for c in citations}]
        if cited and is_supported(support(text, cited, prompt.question), self.verify_min_words):
            return self._about_question(text, citations, grounded, prompt, cited, warnings)
        found = support(text, prompt.passages, prompt.question)
        if is_supported(found, self.verify_min_words):
            text, citations, grounded = resolve_citations(f"{strip_citations(text)} [{found.passage}]",
                                                          prompt.passages)
            holder = [p for p in prompt.passages if p.number == found.passage]
            return self._about_question(text, citations, grounded, prompt, holder, warnings)
        problem = ("no passage holds this answer" + ("'s numbers" if not found.numbers else "") +
                   f" (best support {found.words:.0%} of its words)")
        return self._unsupported(problem, text, citations, prompt, warnings)

    def _about_question(self, text: str, citations: list[Citation], grounded: bool, prompt: Prompt,
                        holders: list[Passage], warnings: list[str]) -> tuple[str, list[Citation], bool, bool]:
        """A supported answer whose passage never names what the question asks about (asked for
        the Shanghai office's parking, the Lisbon page's "eight spaces") answers another question."""
        # A name no passage mentions was already dealt with before generating (_check_names).
        unseen = set(unmentioned_names(prompt.question, _named(prompt.passages)))
        missing = [n for n in unmentioned_names(prompt.question, _named(holders)) if n not in unseen]
        if not missing:
            return text, citations, grounded, False
        problem = "the passage holding this answer does not mention " + ", ".join(repr(n) for n in missing)
        return self._unsupported(problem, text, citations, prompt, warnings)

    def _unsupported(self, problem: str, text: str, citations: list[Citation], prompt: Prompt,
                     warnings: list[str]) -> tuple[str, list[Citation], bool, bool]:
        """(text, citations, grounded, abstained) of an answer that failed the check."""
        if self._refuses(problem, f"rag says it does not know instead of {text!r}", warnings):
            return prompt.idk, [], False, True
        return text, citations, False, False

    def ask(self, question: str, k: int | None = None, filters: list[Filter] | None = None,
            mode: str | None = None) -> Answer:
        return self.ask_many([question], k, filters, mode)[0]

    def ask_many(self, questions: list[str], k: int | None = None, filters: list[Filter] | None = None,
                 mode: str | None = None) -> list[Answer]:
        """Batched: one retrieval pass and one generation call for all the questions."""
        clock = StageClock()
        prepared = self._prepare(questions, k, filters, mode)
        with_passages = [i for i, (p, _, _) in enumerate(prepared) if p.passages]
        generations = {i: Generation("") for i in range(len(prepared))}
        with clock("generation"):
            if with_passages:
                outputs = self.generator.generate([prepared[i][0] for i in with_passages], self.max_new_tokens)
                generations.update(zip(with_passages, outputs))
        generation_seconds = clock.stages["generation"] / max(len(with_passages), 1)
        answers = []
        for i, (prompt, timings, warnings) in enumerate(prepared):
            timings = {**timings, "generation": generation_seconds if i in with_passages else 0.0,
                       "first_token": generations[i].timings.get("first_token", generation_seconds)}
            timings["total"] = clock.elapsed() / len(prepared)
            answers.append(self._finish(prompt, generations[i], timings, warnings))
        return answers

    def ask_stream(self, question: str, k: int | None = None, filters: list[Filter] | None = None,
                   mode: str | None = None) -> Iterator[list[Passage] | str | Answer]:
        """Yields the numbered passages the generator is given (before any text, so that a
        client can show sources while the answer streams), pieces of text as they are
        generated, then the finished Answer."""
        clock = StageClock()
        ((prompt, timings, warnings),) = self._prepare([question], k, filters, mode)
        yield list(prompt.passages)
        pieces: list[str] = []
        first: float | None = None
        with clock("generation"):
            for piece in self.generator.stream(prompt, self.max_new_tokens) if prompt.passages else ():
                if first is None:
                    piece = piece.lstrip()  # completion models start after "Answer:" with a space
                    if not piece:
                        continue
                    first = clock.elapsed()
                pieces.append(piece)
                yield piece
        text = "".join(pieces)
        timings.update(generation=clock.stages["generation"], first_token=first or 0.0, total=clock.elapsed())
        count = self.generator.count_tokens
        generation = Generation(text, count(prompt.completion if self.generator.style == "completion"
                                            else prompt.chat_text()), count(text))
        yield self._finish(prompt, generation, timings, warnings)
