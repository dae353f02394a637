"""Evaluation sets as plain records: BEIR folders, SQuAD-format JSON, and a user's question JSONL.

Every problem is an EvalDataError naming the file (and line, where there is one) and what to change,
raised before any model is loaded where the check is cheap.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

from rag.conversation import Turn, turns_from
from rag.errors import ConfigError, EvalDataError

T = TypeVar("T")

_QRELS_HEADER = ["query-id", "corpus-id", "score"]


@dataclass(frozen=True)
class EvalDocument:
    """One document of an evaluation corpus."""

    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class EvalQuestion:
    """A question with its gold answers (none: retrieval only) and gold document (None: unknown).

    `unanswerable`: the file marks it `"answerable": false`, so the right reply is "I don't know".
    `history`: the conversation's earlier turns (a follow-up), and `standalone`, when the file
    gives it, the same question written to stand alone (what a rewrite should reach).
    """

    qid: str
    question: str
    answers: tuple[str, ...] = ()
    doc_id: str | None = None
    unanswerable: bool = False
    history: tuple[Turn, ...] = ()
    standalone: str | None = None


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR split: the queries that have judgements, their qrels, and a corpus read on demand."""

    corpus_path: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def documents(self) -> Iterator[EvalDocument]:
        """The corpus line by line, afresh on each call: BEIR corpora run to millions of documents."""
        for where, _, record in _jsonl_records(self.corpus_path):
            yield EvalDocument(_id_field(record, "_id", where), _optional_text(record, "title", where),
                               _text_field(record, "text", where))


@dataclass(frozen=True)
class SquadDataset:
    """Paragraphs as documents and the questions asked about them, each with its paragraph as gold."""

    documents: list[EvalDocument]
    questions: list[EvalQuestion]


def _require_file(path: Path, hint: str) -> None:
    if not path.is_file():
        raise EvalDataError(f"not found; {hint}", str(path))


