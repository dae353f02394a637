"""Knowledge-enhanced prompts: numbered, quoted passages packed into the generator's window.

Passages are data, never instructions: each is fenced between markers the template names,
any marker inside a passage is neutralised, and the instructions say that text inside the
fences is to be quoted, not obeyed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Literal

from rag.citations import Passage
from rag.records import Hit

Language = Literal["en", "zh"]
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def detect_language(text: str) -> Language:
    """Chinese when CJK characters outweigh Latin words; English otherwise."""
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    return "zh" if cjk and cjk >= latin else "en"


@dataclass(frozen=True)
class Templates:
    """One language's templates (str.format fields: {passages}, {question}, {idk}, ...)."""

    system: str
    user: str
    completion: str
    passage: str
    idk: str
    fence_open: str = "<<<"
    fence_close: str = ">>>"
    # How a passage is shown to chat models (None: as `passage`).
    chat_passage: str | None = None
    # Worked examples for chat models, shown as earlier turns of the conversation: the first
    # turn gives `example_passages` and the first question (in the `user` template), the later
    # ones the question alone (what the `user` template says after its passages); answers may
    # use {idk}.
    example_passages: str = ""
    examples: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Prompt:
    question: str
    language: Language
    system: str
    user: str
    completion: str
    passages: list[Passage]
    idk: str
    # (user, assistant) turns before the question: the template's worked examples.
    examples: tuple[tuple[str, str], ...] = ()
    # (role, text) of the conversation's recent turns, after the examples: a follow-up answered
    # in context (chat models only).
    history: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[dict[str, str]]:
        turns = [{"role": role, "content": content}
                 for example in self.examples for role, content in zip(("user", "assistant"), example)]
        earlier = [{"role": role, "content": content} for role, content in self.history]
        return [{"role": "system", "content": self.system}, *turns, *earlier, {"role": "user", "content": self.user}]

    def chat_text(self) -> str:
        """Everything a chat model reads, for counting its tokens."""
        return "\n".join(message["content"] for message in self.messages())


def _join_overlapping(first: str, second: str) -> str:
    """Concatenate two chunks of one document that may share an overlap of whole sentences."""
    limit = min(len(first), len(second))
    for size in range(limit, 10, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return first.rstrip() + "\n" + second.lstrip()


def merge_neighbours(hits: list[Hit]) -> list[tuple[Hit, str, tuple[int, ...], str]]:
    """Chunks of the same document that are neighbours in it become one passage, in reading
    order, at the rank of its best chunk; its location lists each chunk's page or heading."""
    groups: list[list[Hit]] = []
    for hit in hits:
        ordinal = hit.metadata.get("ordinal")
        for group in groups:
            same_doc = (group[0].doc_id, group[0].metadata.get("collection")) == (hit.doc_id,
                                                                                    hit.metadata.get("collection"))
            ordinals = [h.metadata.get("ordinal") for h in group]
            if same_doc and ordinal is not None and any(o is not None and abs(o - ordinal) == 1 for o in ordinals):
                group.append(hit)
                break
        else:
            groups.append([hit])
    merged = []
    for group in groups:
        ordered = sorted(group, key=lambda h: h.metadata.get("ordinal", 0))
        text = ordered[0].text
        for hit in ordered[1:]:
            text = _join_overlapping(text, hit.text)
        merged.append((group[0], text, tuple(h.chunk_id for h in ordered),
                       "; ".join(dict.fromkeys(h.location for h in ordered if h.location))))
    return merged


class PromptBuilder:
    def __init__(self, templates: dict[Language, Templates], count_tokens: Callable[[str], int],
                 context_tokens: int, max_new_tokens: int, max_passages: int = 0,
                 focus: Callable[[str, list[str]], list[str]] | None = None) -> None:
        self.templates = templates
        # The same for every question: rendered once per language, not per prompt.
        self.examples = {language: self._examples(t) for language, t in templates.items()}
        # (question, passage texts) -> what the generator reads of each ("" leaves it out); the
        # passages themselves, and so the citations, keep their whole text (rag/focus.py).
        self.focus = focus
        self.max_passages = max_passages
        self.count_tokens = count_tokens
        self.context_tokens = context_tokens
        self.max_new_tokens = max_new_tokens

    def _fence(self, text: str, t: Templates) -> str:
        # A passage cannot close its own fence early, nor open a new one.
        return text.replace(t.fence_open, "‹‹‹").replace(t.fence_close, "›››")

    def _render_passage(self, passage: Passage, text: str, t: Templates, template: str) -> str:
        location = f", {passage.location}" if passage.location else ""
        return template.format(number=passage.number, title=passage.title, source=passage.doc_id,
                               location=location, open=t.fence_open, close=t.fence_close,
                               text=self._fence(text, t))

    def _render(self, question: str, passages: list[Passage], t: Templates, language: Language,
                shown: dict[int, str], history: tuple[tuple[str, str], ...] = ()) -> Prompt:
        fields = {"question": question, "idk": t.idk, "open": t.fence_open, "close": t.fence_close}
        chat = {**fields, "passages": "\n\n".join(self._render_passage(p, shown.get(p.number, p.text), t,
                                                                        t.chat_passage or t.passage)
                                                   for p in passages)}
        completion = {**fields, "passages": "\n\n".join(self._render_passage(p, shown.get(p.number, p.text), t,
                                                                              t.passage) for p in passages)}
        return Prompt(question, language, t.system.format(**chat), t.user.format(**chat),
                      t.completion.format(**completion), passages, t.idk, self.examples[language], history)

    @staticmethod
    def _examples(t: Templates) -> tuple[tuple[str, str], ...]:
        """The worked examples as (user, assistant) turns: passages with the first question,
        then the questions alone, as a reader asks more about the same pages."""
        fields = {"idk": t.idk, "open": t.fence_open, "close": t.fence_close}
        passages = t.example_passages.format(**fields)
        later = t.user.split("{passages}", 1)[-1].strip()  # the template after its passages
        turns = []
        for i, (question, answer) in enumerate(t.examples):
            user = t.user.format(**fields, question=question, passages=passages) if i == 0 else \
                later.format(**fields, question=question)
            turns.append((user, answer.format(**fields)))
        return tuple(turns)

    def build(self, question: str, hits: list[Hit], style: Literal["chat", "completion"] = "chat",
              history: tuple[tuple[str, str], ...] = ()) -> Prompt:
        """Number the passages, then drop the lowest-ranked until the prompt leaves room for the
        answer; `history`: the conversation's recent (role, text) turns, for a chat model."""
        language = detect_language(question)
        t = self.templates[language]
        merged = merge_neighbours(hits)
        if self.max_passages:
            merged = merged[: self.max_passages]
        excerpts = self.focus(question, [text for _, text, _, _ in merged]) if self.focus and merged else []
        if excerpts:
            merged = [m for m, excerpt in zip(merged, excerpts) if excerpt]
            excerpts = [excerpt for excerpt in excerpts if excerpt]
        passages = [Passage.from_hit(i, hit, text, ids, location)
                    for i, (hit, text, ids, location) in enumerate(merged, start=1)]
        shown = {p.number: excerpt for p, excerpt in zip(passages, excerpts)}
        budget = self.context_tokens - self.max_new_tokens
        while True:
            prompt = self._render(question, passages, t, language, shown, history)
            text = prompt.completion if style == "completion" else prompt.chat_text()
            if self.count_tokens(text) <= budget or not passages:
                return prompt
            passages = passages[:-1]
