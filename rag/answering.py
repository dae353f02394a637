"""Question in, cited answer (or an honest "I don't know") out.

Stages, each timed: embed the question, search, build the prompt, generate. The answer's
citations are checked against the passages actually given; numbers that were not in the
prompt are removed and the answer is marked ungrounded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterator

from rag.citations import Answer, Citation, Passage, Retrieved, is_abstention, resolve_citations, strip_citations
from rag.conversation import (RewriteTemplates, Turn, combined_query, needs_context, parse_rewrite, recent,
                              rewrite_prompt)
from rag.errors import RagError
from rag.filters import Filter
from rag.generate.base import Generation, Generator, GeneratorError
from rag.prompt import Language, Prompt, PromptBuilder, detect_language
from rag.records import Hit
from rag.timing import StageClock
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
    there), its location (the heading path or slide title it sits under) and its text."""
    return [f"{p.title} {p.location} {p.text}" for p in passages]


@dataclass(frozen=True)
class Asked:
    """A question as asked, and what is searched for it: the question itself, or for a
    follow-up (`contextual`) its standalone form, written by the generator (`rewritten`) or
    combined with the user's previous question."""

    question: str
    query: str
    contextual: bool = False
    rewritten: bool = False
    history: tuple[Turn, ...] = ()

    @property
    def about(self) -> str:
        """Whose names an answer must be about: the standalone question the generator wrote, else
        the question as asked (a combined query also holds names the follow-up may not ask about:
        "can I carry it over?" after a question about Lisbon is asked of a policy for everyone)."""
        return self.query if self.rewritten else self.question

    @property
    def earlier_names(self) -> list[str]:
        """The names a combined query brought from the earlier turns: the follow-up is about one
        of them ("how many parking spaces does the office there have?" after a question about
        Shanghai), though not necessarily all."""
        if not self.contextual or self.rewritten:
            return []
        return unmentioned_names(self.query, [self.question])

    @property
    def asked_text(self) -> str:
        """What the person said: words an answer takes from it restate the question (an entity
        named two turns ago) rather than claim anything of their own."""
        return " ".join(dict.fromkeys([self.question, self.query]))


@dataclass(frozen=True)
class Rewriting:
    """How follow-ups are made standalone (answer.rewrite, [prompt] rewrite_*)."""

    mode: str = "off"  # "rewrite" (by a chat generator), "combine" or "off"
    templates: dict[Language, RewriteTemplates] = field(default_factory=dict)
    max_tokens: int = 48
    timeout: float = 10.0  # seconds a rewrite may take before the combined query is searched instead


def _within(seconds: float, generate: Callable[..., list[Generation]], prompts: list[Prompt],
            max_tokens: int) -> list[Generation] | None:
    """generate(prompts, max_tokens) within `seconds`, or None when it fails or runs out of time:
    a follow-up is then searched without its rewrite rather than waiting on a slow server."""
    if not prompts:
        return []
    try:
        return generate(prompts, max_tokens, timeout=seconds)
    except GeneratorError as exc:
        log.warning("rewriting a follow-up failed (%s); searching it with the previous question", exc)
        return None