def _jsonl_records(path: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(where, line number, object) for each non-blank line, in bounded memory."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise EvalDataError(f"cannot be read ({exc.strerror})", str(path)) from None
    with fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalDataError(f"not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                                    "JSON object", where) from None
            except UnicodeDecodeError:
                raise EvalDataError("not UTF-8 text; save the file as UTF-8", where) from None
            if not isinstance(record, dict):
                raise EvalDataError(f"expected a JSON object, got {type(record).__name__}", where)
            yield where, lineno, record


def _text_field(record: dict[str, Any], name: str, where: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        found = "it is missing" if value is None else f"not {type(value).__name__}"
        raise EvalDataError(f"field '{name}' must be a string, {found} "
                            f"(fields: {', '.join(sorted(record)) or 'none'})", where)
    return value


def _optional_text(record: dict[str, Any], name: str, where: str) -> str:
    return "" if record.get(name) is None else _text_field(record, name, where)


def _id_field(record: dict[str, Any], name: str, where: str) -> str:
    """An id as a string; JSON numbers are accepted because some exports write ids as numbers."""
    value = record.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    value = _text_field(record, name, where).strip()
    if not value:
        raise EvalDataError(f"field '{name}' is empty", where)
    return value


def read_beir(directory: str | Path, split: str = "test") -> BeirDataset:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv (query-id, corpus-id, score).

    Queries and qrels are read now; the corpus is only checked to exist, and streamed by `documents()`.
    """
    root = Path(directory)
    if not root.is_dir():
        raise EvalDataError("not a folder; expected a BEIR dataset folder with corpus.jsonl, queries.jsonl "
                            "and qrels/", str(root))
    corpus, queries_path, qrels_path = root / "corpus.jsonl", root / "queries.jsonl", root / "qrels" / f"{split}.tsv"
    _require_file(corpus, "a BEIR folder holds corpus.jsonl with one {\"_id\", \"title\", \"text\"} per line")
    _require_file(queries_path, "a BEIR folder holds queries.jsonl with one {\"_id\", \"text\"} per line")
    if not qrels_path.is_file():
        splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        hint = (f"splits in this folder: {', '.join(splits)}; pass one of them as the split" if splits
                else "no qrels/*.tsv here")
        raise EvalDataError(f"not found; {hint}", str(qrels_path))
    qrels = _read_qrels(qrels_path)
    queries: dict[str, str] = {}
    for where, _, record in _jsonl_records(queries_path):
        qid = _id_field(record, "_id", where)
        if qid in qrels:
            queries[qid] = _text_field(record, "text", where)
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise EvalDataError(f"{len(missing)} judged queries are not in {queries_path.name} "
                            f"(e.g. {', '.join(missing[:3])}); the qrels and queries must come from the same "
                            "dataset", str(qrels_path))
    return BeirDataset(corpus, queries, qrels)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8-sig") as fh:
        try:
            lines = list(enumerate(fh, start=1))
        except UnicodeDecodeError:
            raise EvalDataError("not UTF-8 text; save the file as UTF-8", str(path)) from None
    for lineno, line in lines:
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        if not line.strip() or (lineno == 1 and fields == _QRELS_HEADER):
            continue
        where = f"{path} line {lineno}"
        if len(fields) != 3:
            raise EvalDataError(f"expected 3 tab-separated columns (query-id, corpus-id, score), "
                                f"found {len(fields)}", where)
        qid, doc_id, score = fields
        try:
            relevance = int(score)
        except ValueError:
            raise EvalDataError(f"score {score!r} is not a whole number", where) from None
        qrels.setdefault(qid, {})[doc_id] = relevance
    if not qrels:
        raise EvalDataError("holds no judgements", str(path))
    return qrels


def read_squad(path: str | Path) -> SquadDataset:
    """SQuAD-format JSON (SQuAD v1.1, CMRC 2018): each paragraph is a document "<title>#<number>".

    The article's title names it, else its id, else its position. Questions without a gold answer
    (SQuAD 2.0's unanswerable ones) are left out: EM and F1 need one.
    """
    path = Path(path)
    _require_file(path, "pass a SQuAD-format JSON file (an object whose 'data' lists the articles)")
    try:
        payload = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise EvalDataError(f"not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                            str(path)) from None
    except UnicodeDecodeError:
        raise EvalDataError("not UTF-8 text; save the file as UTF-8", str(path)) from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise EvalDataError("not SQuAD format: expected an object whose 'data' is a list of articles", str(path))
    documents: list[EvalDocument] = []
    questions: list[EvalQuestion] = []
    titles: dict[str, int] = {}
    for a, article in enumerate(data):
        where = f"{path} data[{a}]"
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise EvalDataError("an article must be an object with a 'paragraphs' list", where)
        title = str(article.get("title") or article.get("id") or a)
        if title in titles:
            raise EvalDataError(f"title {title!r} was already used by data[{titles[title]}]; document ids "
                                "are built from titles, so make them unique", where)
        titles[title] = a
        for p, paragraph in enumerate(article["paragraphs"]):
            where = f"{path} data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise EvalDataError("a paragraph must be an object with 'context' and a 'qas' list", where)
            doc_id = f"{title}#{p}"
            documents.append(EvalDocument(doc_id, title, _text_field(paragraph, "context", where)))
            for n, qa in enumerate(paragraph["qas"]):
                qa_where = f"{where}.qas[{n}]"
                if not isinstance(qa, dict):
                    raise EvalDataError("a question must be an object", qa_where)
                answers = _squad_answers(qa.get("answers") or [], qa_where)
                if answers:
                    qid = str(qa.get("id") or f"{doc_id}#q{n}")
                    questions.append(EvalQuestion(qid, _text_field(qa, "question", qa_where), answers, doc_id))
    return SquadDataset(documents, questions)


def _squad_answers(answers: Any, where: str) -> tuple[str, ...]:
    if not isinstance(answers, list) or not all(isinstance(a, dict) and isinstance(a.get("text"), str)
                                                for a in answers):
        raise EvalDataError("'answers' must be a list of objects with a 'text' string", where)
    return tuple(dict.fromkeys(a["text"] for a in answers))


def read_qa_jsonl(path: str | Path) -> list[EvalQuestion]:
    """A user's question set, one {"question", "answer" or "answers", "doc_id", "id", "answerable",
    "history", "standalone"} per line.

    Only the question is required: without answers only retrieval is scored, without a doc_id only
    the answers. `answer(s)` may be a string or a list of strings; ids default to "<file>#<line>".
    `"answerable": false` marks a question the documents do not answer (corpora/unanswerable_qa.jsonl):
    it may have neither answer nor doc_id, and `--answers` counts how often it gets "I don't know".
    A question with no answer and no mark is not assumed unanswerable: it may just lack a gold answer.
    A follow-up has `history`, the earlier turns ([{"role": "user"|"assistant", "content"}], oldest
    first), and may have `standalone`, itself written to be understood alone (corpora/followup_qa.jsonl).
    """
    path = Path(path)
    _require_file(path, 'pass a JSONL file with one {"question", "answer", "doc_id"} object per line')
    questions: list[EvalQuestion] = []
    seen: dict[str, int] = {}
    for where, lineno, record in _jsonl_records(path):
        question = _text_field(record, "question", where).strip()
        if not question:
            raise EvalDataError("field 'question' is empty", where)
        if "answer" in record and "answers" in record:
            raise EvalDataError("has both 'answer' and 'answers'; keep one", where)
        answers = _answer_texts(record.get("answers", record.get("answer")), where)
        doc_id = None if record.get("doc_id") is None else _id_field(record, "doc_id", where)
        answerable = record.get("answerable", True)
        if not isinstance(answerable, bool):
            raise EvalDataError(f"field 'answerable' must be true or false, not {json.dumps(answerable)}", where)
        if not answerable and (answers or doc_id):
            raise EvalDataError("is marked \"answerable\": false but has an answer or a doc_id; keep one or "
                                "the other", where)
        qid = f"{path.name}#{lineno}" if record.get("id") is None else _id_field(record, "id", where)
        if qid in seen:
            raise EvalDataError(f"id {qid!r} is also used on line {seen[qid]}; ids must be unique", where)
        seen[qid] = lineno
        history, standalone = _conversation(record, where)
        questions.append(EvalQuestion(qid, question, answers, doc_id, not answerable, history, standalone))
    if not questions:
        raise EvalDataError("holds no questions", str(path))
    return questions


def _conversation(record: dict[str, Any], where: str) -> tuple[tuple[Turn, ...], str | None]:
    """A record's earlier turns and standalone form (both optional)."""
    history = record.get("history") or []
    if not isinstance(history, list):
        raise EvalDataError('field \'history\' must be a list of {"role", "content"} turns, oldest first', where)
    try:
        turns = tuple(turns_from(history))
    except ConfigError as exc:
        raise EvalDataError(str(exc), where) from None
    standalone = None if record.get("standalone") is None else _text_field(record, "standalone", where).strip()
    if standalone == "":
        raise EvalDataError("field 'standalone' is empty", where)
    return turns, standalone


def _answer_texts(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise EvalDataError("'answer' must be a string or a list of strings", where)
    return tuple(dict.fromkeys(t.strip() for t in texts if t.strip()))


def sample(items: Sequence[T], limit: int | None, seed: int = 0) -> list[T]:
    """A fixed random subset in the original order, so that a run on a slice is repeatable.

    `limit` None or 0 keeps everything.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    if not limit or limit >= len(items):
        return list(items)
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]
