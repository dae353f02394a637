"""BM25 over immutable segments: raw postings per segment, statistics over all of them at search time.

An index made of segments (as Lucene and Tantivy have it) never rewrites a segment: a write adds a
small one with its new chunks, and a deletion records the chunk id as a tombstone. `BM25Index`
bakes idf and length normalization into its score arrays when it is built, which ties each score
to the corpus of that one build; here a segment keeps only term frequencies and chunk lengths
(`Postings`), and `SegmentedBM25` computes N, avgdl and each query term's df over the live chunks
of every segment when it searches, so that scores from different segments can be compared and
merged, and equal those of one `BM25Index` built over the same live chunks.

The weights are computed with the very float32 operations of `BM25Index._score_matrix`, and summed
per query token in float32 as bm25s's `get_scores` sums them (a repeated query token counts once per
occurrence), so the scores are bit for bit those of a `BM25Index` over the live chunks.
"""

from __future__ import annotations

import array
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.errors import IndexCorruptError, IndexMismatchError
from rag.lexical.bm25 import Hits, _check, _id_array, _no_hits, _read_array, _read_json, check_parameters
from rag.lexical.tokenizer import Tokenizer

FORMAT_VERSION = 1
META_FILE = "postings.json"
VOCAB_FILE = "postings.vocab.json"
IDS_FILE = "postings.ids.npy"
LENGTHS_FILE = "postings.lengths.npy"
TF_FILE = "postings.tf.npy"
ROWS_FILE = "postings.rows.npy"
INDPTR_FILE = "postings.indptr.npy"
FILES = (META_FILE, VOCAB_FILE, IDS_FILE, LENGTHS_FILE, TF_FILE, ROWS_FILE, INDPTR_FILE)

_EMPTY_ROWS = np.zeros(0, np.int32)
_EMPTY_TF = np.zeros(0, np.float32)


