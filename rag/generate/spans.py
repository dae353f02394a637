"""Grounded span decoding: the answer must be a phrase copied from one of the passages.

A small base model (the bundled gemma-3-270m) left to itself paraphrases, invents and rarely
cites. Restricting each generated token to one that continues a word-aligned phrase of some
passage (or the "I don't know" sentence) keeps the model choosing *which* phrase answers, which
it does well, and takes away what it does badly. The citation is then a fact, not a guess: the
passage the phrase was copied from.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from rag.citations import Passage

_SPACE = "\u2581"  # SentencePiece's word-boundary marker
# A phrase made only of these answers nothing; the model may not stop after them.
_FUNCTION_WORDS = frozenset("""a an the this that these those he she it they we i you his her its their our
my your of in on at to for by with from and or but as is was are were be been which who whom whose what
when where why how there here some any no not one""".split())
_TRAILING = ".,;:!?。，；：！？、"


def _is_cjk(ch: str) -> bool:
    return "CJK" in unicodedata.name(ch, "") or "\u3000" <= ch <= "\u303f" or "\uff00" <= ch <= "\uffef"


@dataclass
class _Source:
    tokens: list[int]
    starts: dict[int, list[int]]  # first token id -> positions where a phrase may start with it
    ends: set[int]  # positions after which a phrase may stop (word boundaries)


class SpanVocabulary:
    """What the constraints need from a tokenizer's 262k-entry vocabulary, read once per model."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.eos = int(tokenizer.eos_token_id)
        # Tokens the model uses to end a phrase: a line break, a citation bracket, end of text.
        self.stops = {self.eos} | {i for piece, i in self.vocab.items()
                                   if piece.startswith(("\n", "[", _SPACE + "[")) and len(piece) <= 3}


class SpanConstraint:
    """Which tokens may come next, for one prompt's passages."""

    def __init__(self, vocabulary: SpanVocabulary, passages: list[Passage], idk: str, max_tokens: int = 48,
                 stop_bonus: float = 0.0, free_words: int = 3) -> None:
        self.tokenizer = vocabulary.tokenizer
        self.stop_bonus = stop_bonus
        self.free_words = free_words
        self.vocab = vocabulary.vocab
        self.eos = vocabulary.eos
        self.stops = vocabulary.stops
        self.passages = passages
        self.idk = idk
        self.max_tokens = max_tokens
        self._first: list[int] | None = None
        self.sources = [self._source(" " + p.text) for p in passages]
        idk_tokens = self.tokenizer(" " + idk, add_special_tokens=False)["input_ids"]
        self.sources.append(_Source(idk_tokens, {idk_tokens[0]: [0]}, {len(idk_tokens)}))

    def _source(self, text: str) -> _Source:
        tokens = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = self.tokenizer.convert_ids_to_tokens(tokens)
        vocab = self.vocab
        starts: dict[int, list[int]] = {}
        ends: set[int] = {len(tokens)}
        for pos, piece in enumerate(pieces):
            previous = pieces[pos - 1] if pos else "\n"
            first = piece[:1]
            word_start = (first == _SPACE or previous[-1:].isspace() or _is_cjk(first) or _is_cjk(previous[-1:])
                          or not previous[-1:].isalnum())
            if not word_start:
                continue
            ends.add(pos)
            if first.isspace() or first == "\n":
                continue
            starts.setdefault(tokens[pos], []).append(pos)
            # After a line break the word has no boundary marker, but the model writes one after "Answer:".
            if first != _SPACE and (variant := vocab.get(_SPACE + piece)) is not None:
                starts.setdefault(variant, []).append(pos)
        return _Source(tokens, starts, ends)

    def _matches(self, generated: list[int]) -> list[tuple[int, int]]:
        """(source, position after the phrase) for every place the generated phrase occurs."""
        found = []
        for s, source in enumerate(self.sources):
            for start in source.starts.get(generated[0], ()):
                end = start + len(generated)
                if end <= len(source.tokens) and source.tokens[start + 1:end] == generated[1:]:
                    found.append((s, end))
        return found

    def allowed(self, generated: list[int]) -> list[int]:
        if not generated:
            if self._first is None:
                self._first = list({t for source in self.sources for t in source.starts})
            return self._first
        if generated[-1] in self.stops:
            return [self.eos]
        matches = self._matches(generated)
        if not matches or len(generated) >= self.max_tokens:
            return [self.eos]
        allowed = {self.sources[s].tokens[end] for s, end in matches if end < len(self.sources[s].tokens)}
        if any(end in self.sources[s].ends for s, end in matches) and self._says_something(generated):
            allowed |= self.stops
        return list(allowed)

    def length_bonus(self, generated: list[int]) -> float:
        """Logits added to the stop tokens: `stop_bonus` for each word past `free_words`.

        Copying a passage, a base model keeps going to the end of the sentence; short answers are
        untouched, and the longer a phrase runs the likelier the model is to end it.
        """
        if not self.stop_bonus or not generated:
            return 0.0
        return self.stop_bonus * max(0, len(self.tokenizer.decode(generated).split()) - self.free_words)

    def _says_something(self, generated: list[int]) -> bool:
        words = self.tokenizer.decode(generated).strip(_TRAILING + " ").lower().split()
        return bool(words) and not all(w in _FUNCTION_WORDS for w in words)

    def finish(self, text: str) -> str:
        """The phrase with the citation of the best-ranked passage it was copied from."""
        for stop in ("\n", "[", "［"):
            text = text.split(stop, 1)[0]
        text = text.strip()
        if not text.rstrip(_TRAILING) or text.rstrip(_TRAILING) == self.idk.strip().rstrip(_TRAILING):
            return self.idk
        return text + self.citation(text)

    def citation(self, text: str) -> str:
        """" [n]" for the best-ranked passage holding the phrase; "" when none does."""
        phrase = text.strip().rstrip(_TRAILING).strip()
        for passage in self.passages:
            if phrase and (phrase in passage.text or phrase in " ".join(passage.text.split())):
                return f" [{passage.number}]"
        return ""


class SpanLogitsProcessor:
    """Masks every token a constraint does not allow (a transformers logits processor)."""

    def __init__(self, constraints: list[SpanConstraint], prompt_length: int) -> None:
        self.constraints = constraints
        self.prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        masked = torch.full_like(scores, float("-inf"))
        for row, constraint in enumerate(self.constraints):
            generated = input_ids[row, self.prompt_length:].tolist()
            allowed = constraint.allowed(generated)
            masked[row, allowed] = scores[row, allowed]
            bonus = constraint.length_bonus(generated)
            if bonus:
                stops = list(constraint.stops.intersection(allowed))
                masked[row, stops] += bonus
        return masked
