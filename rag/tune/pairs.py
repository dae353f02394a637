"""Tuning questions: one JSON object a line, checked line by line before any model is loaded."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.errors import EvalDataError


@dataclass(frozen=True)
class Pair:
    """A question and what answers it: gold documents, a passage's text, or answer strings.

    `doc_ids` are the `rag eval qa` gold documents; `passage` is a text to train on as it is;
    `answers` (without doc_ids) let the documents whose chunks contain them count as gold."""

    qid: str
    question: str
    doc_ids: tuple[str, ...] = ()
    passage: str | None = None
    answers: tuple[str, ...] = ()


def _strings(record: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = record.get(name)
    if value is None:
        return ()
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise EvalDataError(f"field '{name}' must be a string or a list of strings", where)
    return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))


def _pair(record: dict[str, Any], qid: str, where: str) -> Pair:
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise EvalDataError(f"needs a non-empty string 'question' (fields: {', '.join(sorted(record)) or 'none'})",
                            where)
    if record.get("answerable") is False:
        raise EvalDataError("is marked \"answerable\": false; an unanswerable question cannot train retrieval, "
                            "leave it out of the pairs", where)
    doc_ids = _strings(record, "doc_id", where) + _strings(record, "doc_ids", where)
    passage = record.get("passage")
    if passage is not None and (not isinstance(passage, str) or not passage.strip()):
        raise EvalDataError("field 'passage' must be a non-empty string", where)
    answers = _strings(record, "answer", where) + _strings(record, "answers", where)
    if not doc_ids and passage is None and not answers:
        raise EvalDataError("has no 'doc_id', 'passage' or 'answer': nothing says which passage answers it", where)
    return Pair(qid, question.strip(), doc_ids, passage.strip() if passage else None, answers)


def read_pairs(path: str | Path) -> list[Pair]:
    """Every pair of a JSONL file; an EvalDataError names the file and line of the first bad one."""
    path = Path(path)
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise EvalDataError(f"cannot be read ({exc.strerror}); pass a JSONL file of {{question, doc_id}} or "
                            "{question, passage} records", str(path)) from None
    pairs, seen = [], set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EvalDataError(f"not a JSON object ({exc}); each line must be one", where) from None
        if not isinstance(record, dict):
            raise EvalDataError(f"expected a JSON object, got {type(record).__name__}", where)
        qid = str(record.get("id", f"{path.name}#{lineno}"))
        if qid in seen:
            raise EvalDataError(f"id {qid!r} is used twice; ids must be unique", where)
        seen.add(qid)
        pairs.append(_pair(record, qid, where))
    if not pairs:
        raise EvalDataError("holds no pairs", str(path))
    return pairs


def split_holdout(pairs: list[Pair], share: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training, held out): a seeded random `share` held out, at least one of each, order kept."""
    if not 0 < share < 1:
        raise EvalDataError(f"--holdout must be between 0 and 1, got {share}", "--holdout")
    if len(pairs) < 2:
        raise EvalDataError("holding some out needs at least 2 pairs; add pairs or pass --eval FILE", "--pairs")
    count = min(len(pairs) - 1, max(1, round(len(pairs) * share)))
    held = set(random.Random(seed).sample(range(len(pairs)), count))
    return ([p for i, p in enumerate(pairs) if i not in held], [p for i, p in enumerate(pairs) if i in held])