class Postings:
    """One segment's chunks as term frequencies by term (CSC), with nothing corpus-wide baked in.

    Row i is chunk `ids[i]` with `lengths[i]` tokens; the postings of term t are
    `rows[indptr[t]:indptr[t + 1]]` (ascending) with counts `tf[indptr[t]:indptr[t + 1]]`.
    """

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, tf: np.ndarray, rows: np.ndarray,
                 indptr: np.ndarray, vocab: dict[str, int],
                 tokenizer_settings: Mapping[str, Any] | None = None) -> None:
        self.ids = ids
        self.lengths = lengths
        self.tf = tf
        self.rows = rows
        self.indptr = indptr
        self.vocab = vocab
        # The settings of the tokenizer that made the tokens: a reader with others must not mix them.
        self.tokenizer_settings = (dict(tokenizer_settings) if tokenizer_settings is not None
                                   else Tokenizer().settings)

    def __len__(self) -> int:
        return len(self.ids)

    def term_postings(self, term: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tf) of the chunks holding `term`, rows ascending; views, empty for an unknown term."""
        column = self.vocab.get(term)
        if column is None:
            return _EMPTY_ROWS, _EMPTY_TF
        start, end = int(self.indptr[column]), int(self.indptr[column + 1])
        return self.rows[start:end], self.tf[start:end]

    # -- building ------------------------------------------------------------------------

    @classmethod
    def build(cls, ids: np.ndarray, token_lists: Iterable[list[str]],
              tokenizer_settings: Mapping[str, Any] | None = None) -> "Postings":
        """Postings of `token_lists[i]` under chunk id `ids[i]`; one pass over `token_lists`.

        `tokenizer_settings` records which tokenizer made the tokens (default: `Tokenizer()`'s).
        Terms are counted as `BM25Index.build` counts them (a CSR of term ids per row turned into
        CSC, which sums repeats), with the vocabulary in first-seen order so equal input gives
        equal files.
        """
        import scipy.sparse as sp

        ids = np.asarray(ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("ids must be a one-dimensional array of chunk ids")
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ids must be unique")
        vocab: dict[str, int] = {}
        term_ids = array.array("i")
        lengths = array.array("i")
        for tokens in token_lists:
            lengths.append(len(tokens))
            term_ids.extend([vocab.setdefault(token, len(vocab)) for token in tokens])
        if len(lengths) != len(ids):
            raise ValueError(f"{len(ids)} ids but {len(lengths)} token lists")
        row_lengths = np.frombuffer(lengths, dtype=np.int32).copy() if lengths else np.zeros(0, np.int32)
        if not vocab:
            return cls(ids, row_lengths, _EMPTY_TF.copy(), _EMPTY_ROWS.copy(), np.zeros(1, np.int64), vocab,
                       tokenizer_settings)
        terms = np.frombuffer(term_ids, dtype=np.int32)
        row_starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(row_lengths, out=row_starts[1:])
        counts = sp.csr_matrix((np.ones(len(terms), np.float32), terms, row_starts),
                               shape=(len(ids), len(vocab))).tocsc()
        counts.sum_duplicates()
        # Copies: after summing, scipy's arrays are views into buffers sized for every token.
        return cls(ids, row_lengths, counts.data.astype(np.float32, copy=True),
                   counts.indices.astype(np.int32, copy=True), counts.indptr.astype(np.int64, copy=True),
                   vocab, tokenizer_settings)

    @classmethod
    def concat(cls, parts: Sequence["Postings"]) -> "Postings":
        """The postings of `parts` as one, rows in order: what `build` gives over all their chunks.

        A reader joins small segments this way, since each segment a query visits costs a dict
        lookup and array slices per query term, however few chunks it holds.
        """
        if not parts:
            raise ValueError("nothing to join")
        settings = parts[0].tokenizer_settings
        if any(part.tokenizer_settings != settings for part in parts):
            raise IndexMismatchError("BM25 segments tokenized with different settings cannot be joined")
        # The joint vocabulary, in first-seen order as `build` makes it; set and map operations,
        # not a Python loop per term (a reader joins tens of thousands of terms when it opens).
        vocab: dict[str, int] = {}
        joint_columns = []
        for part in parts:
            new = sorted(part.vocab.keys() - vocab.keys(), key=part.vocab.__getitem__)
            vocab.update(zip(new, range(len(vocab), len(vocab) + len(new))))
            joint = np.empty(len(part.vocab), np.int64)
            joint[np.fromiter(part.vocab.values(), np.int64, len(part.vocab))] = np.fromiter(
                map(vocab.__getitem__, part.vocab), np.int64, len(part.vocab))
            joint_columns.append(joint)
        # Each part's postings of a term go after those of the parts before it: a counting sort.
        counts = np.zeros(len(vocab), np.int64)
        for part, joint in zip(parts, joint_columns):
            counts[joint] += np.diff(part.indptr)
        indptr = np.zeros(len(vocab) + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        placed = indptr[:-1].copy()
        rows = np.empty(int(indptr[-1]), np.int32)
        tf = np.empty(int(indptr[-1]), np.float32)
        offset = 0
        for part, joint in zip(parts, joint_columns):
            lengths = np.diff(part.indptr)
            starts = placed[joint]
            placed[joint] += lengths
            at = np.arange(len(part.rows), dtype=np.int64) + np.repeat(starts - part.indptr[:-1], lengths)
            rows[at] = np.asarray(part.rows) + offset
            tf[at] = part.tf
            offset += len(part)
        return cls(np.concatenate([np.asarray(p.ids, dtype=np.int64) for p in parts]),
                   np.concatenate([np.asarray(p.lengths, dtype=np.int32) for p in parts]),
                   tf, rows, indptr, vocab, settings)

    # -- files ---------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write FILES into `directory` (the index store makes the write atomic and fsyncs it)."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, values in ((IDS_FILE, self.ids), (LENGTHS_FILE, self.lengths), (TF_FILE, self.tf),
                             (ROWS_FILE, self.rows), (INDPTR_FILE, self.indptr)):
            np.save(directory / name, np.ascontiguousarray(values), allow_pickle=False)
        terms = sorted(self.vocab, key=self.vocab.__getitem__)
        (directory / VOCAB_FILE).write_text(json.dumps(terms, ensure_ascii=False), encoding="utf-8")
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": self.tokenizer_settings,
            "chunks": len(self.ids),
            "terms": len(terms),
            "postings": len(self.tf),
            "tokens": int(np.sum(self.lengths, dtype=np.int64)),
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, tokenizer_settings: Mapping[str, Any] | None = None,
             mmap: bool = True) -> "Postings":
        """Open a saved segment, refusing damaged files and, when given, other tokenizer settings.

        With `mmap` the postings arrays are mapped rather than copied, so that processes serving
        the same index share them through the page cache. Every posting is checked once here:
        a bad array would otherwise give wrong hits silently.
        """
        meta = _read_json(directory / META_FILE, dict)
        if meta.get("format") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"{directory / META_FILE}: BM25 postings format {meta.get('format')!r}, this rag reads "
                f"format {FORMAT_VERSION}; rebuild the index"
            )
        if tokenizer_settings is not None and meta.get("tokenizer") != dict(tokenizer_settings):
            raise IndexMismatchError(
                f"{directory}: the BM25 postings were tokenized with {meta.get('tokenizer')}, the settings "
                f"give {dict(tokenizer_settings)}; use those settings or re-index the documents"
            )
        if not isinstance(meta.get("tokenizer"), dict):
            raise IndexCorruptError(f"{directory / META_FILE} records no tokenizer settings; "
                                    "run `rag check`, or rebuild the index")
        terms = _read_json(directory / VOCAB_FILE, list)
        mode = "r" if mmap else None
        ids = _read_array(directory / IDS_FILE, np.int64, None)
        lengths = _read_array(directory / LENGTHS_FILE, np.int32, None)
        # Plain arrays over the mapped files: a slice of an np.memmap costs a subclass instance,
        # several microseconds per term and segment at every query.
        tf = np.asarray(_read_array(directory / TF_FILE, np.float32, mode))
        rows = np.asarray(_read_array(directory / ROWS_FILE, np.int32, mode))
        indptr = np.asarray(_read_array(directory / INDPTR_FILE, np.int64, mode))
        vocab = {term: i for i, term in enumerate(terms)}
        problem = (_check(meta, terms, vocab, ids, tf, rows, indptr)
                   or _check_postings(meta, lengths, tf, rows, indptr))
        if problem:
            problem = problem.replace("a score is", "a term count is")
            raise IndexCorruptError(f"{directory}: the BM25 postings are damaged ({problem}); "
                                    "run `rag check`, or rebuild the index")
        return cls(ids, lengths, tf, rows, indptr, vocab, meta["tokenizer"])


def _check_postings(meta: dict[str, Any], lengths: np.ndarray, tf: np.ndarray, rows: np.ndarray,
                    indptr: np.ndarray) -> str | None:
    """What `bm25._check` does not see: chunk lengths, repeated postings, counts against lengths."""
    if len(lengths) != meta.get("chunks") or int(np.sum(lengths, dtype=np.int64)) != meta.get("tokens"):
        return "the chunk lengths differ from the ones recorded"
    if len(lengths) and lengths.min() < 0:
        return "a chunk length is negative"
    if len(rows) > 1:
        # Within a term the rows ascend strictly: a repeated posting would count a chunk twice in df.
        falls = np.flatnonzero(np.diff(rows) <= 0) + 1
        if len(falls) and not np.all(np.isin(falls, indptr)):
            return "a term lists a chunk twice or out of order"
    # Each chunk's term counts add up to its length: a damaged count or length would skew scores.
    totals = np.bincount(rows, weights=tf, minlength=len(lengths)) if len(rows) else np.zeros(len(lengths))
    if not np.array_equal(totals, lengths):
        return "the term counts disagree with the chunk lengths"
    return None


class SegmentedBM25:
    """BM25 search over several segments' postings, with N, avgdl and df over all live chunks.

    Built per index version (the segments and tombstones are fixed): setting up costs O(rows) per
    segment; a query costs the postings of its terms plus O(rows) per segment for the scores.
    """

    def __init__(self, segments: Sequence[Postings], dead: Sequence[np.ndarray | None], tokenizer: Tokenizer,
                 method: str = "lucene", k1: float = 1.5, b: float = 0.75) -> None:
        check_parameters(method, k1, b)
        if len(dead) != len(segments):
            raise ValueError(f"{len(segments)} segments but {len(dead)} tombstone lists")
        for segment in segments:
            if segment.tokenizer_settings != tokenizer.settings:
                raise IndexMismatchError(
                    f"a BM25 segment was tokenized with {segment.tokenizer_settings}, the settings give "
                    f"{tokenizer.settings}; use those settings or re-index the documents"
                )
        self.tokenizer = tokenizer
        self.method = method
        self.k1 = float(k1)
        self.b = float(b)
        self._segments = list(segments)
        self._id_order = [np.argsort(s.ids, kind="stable") for s in self._segments]
        self._sorted_ids = [np.asarray(s.ids)[order] for s, order in zip(self._segments, self._id_order)]
        # None where every row is live: most segments have no tombstones, and then need no masking.
        self._live: list[np.ndarray | None] = []
        for i, tombstones in enumerate(dead):
            live = None
            if tombstones is not None and len(tombstones):
                hit = self._positions(i, _id_array(tombstones))
                if len(hit):
                    live = np.ones(len(self._segments[i]), dtype=bool)
                    live[hit] = False
            self._live.append(live)
        live_ids = [np.asarray(s.ids) if live is None else np.asarray(s.ids)[live]
                    for s, live in zip(self._segments, self._live)]
        self._ids = np.sort(np.concatenate(live_ids)) if live_ids else np.zeros(0, np.int64)
        if len(self._ids) > 1 and np.any(self._ids[1:] == self._ids[:-1]):
            repeated = self._ids[1:][self._ids[1:] == self._ids[:-1]][0]
            raise ValueError(f"chunk id {repeated} is live in more than one segment; tombstone the old copy")
        total = sum(int(np.sum(s.lengths if live is None else s.lengths[live], dtype=np.int64))
                    for s, live in zip(self._segments, self._live))
        self._n = len(self._ids)
        # As `BM25Index._score_matrix`: the same float64 expression per row, stored as float32.
        self._avgdl = total / self._n if self._n else 0.0
        # The segments' rows as one row space (segment i's rows start at _offsets[i]): a query
        # scores one array, not one per segment (ten small segments cost 4x one big one).
        self._offsets = np.cumsum([0, *(len(s) for s in self._segments)])
        self._row_ids = np.concatenate([np.asarray(s.ids) for s in self._segments]) if self._segments \
            else np.zeros(0, np.int64)
        self._row_live = None if all(live is None for live in self._live) else np.concatenate(
            [np.ones(len(s), bool) if live is None else live for s, live in zip(self._segments, self._live)])
        lengths = np.concatenate([np.asarray(s.lengths) for s in self._segments]) if self._segments \
            else np.zeros(0, np.int32)
        self._length_norm = (self.k1 * (1 - self.b + self.b * lengths / self._avgdl)).astype(np.float32) \
            if self._avgdl > 0 else np.zeros(len(lengths), np.float32)

    @property
    def settings(self) -> dict[str, Any]:
        return {"method": self.method, "k1": self.k1, "b": self.b}

    @property
    def ids(self) -> np.ndarray:
        """Every live chunk id, ascending."""
        return self._ids

    @property
    def avgdl(self) -> float:
        """Mean length in tokens of the live chunks."""
        return self._avgdl

    def __len__(self) -> int:
        return self._n

    # -- searching -----------------------------------------------------------------------

    def search(self, query: str, k: int, allowed: Collection[int] | np.ndarray | None = None) -> Hits:
        """The k best chunks with a score above zero, best first, as (chunk ids, scores).

        `allowed` holds the chunk ids a metadata filter admits; the others are never returned.
        Ties go to the smaller chunk id.
        """
        return self.search_many([query], k, allowed)[0]

    def search_many(self, queries: Sequence[str], k: int,
                    allowed: Collection[int] | np.ndarray | None = None) -> list[Hits]:
        if k < 1:
            raise ValueError(f"k must be at least 1, not {k}")
        if self._n == 0:
            return [_no_hits() for _ in queries]
        mask = self._row_live
        if allowed is not None:
            wanted = _id_array(allowed)
            mask = np.zeros(len(self._row_ids), dtype=bool)
            for i in range(len(self._segments)):
                mask[self._offsets[i] + self._positions(i, wanted)] = True
            if self._row_live is not None:
                mask &= self._row_live
        return [self._top(self.tokenizer.tokenize(query), k, mask) for query in queries]

    def _top(self, tokens: list[str], k: int, mask: np.ndarray | None) -> Hits:
        # Each distinct query term's live postings over all segments (rows in the joint row
        # space), and so its df over the whole version.
        postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for term in dict.fromkeys(tokens):
            found = [(rows, tf, self._offsets[i]) for i, segment in enumerate(self._segments)
                     for rows, tf in (segment.term_postings(term),) if len(rows)]
            if not found:
                continue
            rows = found[0][0] + found[0][2] if len(found) == 1 else \
                np.concatenate([r.astype(np.int64) + offset for r, _, offset in found])
            tf = found[0][1] if len(found) == 1 else np.concatenate([t for _, t, _ in found])
            if self._row_live is not None:
                keep = self._row_live[rows]
                rows, tf = rows[keep], tf[keep]
            if len(rows):
                postings[term] = (rows, tf)
        # A term with no live posting is not in the vocabulary of a BM25Index over the live chunks.
        known = [token for token in tokens if token in postings]
        if not known:
            return _no_hits()
        idf = self._idf(np.array([len(rows) for rows, _ in postings.values()], dtype=np.float64)).astype(np.float32)
        weights = {term: (rows, self._weights(rows, tf, term_idf))
                   for (term, (rows, tf)), term_idf in zip(postings.items(), idf)}
        # Summed in float32 token by token, repeats included, as bm25s's get_scores sums them.
        scores = np.zeros(len(self._row_ids), dtype=np.float32)
        for token in known:
            rows, weight = weights[token]
            scores[rows] += weight  # a term's rows are distinct, so no np.add.at is needed
        # The rows the query's postings touch, when they are few; else one pass over the scores.
        touched = [rows for rows, _ in weights.values()]
        if sum(len(rows) for rows in touched) * 8 < len(scores):
            candidates = touched[0] if len(touched) == 1 else np.unique(np.concatenate(touched))
            candidates = candidates[scores[candidates] > 0]
        else:
            candidates = np.flatnonzero(scores > 0)
        if mask is not None:
            candidates = candidates[mask[candidates]]
        if not len(candidates):
            return _no_hits()
        return _best(self._row_ids[candidates], scores[candidates], k)

    def _idf(self, df: np.ndarray) -> np.ndarray:
        """The idf of `BM25Index._score_matrix`, with N and df over the live chunks."""
        n_docs = self._n
        if self.method == "lucene":
            return np.log1p((n_docs - df + 0.5) / (df + 0.5))
        if self.method == "robertson":
            return np.log(np.maximum(1.0, (n_docs - df + 0.5) / (df + 0.5)))
        return np.log(n_docs / df)

    def _weights(self, rows: np.ndarray, tf: np.ndarray, idf: np.float32) -> np.ndarray:
        """BM25 weight of each posting, with the float32 operations of `BM25Index._score_matrix`."""
        weight = tf.astype(np.float32, copy=True)  # never write into a mapped file
        denominator = self._length_norm[rows]
        denominator += weight
        if self.method == "atire":
            weight *= self.k1 + 1
        np.divide(weight, denominator, out=weight)
        weight *= idf
        return weight

    def _positions(self, segment: int, ids: np.ndarray) -> np.ndarray:
        """Rows in `segment` of those of `ids` it holds (binary search, not a scan per id)."""
        sorted_ids = self._sorted_ids[segment]
        if not len(sorted_ids) or not len(ids):
            return np.zeros(0, np.int64)
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return self._id_order[segment][at[sorted_ids[at] == ids]]


def _best(ids: np.ndarray, scores: np.ndarray, k: int) -> Hits:
    """The k highest scores, best first, ties to the smaller id, also at the k-th place."""
    if len(scores) > k:
        # Everything tied with the k-th score stays in, so the cut below is made by id.
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= kth
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].astype(np.int64, copy=False), scores[order]