class Answerer:
    def __init__(self, retrieve: Retrieve, generator: Generator, builder: PromptBuilder, k: int,
                 max_new_tokens: int, max_question_chars: int, min_relevance: float = -1.0,
                 verify: str = "off", verify_min_words: float = 0.5, rewriting: Rewriting | None = None) -> None:
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
        self.rewriting = rewriting or Rewriting()

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

    def standalones(self, questions: list[str], histories: list[list[Turn]], warnings: list[list[str]]
                    ) -> list[Asked]:
        """What to search for each question after its conversation: itself, unless it leans on
        the earlier turns (rag.conversation.needs_context, so a first or standalone question
        costs nothing); then the generator's rewrite where it writes one (all of them in one
        batch), else the question combined with the previous one."""
        asked = [Asked(q, q, history=tuple(h)) for q, h in zip(questions, histories)]
        if self.rewriting.mode == "off":
            return asked
        follow = [i for i, (q, h) in enumerate(zip(questions, histories)) if h and needs_context(q, h)]
        rewrites = self._rewrite([(questions[i], histories[i]) for i in follow], [warnings[i] for i in follow])
        for i, query in zip(follow, rewrites):
            q, h = questions[i], tuple(histories[i])
            asked[i] = (Asked(q, query, contextual=True, rewritten=True, history=h) if query else
                        Asked(q, combined_query(q, histories[i]), contextual=True, history=h))
        return asked

    def _rewrite(self, conversations: list[tuple[str, list[Turn]]], warnings: list[list[str]]) -> list[str | None]:
        """The generator's standalone form of each follow-up; None where it is not asked (a
        generator that does not converse, answer.rewrite "combine", a language without templates)
        or gives none in time (a failure, answer.rewrite_timeout, a reply that is no question)."""
        if self.rewriting.mode != "rewrite" or not getattr(self.generator, "converses", False):
            return [None] * len(conversations)
        templates = [self.rewriting.templates.get(detect_language(q)) for q, _ in conversations]
        asked = [i for i, t in enumerate(templates) if t is not None]
        prompts = [rewrite_prompt(*conversations[i], templates[i]) for i in asked]  # type: ignore[arg-type]
        generations = _within(self.rewriting.timeout, self.generator.generate, prompts, self.rewriting.max_tokens)
        rewrites: list[str | None] = [None] * len(conversations)
        for n, i in enumerate(asked):
            rewrites[i] = parse_rewrite(generations[n].text, conversations[i][0]) if generations else None
            if rewrites[i] is None:
                why = "" if generations else (f" (it failed, or took longer than answer.rewrite_timeout, "
                                              f"{self.rewriting.timeout:g} s)")
                warnings[i].append(f"the generator gave no standalone form of this follow-up{why}; searched it "
                                   "with the previous question")
        return rewrites

    def _prepare(self, questions: list[str], k: int | None, filters: list[Filter] | None = None,
                 mode: str | None = None, histories: list[list[Turn]] | None = None
                 ) -> list[tuple[Prompt, dict[str, float], list[str], Asked]]:
        warnings: list[list[str]] = [[] for _ in questions]
        cleaned = [self._clean_question(q, w) for q, w in zip(questions, warnings)]
        rewriting = StageClock({})
        with rewriting("rewrite"):
            asked = self.standalones(cleaned, histories or [[]] * len(cleaned), warnings)
        timings: dict[str, float] = {}
        results = self.retrieve([a.query for a in asked], k or self.k, timings, filters, mode)
        if any(a.contextual for a in asked):
            timings.update(rewriting.stages)
        share = {key: value / len(questions) for key, value in timings.items()}
        prepared = []
        for one, hits, warn in zip(asked, results, warnings):
            relevance = best_relevance(hits)
            if relevance is not None and relevance < self.min_relevance:
                warn.append(f"the best passage matches poorly ({relevance:.2f} < answer.min_relevance "
                            f"{self.min_relevance:.2f}), so the generator was not asked")
                hits = []
            clock = StageClock(dict(share))
            with clock("prompt"):
                prompt = self._check_names(self._build(one, hits), one, warn)
            prepared.append((prompt, clock.stages, warn, one))
        return prepared

    def _build(self, asked: Asked, hits: list[Hit]) -> Prompt:
        """The prompt of a question. A follow-up: a chat model reads the recent turns, and the
        standalone question when it wrote one; a model that reads no turns gets the query
        searched, which names what the follow-up leaves out."""
        converses = getattr(self.generator, "converses", False)
        if not asked.contextual:
            return self.builder.build(asked.question, hits, self.generator.style)
        if not converses:
            return self.builder.build(asked.query, hits, self.generator.style)
        turns = tuple((t.role, t.content) for t in recent(list(asked.history)))
        question = asked.query if asked.rewritten else asked.question
        return self.builder.build(question, hits, self.generator.style, turns)

    def _check_names(self, prompt: Prompt, asked: Asked, warnings: list[str]) -> Prompt:
        """Passages that never mention a name the question asks about (the MR-900, a Berlin
        office) do not answer it: with answer.verify, the generator is not asked ("abstain") or
        the answer carries a warning ("warn"). Checked on the passages the generator is given,
        the same ones `_about_question` looks at after it."""
        if not prompt.passages or self.verify == "off":
            return prompt
        missing = unmentioned_names(asked.about, _named(prompt.passages))
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
                warnings: list[str], asked: Asked) -> Answer:
        text = generation.text.strip()
        abstained = not prompt.passages or is_abstention(text, [prompt.idk, "I don't know", "我不知道"])
        if abstained:
            text, citations, grounded = prompt.idk, [], False
        else:
            text, citations, grounded = resolve_citations(text, prompt.passages)
            if self.verify != "off":
                text, citations, grounded, abstained = self._verified(text, citations, grounded, prompt, asked,
                                                                      warnings)
        tokens = {"prompt": generation.prompt_tokens, "completion": generation.completion_tokens}
        return Answer(asked.question, text, citations, prompt.passages, abstained, grounded, timings, tokens,
                      getattr(self.generator, "name", type(self.generator).__name__), warnings, asked.query)

    def _verified(self, text: str, citations: list[Citation], grounded: bool, prompt: Prompt, asked: Asked,
                  warnings: list[str]) -> tuple[str, list[Citation], bool, bool]:
        """The answer checked against its passages: cited to the passage that supports it when
        its own citations do not (or it has none); when none does, "I don't know" or a warning."""
        if not adds_to(text, asked.asked_text):
            return self._unsupported("the answer only repeats the question", text, citations, prompt, warnings)
        cited = [p for p in prompt.passages if p.number in {c.number for c in citations}]
        if cited and is_supported(support(text, cited, asked.asked_text), self.verify_min_words):
            return self._about_question(text, citations, grounded, prompt, asked, cited, warnings)
        found = support(text, prompt.passages, asked.asked_text)
        if is_supported(found, self.verify_min_words):
            text, citations, grounded = resolve_citations(f"{strip_citations(text)} [{found.passage}]",
                                                          prompt.passages)
            holder = [p for p in prompt.passages if p.number == found.passage]
            return self._about_question(text, citations, grounded, prompt, asked, holder, warnings)
        problem = ("no passage holds this answer" + ("'s numbers" if not found.numbers else "") +
                   f" (best support {found.words:.0%} of its words)")
        return self._unsupported(problem, text, citations, prompt, warnings)

    def _about_question(self, text: str, citations: list[Citation], grounded: bool, prompt: Prompt, asked: Asked,
                        holders: list[Passage], warnings: list[str]) -> tuple[str, list[Citation], bool, bool]:
        """A supported answer whose passage never names what the question asks about (asked for
        the Shanghai office's parking, the Lisbon page's "eight spaces") answers another question."""
        # A name no passage mentions was already dealt with before generating (_check_names).
        unseen = set(unmentioned_names(asked.about, _named(prompt.passages)))
        missing = [n for n in unmentioned_names(asked.about, _named(holders)) if n not in unseen]
        # Of the earlier turns' names that some passage mentions, the holder must mention one:
        # Lisbon's page does not answer a follow-up about the Shanghai office.
        seen = set(asked.earlier_names) - set(unmentioned_names(asked.query, _named(prompt.passages)))
        if seen and seen <= set(unmentioned_names(asked.query, _named(holders))):
            missing += [n for n in asked.earlier_names if n in seen]
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
            mode: str | None = None, history: list[Turn] | None = None) -> Answer:
        return self.ask_many([question], k, filters, mode, [history or []])[0]

    def ask_many(self, questions: list[str], k: int | None = None, filters: list[Filter] | None = None,
                 mode: str | None = None, histories: list[list[Turn]] | None = None) -> list[Answer]:
        """Batched: one retrieval pass and one generation call for all the questions; each may
        come with its conversation's earlier turns (`histories`)."""
        clock = StageClock()
        prepared = self._prepare(questions, k, filters, mode, histories)
        with_passages = [i for i, (p, _, _, _) in enumerate(prepared) if p.passages]
        generations = {i: Generation("") for i in range(len(prepared))}
        with clock("generation"):
            if with_passages:
                outputs = self.generator.generate([prepared[i][0] for i in with_passages], self.max_new_tokens)
                generations.update(zip(with_passages, outputs))
        generation_seconds = clock.stages["generation"] / max(len(with_passages), 1)
        answers = []
        for i, (prompt, timings, warnings, asked) in enumerate(prepared):
            timings = {**timings, "generation": generation_seconds if i in with_passages else 0.0,
                       "first_token": generations[i].timings.get("first_token", generation_seconds)}
            timings["total"] = clock.elapsed() / len(prepared)
            answers.append(self._finish(prompt, generations[i], timings, warnings, asked))
        return answers

    def ask_stream(self, question: str, k: int | None = None, filters: list[Filter] | None = None,
                   mode: str | None = None, history: list[Turn] | None = None) -> Iterator[Retrieved | str | Answer]:
        """Yields what was searched and the numbered passages the generator is given (before any
        text, so that a client can show sources while the answer streams), pieces of text as
        they are generated, then the finished Answer."""
        clock = StageClock()
        ((prompt, timings, warnings, asked),) = self._prepare([question], k, filters, mode, [history or []])
        yield Retrieved(asked.query, list(prompt.passages))
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
        yield self._finish(prompt, generation, timings, warnings, asked)
