"""Does a passage say what the answer says? A check of the answer against the passages it was
given: every number of the answer must be in the passage, and most of its content words too.

Why: a small model asked to copy an answer often writes it without its [n] marker, and, when the
passages do not hold the answer, makes one up ("revenue in 2023 was 1,000,000 USD"). An answer no
passage supports is turned into "I don't know" (or flagged), and a supported answer without a
valid citation is cited to the passage that supports it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from rag.citations import CITATION_MARKER, Passage

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_HAN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
# Words that carry no claim of their own: an answer is not unsupported for lacking them.
_STOPWORDS = frozenset("""a an the of to in on at for by with from as is are was were be been it its this that
these those and or but not no if then than so such can may must should will would do does did done has have
had per each every any all there their they them he she his her you your we our i me my into over under about
up down out off also only just very more most less least one yes""".split())


@dataclass(frozen=True)
class Support:
    """How well the best passage supports an answer."""

    passage: int | None  # the number of the passage that supports it best
    words: float  # share of the answer's content words found in that passage
    numbers: bool  # every number of the answer is in that passage
    figures: int = 0  # how many numbers the answer has
    content: int = 0  # how many content words it has


# OCR reads a digit as the letter that looks like it ("2O417", "1l0"): between digits such a
# letter is the digit, on either side, so a correct number is not refused for a confusion of
# OCR's (full-width digits, "２０２４", are folded by NFKC).
_OCR_DIGITS = re.compile(r"(?<=\d)[oli]+(?=\d)")


def _fold(text: str) -> str:
    folded = unicodedata.normalize("NFKC", text).lower()
    return _OCR_DIGITS.sub(lambda m: m.group().replace("o", "0").replace("l", "1").replace("i", "1"), folded)


# Numbers passages write out in words ("six standard totes") that an answer gives in digits;
# "one" is left out, as it is more often a pronoun ("no one", "one of") than a count.
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split()) if value > 1}
_NUMBER_WORD = re.compile(r"\b(?:" + "|".join(_NUMBER_WORDS) + r")\b")


def _numbers(text: str) -> set[str]:
    """Numbers with their grouping separators removed ("1,100" and "1100" are the same number),
    and small numbers written as words as their digits ("six" is 6) for either side."""
    found = {re.sub(r"(?<=\d)[,](?=\d{3}\b)", "", n).rstrip(".,") for n in _NUMBER.findall(text)}
    return found | {_NUMBER_WORDS[w] for w in _NUMBER_WORD.findall(text)}


def _units(text: str) -> set[str]:
    """Content words (Latin), and characters and character pairs (Han), of a folded text."""
    units = {w for w in _WORD.findall(_HAN.sub(" ", text)) if w not in _STOPWORDS and not w.isdigit()}
    han = _HAN.findall(text)
    units.update(han)
    units.update(a + b for a, b in zip(han, han[1:]))
    return units


def support(answer: str, passages: list[Passage], question: str = "") -> Support:
    """The passage that best supports the answer (its citations aside) and how well.

    Words the answer takes from the question ("上海办公室离……最近" asked which station is
    nearest the Shanghai office) restate it rather than claim anything, so they count as
    supported, and so do its numbers; `adds_to` is what refuses an answer with nothing of its own.
    """
    text = _fold(CITATION_MARKER.sub(" ", answer))
    asked_text = _fold(question)
    numbers, units = _numbers(text) - _numbers(asked_text), _units(text)
    asked = units & _units(asked_text)
    best = Support(None, 0.0, False, len(numbers), len(units))
    for passage in passages:
        body = _fold(passage.text)
        has_numbers = numbers <= _numbers(body)
        words = len(units & (_units(body) | asked)) / len(units) if units else 1.0
        if (has_numbers, words) > (best.numbers, best.words):
            best = Support(passage.number, words, has_numbers, len(numbers), len(units))
    return best


def adds_to(answer: str, question: str) -> bool:
    """The answer says something the question did not: a number, or a content word of its own.
    "Yes, there is a company gym in Lisbon" asked "Is there a company gym in Lisbon?" does not."""
    text, asked = _fold(CITATION_MARKER.sub(" ", answer)), _fold(question)
    return bool(_numbers(text) - _numbers(asked)) or bool(_units(text) - _units(asked))


def is_supported(found: Support, min_words: float) -> bool:
    """Every number in one passage, and enough of the words; a figure with at most one word of
    its own ("1980.00 euros") stands on its numbers, as models add units a passage leaves out."""
    if found.passage is None or not found.numbers:
        return False
    return found.words >= min_words or (found.figures > 0 and found.content <= 1)


# A word written as a name: a code with letters and digits (MR-900, SEV1), an acronym (CEO,
# APAC) or a capitalised word that does not start the question (Berlin, Okta).
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*")


def _is_name(word: str, first: bool) -> bool:
    has_digit, has_alpha = any(c.isdigit() for c in word), any(c.isalpha() for c in word)
    if has_digit and has_alpha:
        return True
    if word.isupper():  # an acronym; HQ, IT, ID, US are too short and too often written out
        return len(word) >= 3
    return has_alpha and word[0].isupper() and not first and word.lower() not in _STOPWORDS


def unmentioned_names(question: str, texts: list[str]) -> list[str]:
    """The names of the question that no passage mentions (case-insensitive, as a substring).

    Why: asked about the MR-900, a product the documents never name, a model copies the
    MR-400's speed; asked about a Berlin office that does not exist, it describes Austin's. The
    relevance floor cannot see this (the passages are about robots and offices), but a name
    the question depends on and no passage holds is a sign the passages do not answer it.
    """
    body = " ".join(_fold(t) for t in texts)
    names = []
    for i, match in enumerate(_TOKEN.finditer(question)):
        word = match.group().strip("-")
        first = i == 0 or question[: match.start()].rstrip().endswith((".", "?", "!", ":"))
        folded = word.lower()
        mentioned = folded in body or (folded.endswith("s") and folded[:-1] in body)  # Grammys: Grammy
        if word and _is_name(word, first) and not mentioned and word not in names:
            names.append(word)
    return names
