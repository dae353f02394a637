"""Text to search tokens, the same way for documents and queries, in English and Chinese.

Latin-script runs are NFKC-normalised, case-folded, split into words, cleared of English stop
words and stemmed (Snowball English). Codes are kept searchable: a compound with a digit, such
as ``MR-2041``, ``v2.3`` or ``ISO-9001``, gives its whole form and its parts, and a word mixing
letters and digits gives its letter and digit pieces too (``MR2041`` -> ``mr2041 mr 2041``), so
"MR-2041", "MR 2041" and "MR2041" all find each other and the exact form ranks first. Han runs
are segmented by jieba in search mode (which adds the shorter words inside long ones), or, with
no dictionary, cut into single characters and overlapping character pairs. Tokens never contain
white space, so a token list can be stored as one space-joined string.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import tempfile
import threading
import unicodedata
from functools import cache
from pathlib import Path
from typing import Any, Literal

from rag.errors import ConfigError

log = logging.getLogger(__name__)

# Bumped whenever a change here would give an existing text other tokens, so that stored
# token lists and saved BM25 indexes made by the old code are refused instead of half-matching.
TOKENIZER_VERSION = 1

# Han ideographs: the unified block, extension A, compatibility ideographs, extensions B to H.
_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
_HAN_RUN = re.compile(f"([{_HAN}]+)")
# A word is letters and digits; a code joins words with - . _ / : @ and no space around them.
_JOINERS = "-._/:@"
_COMPOUND = re.compile(rf"[^\W_]+(?:[{re.escape(_JOINERS)}][^\W_]+)*")
_PART = re.compile(r"[^\W_]+")
_LETTERS_OR_DIGITS = re.compile(r"[^\W\d_]+|\d+")
_DIGIT = re.compile(r"\d")
# A whole form longer than this is a URL or a hash more than a code: only its parts are kept.
_MAX_COMPOUND = 64

# Lucene's English stop words, as bm25s has them (the reference figures were measured with them);
# a copy, so that a bm25s upgrade cannot change the tokens of stored chunks.
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)

ChineseMode = Literal["jieba", "bigrams"]


class Tokenizer:
    """Turns text into BM25 tokens; `settings` records everything that changes the output."""

    def __init__(self, stem: bool = True, stopwords: Literal["en"] | None = "en",
                 chinese: ChineseMode = "jieba") -> None:
        if stopwords not in ("en", None):
            raise ConfigError(f"stopwords must be 'en' or None, not {stopwords!r}")
        if chinese not in ("jieba", "bigrams"):
            raise ConfigError(
                f"chinese must be 'jieba' (word segmentation) or 'bigrams' (characters and character "
                f"pairs), not {chinese!r}"
            )
        self.stem = bool(stem)
        self.stopwords = stopwords
        self.chinese = chinese
        self._stop = ENGLISH_STOPWORDS if stopwords == "en" else frozenset()
        self._local = threading.local()

    @property
    def settings(self) -> dict[str, Any]:
        return {"version": TOKENIZER_VERSION, "stem": self.stem, "stopwords": self.stopwords,
                "chinese": self.chinese}

    def __repr__(self) -> str:
        return f"Tokenizer(stem={self.stem}, stopwords={self.stopwords!r}, chinese={self.chinese!r})"

    def tokenize(self, text: str) -> list[str]:
        """Tokens of a chunk or a query: both go through this one path, so that they match."""
        text = unicodedata.normalize("NFKC", text).casefold()
        tokens: list[str] = []
        # re.split with a group alternates: non-Han, Han, non-Han, ...
        for i, run in enumerate(_HAN_RUN.split(text)):
            if not run:
                continue
            if i % 2:
                tokens.extend(self._han(run))
            else:
                tokens.extend(self._latin(run))
        return tokens

    def _latin(self, run: str) -> list[str]:
        codes: list[str] = []
        words: list[str] = []
        stop = self._stop
        for match in _COMPOUND.finditer(run):
            compound = match.group()
            parts = _PART.findall(compound)
            if len(parts) > 1 and len(compound) <= _MAX_COMPOUND and _DIGIT.search(compound):
                codes.append(compound)
            for part in parts:
                if part in stop:
                    continue
                words.append(part)
                pieces = _LETTERS_OR_DIGITS.findall(part)
                if len(pieces) > 1:
                    words.extend(piece for piece in pieces if piece not in stop)
        if self.stem and words:
            words = self._stemmer().stemWords(words)
        return codes + words if codes else words

    def _han(self, run: str) -> list[str]:
        if self.chinese == "bigrams":
            return [*run, *(run[i:i + 2] for i in range(len(run) - 1))]
        return _jieba().lcut_for_search(run)

    def _stemmer(self) -> Any:
        # PyStemmer objects keep a cache and are not safe to share between threads.
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            import Stemmer

            stemmer = self._local.stemmer = Stemmer.Stemmer("english")
        return stemmer


@cache
def _jieba() -> Any:
    """One jieba segmenter per process: loading its dictionary takes about a second."""
    import jieba

    # jieba attaches its own stderr handler at DEBUG level; keep only its warnings.
    logging.getLogger("jieba").setLevel(logging.WARNING)
    segmenter = jieba.Tokenizer()
    segmenter.cache_file = "jieba.cache"
    folder = _jieba_cache_dir()
    if folder is not None:
        segmenter.tmp_dir = str(folder)
        segmenter.initialize()
        return segmenter
    with tempfile.TemporaryDirectory(prefix="rag-jieba-") as scratch:
        segmenter.tmp_dir = scratch
        segmenter.initialize()
    return segmenter


def _jieba_cache_dir() -> Path | None:
    """A private, writable folder for jieba's dictionary cache, or None when there is none.

    jieba loads its cache (a marshal file) without checks, so the cache never goes where other
    users could write it; jieba's own default is the shared temporary folder.
    """
    home_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (Path(home_cache) / "rag" / "jieba",
                   Path(tempfile.gettempdir()) / f"rag-jieba-{os.getuid()}"):
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = folder.lstat()
        except OSError:
            continue
        private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022
        if private and os.access(folder, os.W_OK | os.X_OK):
            return folder
    log.info("no private writable cache folder for jieba; its dictionary is rebuilt in each process")
    return None


def serialize_tokens(tokens: list[str]) -> str:
    """One string for a SQLite column; raises ValueError if a token is empty or holds white space."""
    joined = " ".join(tokens)
    if len(joined.split()) != len(tokens):
        raise ValueError("tokens must be non-empty and contain no white space")
    return joined


def deserialize_tokens(text: str) -> list[str]:
    return text.split()
