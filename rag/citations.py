"""What an answer is: text, validated citations, the passages it was given, and how it went."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from typing import Any

from rag.records import Hit

# "[2]", "[1, 3]", "[1][2]", full-width "［2］"
_CITATION = re.compile(r"[\[［]\s*(\d+(?:\s*[,，]\s*\d+)*)\s*[\]］]")
CITATION_MARKER = re.compile(r"\s*" + _CITATION.pattern)  # with the space before it


@dataclass(frozen=True)
class Passage:
    """A numbered passage as given to the generator (neighbouring chunks already merged)."""

    number: int
    text: str
    doc_id: str
    source: str
    title: str
    location: str
    score: float
    chunk_ids: tuple[int, ...]

    @classmethod
    def from_hit(cls, number: int, hit: Hit, text: str | None = None, chunk_ids: tuple[int, ...] = (),
                 location: str | None = None) -> "Passage":
        return cls(number, text if text is not None else hit.text, hit.doc_id, hit.source,
                   str(hit.metadata.get("title") or hit.doc_id), hit.location if location is None else location,
                   hit.score, chunk_ids or (hit.chunk_id,))


@dataclass(frozen=True)
class Citation:
    number: int
    doc_id: str
    source: str
    title: str
    location: str
    quote: str


@dataclass(frozen=True)
class Retrieved:
    """What a streamed answer sends before any text: the question searched (a follow-up's
    standalone form) and the numbered passages the generator is given."""

    query: str
    passages: list[Passage]


@dataclass
class Answer:
    question: str
    answer: str
    citations: list[Citation]
    passages: list[Passage]
    abstained: bool
    grounded: bool
    timings: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    generator: str = ""
    warnings: list[str] = field(default_factory=list)
    # What was searched: the question, or for a follow-up its standalone form (rag.conversation).
    query: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "query": self.query or self.question,
            "answer": self.answer,
            "citations": [asdict(c) for c in self.citations],
            "passages": [asdict(p) | {"chunk_ids": list(p.chunk_ids)} for p in self.passages],
            "abstained": self.abstained,
            "grounded": self.grounded,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "tokens": self.tokens,
            "generator": self.generator,
            "warnings": self.warnings,
        }


def resolve_citations(text: str, passages: list[Passage]) -> tuple[str, list[Citation], bool]:
    """Keep citations of passages that were in the prompt, drop the others.

    Returns the cleaned text, the citations in order of first use, and whether the answer is
    grounded: it cites at least one passage and cites no number that was not given.
    """
    by_number = {p.number: p for p in passages}
    cited: list[int] = []
    invalid = False

    def replace(match: re.Match[str]) -> str:
        nonlocal invalid
        numbers = [int(n) for n in re.split(r"\s*[,，]\s*", match.group(1))]
        kept = [n for n in numbers if n in by_number]
        invalid = invalid or len(kept) != len(numbers)
        for n in kept:
            if n not in cited:
                cited.append(n)
        return "".join(f"[{n}]" for n in kept)

    cleaned = _tidy(_CITATION.sub(replace, text))
    citations = [
        Citation(n, by_number[n].doc_id, by_number[n].source, by_number[n].title, by_number[n].location,
                 by_number[n].text)
        for n in cited
    ]
    return cleaned, citations, bool(citations) and not invalid


def _tidy(text: str) -> str:
    """No space before punctuation, no double spaces: what removing markers leaves behind; no
    Markdown bold (chat models like to write **CarePlus**, which a passage never holds; `__`
    is left alone, as names such as window.__init__ hold it)."""
    text = re.sub(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", r"\1", text)
    text = re.sub(r"[ \t]+([.,;:!?。，；！？])", r"\1", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def strip_citations(text: str) -> str:
    """The answer's text without its [n] markers, for scoring it and for regression sets."""
    return _tidy(CITATION_MARKER.sub("", text))


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'")
    return re.sub(r"[\s\W_]+", " ", text).strip()


def is_abstention(text: str, phrases: list[str]) -> bool:
    """The answer says it does not know (possibly with a short tail such as a citation)."""
    folded = _fold(_CITATION.sub("", text))
    if not folded:
        return True
    return any(folded.startswith(_fold(p)) and len(folded) <= len(_fold(p)) + 40 for p in phrases)
