"""Ratings of answers (POST /v1/feedback), kept to become a regression set (`rag feedback export`).

Ratings live in `feedback.sqlite` in the index folder, beside the keys and outside the index
versions, so `--index` selects them and no index write can lose them; `serve.feedback_file` can
point elsewhere. Questions and answers are personal data, so a rating keeps only what the user
sent (the rating, a comment) and what the regression set needs: the question, the answer given,
the ids of the documents it cited, the generator and the time. It keeps the key's name, never
the key, and never the client's address. One rating per answer: a second one replaces the first.

The export is a `rag eval qa` file, one object per line with only the fields `read_qa_jsonl`
knows (`id`, `question`, `answer`, `doc_id`), so `rag eval qa FILE` runs on it:

- thumbs up: the answer given becomes the gold answer (its text without the [n] markers) and its
  first cited document the gold `doc_id`, so both retrieval and `--answers` are scored;
- thumbs down: the question alone. What was said is no gold answer and what was cited no gold
  document, so nothing is scored for it; `rag eval qa FILE --answers` asks it again and counts
  it in `abstained` and `grounded`, and `rag feedback list` shows the answer and comment given;
- a thumbs-up on "I don't know" (an abstention): the question alone too, as there is no answer
  to hold the next one to.

To be rateable, an answer given by the service is kept in the same file (`answers` table) for
`serve.feedback_hours` and then removed unless it was rated: every worker process of a server,
and the server after a restart, can then take its rating. 0 hours keeps nothing and turns
feedback off.

Each line's `id` is `<rating>-<answer id>`: the rating stays visible, and the id leads back to the
stored rating.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TextIO, get_args

from rag.citations import Answer
from rag.citations import strip_citations as plain_answer
from rag.errors import RagError
from rag.serve.private_sqlite import open_private

FEEDBACK_FILE = "feedback.sqlite"
Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = get_args(Rating)
_VERSION = 1
_SCHEMA = f"""
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS feedback (
    answer_id TEXT PRIMARY KEY,         -- the id POST /v1/ask gave the answer
    rating    TEXT NOT NULL CHECK (rating IN ('up', 'down')),
    comment   TEXT,                     -- as the user sent it
    question  TEXT NOT NULL,
    answer    TEXT NOT NULL,            -- as given, with its [n] markers
    doc_ids   TEXT NOT NULL,            -- JSON list of the cited documents' ids, in order of citation
    generator TEXT NOT NULL,
    abstained INTEGER NOT NULL,         -- the answer said it does not know
    key_name  TEXT,                     -- the key's name (NULL: open access); never the key
    rated_at  TEXT NOT NULL
);
-- Answers given lately, rateable for serve.feedback_hours; removed after that unless rated.
CREATE TABLE IF NOT EXISTS answers (
    answer_id   TEXT PRIMARY KEY,
    key_id      TEXT,                   -- the key it was given to (NULL: open access)
    key_name    TEXT,
    question    TEXT NOT NULL,
    answer      TEXT NOT NULL,
    doc_ids     TEXT NOT NULL,
    generator   TEXT NOT NULL,
    abstained   INTEGER NOT NULL,
    answered_at REAL NOT NULL           -- seconds since the epoch
);
CREATE INDEX IF NOT EXISTS answers_by_time ON answers(answered_at);
PRAGMA user_version = {_VERSION};
"""
_COLUMNS = "answer_id, rating, comment, question, answer, doc_ids, generator, abstained, key_name, rated_at"


@dataclass(frozen=True)
class Feedback:
    """One rating and what it rates."""

    answer_id: str
    rating: Rating
    comment: str | None
    question: str
    answer: str
    doc_ids: tuple[str, ...]
    generator: str
    abstained: bool
    key_name: str | None
    rated_at: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"doc_ids": list(self.doc_ids)}

    def as_qa(self) -> dict[str, str]:
        """This rating as one `rag eval qa` line (see the module's description)."""
        record = {"id": f"{self.rating}-{self.answer_id}", "question": self.question}
        if self.rating == "up" and not self.abstained:
            text = plain_answer(self.answer)
            if text:
                record["answer"] = text
            if self.doc_ids:
                record["doc_id"] = self.doc_ids[0]
        return record


def chosen_rating(value: str) -> Rating | None:
    """Which ratings `up`, `down` or `all` (None) selects."""
    if value == "all":
        return None
    if value not in RATINGS:
        raise RagError(f"rating {value!r}: use up, down or all")
    return value  # type: ignore[return-value]


def feedback_path(index_path: Path, feedback_file: str = "") -> Path:
    return Path(feedback_file) if feedback_file else Path(index_path) / FEEDBACK_FILE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class FeedbackStore:
    """The ratings of one service (one index folder, or `serve.feedback_file`)."""

    def __init__(self, path: Path, keep_hours: float = 24.0) -> None:
        self.path = Path(path)
        self.keep_seconds = keep_hours * 3600
        self._writer: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _write(self) -> sqlite3.Connection:
        """One connection for this process's writes (an answer is remembered at every ask)."""
        if self._writer is None:
            self._writer = self._connect(create=True)
            self._writer.execute("PRAGMA synchronous = NORMAL")  # a lost pending answer costs one rating
        return self._writer

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    def remember(self, answer_id: str, answer: Answer, key_id: str | None, key_name: str | None) -> None:
        """Keep an answer rateable for `keep_hours` (nothing is kept when that is 0), and forget
        those older than that which were never rated."""
        if self.keep_seconds <= 0:
            return
        now = time.time()
        doc_ids = json.dumps(list(dict.fromkeys(c.doc_id for c in answer.citations)), ensure_ascii=False)
        with self._lock:
            try:
                conn = self._write()
                with conn:
                    conn.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (answer_id, key_id, key_name, answer.question, answer.answer, doc_ids,
                                  answer.generator, int(answer.abstained), now))
                    conn.execute("DELETE FROM answers WHERE answered_at < ?", (now - self.keep_seconds,))
            except sqlite3.Error as exc:
                raise RagError(f"cannot write the feedback store {self.path} ({exc})") from None

    def _connect(self, create: bool = False) -> sqlite3.Connection:
        return open_private(self.path, create, _SCHEMA, _VERSION, "the feedback store", "serve.feedback_file")

    def rate(self, answer_id: str, rating: Rating, comment: str | None = None,
             key_id: str | None = None) -> tuple[Feedback, bool] | None:
        """Store a rating of an answer given to this key (None: open access) within the last
        `keep_hours`; returns it and whether it replaced an earlier one, or None when there is no
        such answer to rate."""
        if rating not in RATINGS:
            raise RagError(f"rating {rating!r}: use one of {', '.join(RATINGS)}")
        with self._lock:
            try:
                conn = self._write()
                with conn:
                    conn.execute("BEGIN IMMEDIATE")  # so that `replaced` holds with several workers writing
                    given = conn.execute(
                        "SELECT key_name, question, answer, doc_ids, generator, abstained FROM answers "
                        "WHERE answer_id = ? AND key_id IS ? AND answered_at >= ?",
                        (answer_id, key_id, time.time() - self.keep_seconds)).fetchone()
                    if given is None:
                        return None
                    key_name, question, text, doc_ids, generator, abstained = given
                    feedback = Feedback(answer_id, rating, comment or None, question, text,
                                        tuple(json.loads(doc_ids)), generator, bool(abstained), key_name, _now())
                    replaced = conn.execute("SELECT 1 FROM feedback WHERE answer_id = ?",
                                            (answer_id,)).fetchone() is not None
                    row = _row(feedback)
                    conn.execute(f"INSERT OR REPLACE INTO feedback ({_COLUMNS}) VALUES "
                                 f"({', '.join('?' * len(row))})", row)
            except sqlite3.Error as exc:
                raise RagError(f"cannot write the feedback store {self.path} ({exc}); the rating was not "
                               "stored") from None
        return feedback, replaced

    def ratings(self, rating: Rating | None = None) -> list[Feedback]:
        """The stored ratings, oldest first; only those of `rating` when given."""
        if not self.path.is_file():
            return []
        where, args = ("WHERE rating = ?", (rating,)) if rating else ("", ())
        with closing(self._connect()) as conn:
            try:
                rows = conn.execute(f"SELECT {_COLUMNS} FROM feedback {where} ORDER BY rated_at, answer_id",
                                    args).fetchall()
            except sqlite3.Error as exc:
                raise RagError(f"cannot read the feedback store {self.path} ({exc})") from None
        return [Feedback(a, r, c, q, t, tuple(json.loads(d)), g, bool(ab), k, at)
                for a, r, c, q, t, d, g, ab, k, at in rows]

    def write_qa(self, out: TextIO, rating: Rating | None = None) -> int:
        """Write the ratings (of `rating`, or all) as `rag eval qa` JSONL lines; returns how many.
        Refuses when none matches, as `rag eval qa` refuses an empty file."""
        chosen = self.ratings(rating)
        if not chosen:
            which = f"answers rated {rating!r}" if rating else "rated answers"
            raise RagError(f"no {which} in {self.path}; nothing was written (ratings come from "
                           "POST /v1/feedback)")
        for feedback in chosen:
            out.write(json.dumps(feedback.as_qa(), ensure_ascii=False) + "\n")
        return len(chosen)

    def export(self, path: Path, rating: Rating | None = None) -> int:
        """`write_qa` into `path`, made readable by its owner only (it holds users' questions) and
        replaced whole, so a failed export leaves the previous file as it was."""
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            partial.unlink(missing_ok=True)
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(fd, "w", encoding="utf-8") as out:
                written = self.write_qa(out, rating)
            partial.replace(path)
        except OSError as exc:
            raise RagError(f"cannot write {path} ({exc.strerror or exc}); choose another file with -o") from None
        finally:
            partial.unlink(missing_ok=True)
        return written


def _row(feedback: Feedback) -> tuple[Any, ...]:
    """The row of `_COLUMNS` that stores a rating."""
    return (feedback.answer_id, feedback.rating, feedback.comment, feedback.question, feedback.answer,
            json.dumps(list(feedback.doc_ids), ensure_ascii=False), feedback.generator, int(feedback.abstained),
            feedback.key_name, feedback.rated_at)
