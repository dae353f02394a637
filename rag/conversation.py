"""Follow-up questions: what was asked before, whether the last question needs it, and the
standalone question retrieval runs on.

"And in Shanghai?" after "How much annual leave do I get in Lisbon?" finds nothing about leave
on its own. A cheap test (`needs_context`) says whether the last question leans on the
conversation; only then is a standalone question made: by the generator, when it is a chat
model that can rewrite (rag.answering), or here without a model (`combined_query`): the last
question with the user's previous one, whose names the last question replaces left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rag.citations import strip_citations
from rag.errors import ConfigError
from rag.prompt import Prompt, detect_language

Role = Literal["user", "assistant"]
# Earlier turns read at most: the recent ones say what the conversation is about.
RECENT_TURNS = 6
# Earlier user questions a combined query reaches back over (a chain of follow-ups).
MAX_COMBINED = 3
# The longest turn passed on (an assistant's long answer is cut: its first lines carry the point).
TURN_CHARS = 600


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


def turns_from(history: Iterable[Mapping[str, Any] | Turn] | None, where: str = "history") -> list[Turn]:
    """Turns from {"role": "user"|"assistant", "content": str} records, oldest first; a record
    that is not one is an error naming its position."""
    turns = []
    for n, item in enumerate(history or ()):
        if isinstance(item, Turn):
            turns.append(item)
            continue
        role, content = (item.get("role"), item.get("content")) if isinstance(item, Mapping) else (None, None)
        if role not in ("user", "assistant") or not isinstance(content, str):
            raise ConfigError(f"{where}[{n}]: expected {{\"role\": \"user\" or \"assistant\", \"content\": text}}")
        turns.append(Turn(role, content))
    return turns


def recent(history: list[Turn]) -> list[Turn]:
    """The turns a rewrite or an answer reads: the last RECENT_TURNS, each cut to TURN_CHARS, an
    answer's [n] markers removed (they number passages of an earlier prompt, not this one's)."""
    turns = [Turn(t.role, strip_citations(t.content) if t.role == "assistant" else t.content)
             for t in history[-RECENT_TURNS:]]
    return [Turn(t.role, _cut(t.content)) for t in turns if t.content.strip()]


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TURN_CHARS else text[:TURN_CHARS].rsplit(" ", 1)[0] + " …"


# -- does the last question lean on the conversation? ---------------------------------------------

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d[\w.,/-]*")
_ANAPHORS = {"it", "its", "it's", "they", "them", "their", "theirs", "this", "that", "these", "those", "there",
             "here", "he", "she", "him", "her", "his", "hers", "former", "latter"}
_OPENERS = ("and ", "or ", "but ", "also ", "what about ", "how about ", "then ", "so what", "same for ",
            "what of ", "and what", "and how", "and the ")
_STOPWORDS = {
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "by", "with", "from", "as", "is",
    "are", "was", "were", "be", "been", "am", "do", "does", "did", "can", "could", "should", "would", "will",
    "shall", "may", "might", "must", "have", "has", "had", "i", "me", "my", "we", "our", "you", "your", "what",
    "which", "who", "whom", "whose", "when", "where", "why", "how", "much", "many", "long", "about", "there",
    "any", "some", "get", "got", "one", "ones", "also", "too", "else", "then", "than", "so", "if", "not", "no",
    "up", "out", "over", "into", "after", "before", "per", "all", "more", "most", "other", "same", "again",
}
_ZH_ANAPHORS = ("它", "他们", "她们", "他", "她", "这个", "那个", "这里", "那里", "这些", "那些", "该", "其")
_ZH_OPENERS = ("那", "那么", "还有", "而", "也", "另外")


def needs_context(question: str, history: list[Turn]) -> bool:
    """Whether the last question leans on the earlier turns: a pronoun or demonstrative ("it",
    "there", "它"), an elliptical opening ("and in Shanghai?", "what about..."), or too few words
    of its own to be searched alone. False without earlier user turns, so a first question costs
    nothing."""
    if not any(t.role == "user" and t.content.strip() for t in history):
        return False
    text = " ".join(question.split())
    if detect_language(text) == "zh":
        core = re.sub(r"[^\u3400-\u9fff]", "", text)
        return (text.startswith(_ZH_OPENERS) or any(a in text for a in _ZH_ANAPHORS)
                or text.rstrip("？?。 ").endswith("呢") or len(core) <= 6)
    words = _WORD.findall(text)
    content = [w for w in words if w.lower().strip("'’") not in _STOPWORDS and len(w) > 1]
    return _points_back(text) or text.lower().startswith(_OPENERS) or len(content) <= 2


def _points_back(text: str) -> bool:
    """Whether an English question has a pronoun or demonstrative ("it", "there") standing for
    something named before. "IT" (the department) is not "it": a pronoun is written in lower
    case, or capitalised first."""
    return any(w.lower() in _ANAPHORS and (w.islower() or (i == 0 and w[1:].islower()))
               for i, w in enumerate(_WORD.findall(text)))


# -- a standalone question without a model -------------------------------------------------------

# Names, codes and numbers: what a follow-up swaps ("and in Shanghai?" for Lisbon, "the MR-900?").
_NAME = re.compile(r"\b(?:[A-Z][\w-]*\d[\w-]*|\d[\d.,]*|[A-Z][a-z]+(?:[- ][A-Z][a-z]+)*)\b")


def _names(text: str) -> list[str]:
    found = []
    for match in _NAME.finditer(text):
        name = match.group(0)
        first = match.start() == 0 or not text[:match.start()].strip() or text[:match.start()].rstrip()[-1] in ".?!"
        if first and not any(c.isdigit() for c in name) and " " not in name:
            continue  # a sentence's first word is capitalised whatever it is
        found.append(name)
    return found


def combined_query(question: str, history: list[Turn]) -> str:
    """The last question, then the user's earlier questions back to the last one that stands on
    its own (at most MAX_COMBINED), each with the names a newer question replaces left out
    ("and in Shanghai?" + "How much annual leave do I get in Lisbon?" searches "and in Shanghai?
    How much annual leave do I get in?"): the earlier questions bring the topic, the last its new
    details, and a name asked about before does not pull its own passages back to the top. The
    newest words come first, and a chain of follow-ups ("and in Shanghai?", "and in Austin?")
    still reaches the question that named the topic."""
    asked = [t.content for t in history if t.role == "user" and t.content.strip()]
    parts, replacing = [question], _replacing_names(question)
    for previous in reversed(asked[-MAX_COMBINED:]):
        parts.append(_without_replaced_names(previous, replacing))
        if not needs_context(previous, [Turn("user", p) for p in asked[:asked.index(previous)]] or []):
            break
        replacing = replacing + _replacing_names(previous)
    return re.sub(r"\s+([?.!,;:？。])", r"\1", " ".join(" ".join(parts).split()))


def _replacing_names(question: str) -> list[str]:
    """The names a question puts in place of earlier ones: all of its names, unless it points
    back ("What does error E-404 mean on it?" asks about the robot named before, and E-404
    replaces nothing)."""
    return [] if _points_back(question) else _names(question)


def _without_replaced_names(previous: str, replacing: list[str]) -> str:
    """`previous` without the names a newer question replaced: when it names something
    (Shanghai), the earlier question's other names (Lisbon) are what it replaced."""
    if not replacing:
        return previous
    named = " ".join(replacing)
    for name in _names(previous):
        if name not in named:
            previous = previous.replace(name, " ")
    return previous


# -- a standalone question from the generator ----------------------------------------------------


@dataclass(frozen=True)
class RewriteTemplates:
    """One language's rewrite prompt ({conversation}, {question}) and its worked examples:
    (conversation, last question, standalone question)."""

    system: str
    user: str
    user_label: str
    assistant_label: str
    examples: tuple[tuple[str, str, str], ...] = ()


def render_conversation(history: list[Turn], templates: RewriteTemplates) -> str:
    labels = {"user": templates.user_label, "assistant": templates.assistant_label}
    return "\n".join(f"{labels[t.role]}: {t.content}" for t in recent(history))


def rewrite_prompt(question: str, history: list[Turn], templates: RewriteTemplates) -> Prompt:
    """The prompt that asks a chat model for the standalone form of the last question (its
    examples are earlier turns, so a local model computes them once, with the system prompt)."""
    user = templates.user.format(conversation=render_conversation(history, templates), question=question)
    examples = tuple((templates.user.format(conversation=conversation, question=last), standalone)
                     for conversation, last, standalone in templates.examples)
    return Prompt(question, detect_language(question), templates.system, user, f"{templates.system}\n\n{user}\n",
                  [], "", examples)


_LABEL = re.compile(r"^\s*(?:standalone|rewritten|last)?\s*question\s*[:：]\s*|^\s*(?:问题|改写后的问题)\s*[:：]\s*", re.I)


def parse_rewrite(text: str, question: str) -> str | None:
    """The standalone question in a model's reply, or None when the reply is not one (empty, a
    refusal, far longer than a question, or the question again with nothing of the conversation
    added): the caller then falls back to combined_query."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    rewritten = _LABEL.sub("", lines[0]).strip().strip("\"'“”«»").strip()
    if not rewritten or len(rewritten) > max(300, 4 * len(question)) or rewritten.lower().startswith("i don"):
        return None
    return rewritten if _content(rewritten) - _content(question) else None  # an echo adds nothing


def _content(text: str) -> set[str]:
    """The words (Latin) and characters (Han) a rewrite may add to a question."""
    words = {w.lower().strip("'’") for w in _WORD.findall(text)} - _STOPWORDS
    return words | set(re.findall(r"[\u3400-\u9fff]", text))
