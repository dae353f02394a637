"""rag.lexical.postings and rag.lexical.segmented: BM25 over segments with tombstones scores as one
BM25Index over the live chunks."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from rag.errors import ConfigError, IndexCorruptError, IndexMismatchError
from rag.lexical import BM25Index, Tokenizer
from rag.lexical.postings import (
    FILES,
    IDS_FILE,
    INDPTR_FILE,
    LENGTHS_FILE,
    META_FILE,
    ROWS_FILE,
    TF_FILE,
    Postings,
)
from rag.lexical.segmented import SegmentedBM25

TOKENIZER = Tokenizer()
WORDS = ("pump valve gasket motor bearing seal pressure flow sensor alarm cooling heater filter "
         "inspection report operator manual shift safety glove press audit firmware update error "
         "restart cable voltage current fuse relay panel switch").split()
CODES = ["MR-2041", "ISO-9001", "v2.3", "MR-7"]
STOP = ["the", "of", "and", "to"]


def make_text(rng: random.Random) -> str:
    """A short text with skewed word frequencies (so df and tf vary), sometimes a code or nothing."""
    if rng.random() < 0.02:
        return rng.choice(["", "the of and", "   "])  # no tokens at all
    words = [WORDS[min(int(rng.expovariate(0.12)), len(WORDS) - 1)] for _ in range(rng.randint(1, 14))]
    words += rng.sample(STOP, rng.randint(0, 2))
    if rng.random() < 0.1:
        words.append(rng.choice(CODES))
    rng.shuffle(words)
    return " ".join(words)


def tokens(texts: list[str]) -> list[list[str]]:
    return [TOKENIZER.tokenize(t) for t in texts]


class Corpus:
    """Chunks written in four segments, some tombstoned later, one re-added under the same id."""

    def __init__(self, seed: int = 7) -> None:
        rng = random.Random(seed)
        all_ids = list(range(1000, 1400))
        rng.shuffle(all_ids)  # rows are not in id order: ties must still go to the smaller id
        sizes = [150, 120, 80, 50]
        self.segments: list[Postings] = []
        self.texts: list[dict[int, str]] = []
        start = 0
        for size in sizes:
            ids = all_ids[start:start + size]
            start += size
            texts = {i: make_text(rng) for i in ids}
            self.texts.append(texts)
        # An update: chunk 1003's old copy (wherever it is) is tombstoned, a new one goes in the last segment.
        updated = 1003
        self.dead: list[np.ndarray | None] = []
        for n, texts in enumerate(self.texts[:-1]):
            gone = rng.sample(sorted(texts), len(texts) // 7)
            if updated in texts:
                gone.append(updated)
            # Ids of other segments and unknown ids in a tombstone list are ignored.
            others = rng.sample(sorted(self.texts[n + 1]), 3) + [5, 99_999]
            self.dead.append(np.array(gone + others, dtype=np.int64))
        self.dead.append(None)
        if all(updated not in t for t in self.texts[:-1]):
            raise AssertionError("the test corpus should hold chunk 1003 in an early segment")
        self.texts[-1][updated] = "pump pump pressure alarm MR-2041 replaced"
        for texts in self.texts:
            ids = list(texts)
            self.segments.append(Postings.build(np.array(ids, dtype=np.int64), tokens([texts[i] for i in ids])))
        self.live: dict[int, str] = {}
        for n, texts in enumerate(self.texts):
            dead = set() if self.dead[n] is None else set(self.dead[n].tolist())
            self.live.update({i: t for i, t in texts.items() if i not in dead})
        self.live[updated] = self.texts[-1][updated]

    def reference(self, method: str, k1: float = 1.5, b: float = 0.75) -> BM25Index:
        """One BM25Index over the live chunks, ids ascending."""
        index = BM25Index(TOKENIZER, method, k1, b)
        ids = sorted(self.live)
        index.build(np.array(ids, dtype=np.int64), tokens([self.live[i] for i in ids]))
        return index

    def segmented(self, method: str, k1: float = 1.5, b: float = 0.75,
                  segments: list[Postings] | None = None) -> SegmentedBM25:
        return SegmentedBM25(segments or self.segments, self.dead, TOKENIZER, method, k1, b)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus()


def queries() -> list[str]:
    rng = random.Random(11)
    found = ["pump", "pump pump", "pump pump pump valve", "valve pump valve", "MR-2041", "mr 2041",
             "zyxwvut", "zyxwvut pump", "", "the of and", "cable fuse relay panel switch", "firmware v2.3",
             "Pumps and valves under pressure", "ISO-9001 audit report", "restart restart error"]
    while len(found) < 32:
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.3:
            words.append(words[0])  # a repeated token
        if rng.random() < 0.2:
            words.append("qwertyuiop")  # a term no chunk holds
        found.append(" ".join(words))
    return found


QUERIES = queries()


def assert_same_hits(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> None:
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    assert got[0].tolist() == want[0].tolist()
    assert np.allclose(got[1], want[1], rtol=1e-5, atol=0)


# -- the central property ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_segments_with_tombstones_score_as_one_index_over_the_live_chunks(corpus: Corpus, method: str) -> None:
    reference = corpus.reference(method, k1=1.2, b=0.7)
    segmented = corpus.segmented(method, k1=1.2, b=0.7)
    assert segmented.ids.tolist() == reference.ids.tolist() == sorted(corpus.live)
    assert len(segmented) == len(reference)
    rng = random.Random(3)
    # A filter that admits some live chunks, some dead ones and some unknown ids.
    admitted = rng.sample(sorted(corpus.live), 60) + corpus.dead[0][:10].tolist() + [1, 2, 123_456]
    everything = 10_000
    compared = 0
    for allowed in (None, admitted, np.array(admitted), set(admitted)):
        for query in QUERIES:
            want = reference.search(query, everything, allowed)
            got = segmented.search(query, everything, allowed)
            assert_same_hits(got, want)
            compared += len(want[0])
            if allowed is not None:
                assert set(got[0].tolist()) <= set(admitted) & set(corpus.live)
            # A smaller k gives the first k of the full ranking, ties cut by id at the k-th place
            # too, in both (the reference's rows are in id order, and its ties go to the earlier row).
            for k in (1, 5, 17):
                short = segmented.search(query, k, allowed)
                assert short[0].tolist() == want[0][:k].tolist()
                assert_same_hits(short, reference.search(query, k, allowed))
    assert compared > 1000  # the queries do match chunks


def test_search_many_matches_single_searches(corpus: Corpus) -> None:
    segmented = corpus.segmented("lucene")
    for allowed in (None, sorted(corpus.live)[::3]):
        for (ids, scores), query in zip(segmented.search_many(QUERIES, 8, allowed), QUERIES):
            one_ids, one_scores = segmented.search(query, 8, allowed)
            assert ids.tolist() == one_ids.tolist() and np.array_equal(scores, one_scores)


def test_repeated_query_tokens_count_once_per_occurrence(corpus: Corpus) -> None:
    # As bm25s's get_scores (which BM25Index uses): each occurrence of a token adds its weight.
    segmented = corpus.segmented("lucene")
    once = segmented.search("gasket", 5)
    twice = segmented.search("gasket gasket", 5)
    assert once[0].tolist() == twice[0].tolist()
    assert np.allclose(twice[1], 2 * once[1], rtol=1e-6)


def test_ties_go_to_the_smaller_chunk_id() -> None:
    # Equal chunks in two segments, rows in descending id order: every score ties.
    first = Postings.build(np.array([50, 40, 30]), tokens(["pump seal", "pump seal", "pump seal"]))
    second = Postings.build(np.array([20, 10, 60]), tokens(["pump seal", "pump seal", "pump seal"]))
    segmented = SegmentedBM25([first, second], [None, None], TOKENIZER)
    assert segmented.search("pump", 4)[0].tolist() == [10, 20, 30, 40]
    assert segmented.search("pump", 1, allowed=[60, 40])[0].tolist() == [40]


# -- statistics over live chunks ---------------------------------------------------------


def test_n_and_avgdl_exclude_dead_chunks_checked_by_hand() -> None:
    assert TOKENIZER.tokenize("pump gear") == ["pump", "gear"]
    assert TOKENIZER.tokenize("gear gear bolt") == ["gear", "gear", "bolt"]
    first = Postings.build(np.array([1, 2]), tokens(["pump gear", "pump pump pump pump pump pump"]))
    second = Postings.build(np.array([3]), tokens(["gear gear bolt"]))
    k1, b = 1.5, 0.75
    segmented = SegmentedBM25([first, second], [np.array([2]), None], TOKENIZER, "lucene", k1, b)
    assert len(segmented) == 2 and segmented.ids.tolist() == [1, 3]
    assert segmented.avgdl == 2.5  # (2 + 3) / 2: the dead six-token chunk is left out
    # "pump": df 1 (the dead chunk's postings do not count), N 2.
    idf = math.log1p((2 - 1 + 0.5) / (1 + 0.5))
    expected = idf * 1 / (1 + k1 * (1 - b + b * 2 / 2.5))
    ids, scores = segmented.search("pump", 5)
    assert ids.tolist() == [1] and scores[0] == pytest.approx(expected, rel=1e-6)
    # "gear": df 2 over two segments; chunk 3 holds it twice.
    idf = math.log1p((2 - 2 + 0.5) / (2 + 0.5))
    want = {1: idf * 1 / (1 + k1 * (1 - b + b * 2 / 2.5)), 3: idf * 2 / (2 + k1 * (1 - b + b * 3 / 2.5))}
    ids, scores = segmented.search("gear", 5)
    assert ids.tolist() == [3, 1]
    assert scores.tolist() == pytest.approx([want[3], want[1]], rel=1e-6)


def test_empty_segments_and_segments_with_only_dead_chunks() -> None:
    empty = Postings.build(np.zeros(0, np.int64), [])
    blank = Postings.build(np.array([7, 8]), tokens(["", "the of and"]))
    assert len(empty) == 0 and len(blank) == 2 and blank.vocab == {}
    gone = Postings.build(np.array([1, 2]), tokens(["pump valve", "pump"]))
    alive = Postings.build(np.array([3]), tokens(["valve seal"]))
    segmented = SegmentedBM25([empty, gone, blank, alive], [None, np.array([1, 2]), None, None], TOKENIZER)
    assert segmented.ids.tolist() == [3, 7, 8] and len(segmented) == 3
    assert segmented.avgdl == pytest.approx(2 / 3)
    assert len(segmented.search("pump", 5)[0]) == 0  # only in dead chunks
    assert segmented.search("valve pump", 5)[0].tolist() == [3]
    for segments, dead in (([], []), ([empty], [None]), ([gone], [np.array([2, 1])]), ([blank], [None])):
        nothing = SegmentedBM25(segments, dead, TOKENIZER)
        ids, scores = nothing.search("pump valve", 5)
        assert ids.dtype == np.int64 and scores.dtype == np.float32 and len(ids) == len(scores) == 0


def test_a_chunk_live_in_two_segments_is_refused() -> None:
    first = Postings.build(np.array([1, 2]), tokens(["pump", "valve"]))
    second = Postings.build(np.array([2]), tokens(["valve seal"]))
    with pytest.raises(ValueError, match="chunk id 2"):
        SegmentedBM25([first, second], [None, None], TOKENIZER)
    assert SegmentedBM25([first, second], [np.array([2]), None], TOKENIZER).ids.tolist() == [1, 2]


def test_settings_and_arguments_are_validated() -> None:
    segment = Postings.build(np.array([1]), tokens(["pump"]))
    for bad in ({"method": "bm25+"}, {"k1": 0}, {"b": 1.5}):
        with pytest.raises(ConfigError):
            SegmentedBM25([segment], [None], TOKENIZER, **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tombstone"):
        SegmentedBM25([segment], [], TOKENIZER)
    segmented = SegmentedBM25([segment], [None], TOKENIZER, "atire", 1.2, 0.5)
    assert segmented.settings == {"method": "atire", "k1": 1.2, "b": 0.5}
    with pytest.raises(ValueError):
        segmented.search("pump", 0)
    with pytest.raises(ValueError, match="unique"):
        Postings.build(np.array([1, 1]), [["a"], ["b"]])
    with pytest.raises(ValueError, match="token lists"):
        Postings.build(np.array([1, 2]), [["a"]])
    with pytest.raises(IndexMismatchError, match="re-index"):
        SegmentedBM25([segment], [None], Tokenizer(chinese="bigrams"))


def test_postings_hold_raw_term_counts() -> None:
    segment = Postings.build(np.array([9, 4, 6]), [["b", "a", "b"], [], ["a", "c", "a", "a"]])
    assert segment.vocab == {"b": 0, "a": 1, "c": 2}  # first-seen order
    assert segment.lengths.tolist() == [3, 0, 4] and segment.lengths.dtype == np.int32
    rows, tf = segment.term_postings("a")
    assert rows.tolist() == [0, 2] and tf.tolist() == [1.0, 3.0]
    assert rows.dtype == np.int32 and tf.dtype == np.float32
    rows, tf = segment.term_postings("zzz")
    assert len(rows) == len(tf) == 0
    assert segment.indptr.tolist() == [0, 1, 3, 4] and segment.indptr.dtype == np.int64


def test_joined_postings_equal_postings_built_over_all_their_chunks(corpus: Corpus, tmp_path: Path) -> None:
    # Loaded from files (mapped arrays), as a reader joins them, and with an empty segment among them.
    parts = []
    for n, segment in enumerate([corpus.segments[0], Postings.build(np.zeros(0, np.int64), []), *corpus.segments[1:]]):
        segment.save(tmp_path / str(n))
        parts.append(Postings.load(tmp_path / str(n), TOKENIZER.settings))
    # The last segment holds a new copy of chunk 1003, which `build` would refuse as a repeated id.
    first = Postings.concat(parts[:-1])
    texts = [t for part in corpus.texts[:-1] for t in part.items()]
    built = Postings.build(np.array([i for i, _ in texts], dtype=np.int64), tokens([t for _, t in texts]))
    assert first.vocab == built.vocab
    for name in ("ids", "lengths", "tf", "rows", "indptr"):
        got, want = getattr(first, name), getattr(built, name)
        assert got.dtype == want.dtype and got.tolist() == want.tolist(), name
    # Joined, the first segments' tombstones apply to all their rows: each keeps only its own ids.
    dead = np.concatenate([np.intersect1d(d, list(t)) for d, t in zip(corpus.dead[:-1], corpus.texts[:-1])])
    for method in ("lucene", "robertson"):
        joined = SegmentedBM25([first, parts[-1]], [dead, None], TOKENIZER, method)
        for query in QUERIES:
            got, want = joined.search(query, 20), corpus.segmented(method).search(query, 20)
            assert got[0].tolist() == want[0].tolist() and np.array_equal(got[1], want[1])
    with pytest.raises(IndexMismatchError, match="different settings"):
        Postings.concat([parts[0], Postings.build(np.array([1]), [["a"]], Tokenizer(chinese="bigrams").settings)])


# -- files -------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip_gives_identical_results(corpus: Corpus, tmp_path: Path, mmap: bool) -> None:
    loaded = []
    for n, segment in enumerate(corpus.segments):
        segment.save(tmp_path / str(n))
        assert sorted(p.name for p in (tmp_path / str(n)).iterdir()) == sorted(FILES)
        loaded.append(Postings.load(tmp_path / str(n), TOKENIZER.settings, mmap=mmap))
    if mmap:
        # Plain arrays over the mapped files, shared through the page cache.
        assert isinstance(loaded[0].tf.base, np.memmap) and isinstance(loaded[0].rows.base, np.memmap)
    for method in ("lucene", "atire"):
        before, after = corpus.segmented(method), corpus.segmented(method, segments=loaded)
        assert after.ids.tolist() == before.ids.tolist()
        for query in QUERIES:
            for allowed in (None, sorted(corpus.live)[::4]):
                got, want = after.search(query, 10, allowed), before.search(query, 10, allowed)
                assert got[0].tolist() == want[0].tolist() and np.array_equal(got[1], want[1])


def test_saved_files_hold_no_pickle_and_are_reproducible(tmp_path: Path) -> None:
    texts = [make_text(random.Random(i)) for i in range(40)]
    Postings.build(np.arange(40), tokens(texts)).save(tmp_path / "a")
    Postings.build(np.arange(40), tokens(texts)).save(tmp_path / "b")
    for path in (tmp_path / "a").iterdir():
        if path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype != object
        else:
            json.loads(path.read_text(encoding="utf-8"))
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()


def test_empty_segments_save_and_load(tmp_path: Path) -> None:
    for n, texts in enumerate(([], ["", "the of"])):
        Postings.build(np.arange(len(texts)), tokens(texts)).save(tmp_path / str(n))
        loaded = Postings.load(tmp_path / str(n))
        assert len(loaded) == len(texts)
        assert len(SegmentedBM25([loaded], [None], TOKENIZER).search("pump", 5)[0]) == 0


@pytest.fixture
def saved(corpus: Corpus, tmp_path: Path) -> Path:
    folder = tmp_path / "segment-0"
    corpus.segments[0].save(folder)
    return folder


@pytest.mark.parametrize("name", FILES)
def test_load_refuses_a_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(IndexCorruptError, match=f"{name} is missing"):
        Postings.load(saved)


@pytest.mark.parametrize("name", FILES)
def test_load_refuses_a_truncated_file(saved: Path, name: str) -> None:
    path = saved / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    with pytest.raises(IndexCorruptError, match="rebuild the index") as caught:
        Postings.load(saved)
    assert str(saved) in str(caught.value)


def test_load_refuses_a_pickled_array(saved: Path) -> None:
    np.save(saved / TF_FILE, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IndexCorruptError, match=TF_FILE):
        Postings.load(saved)


def damage(folder: Path, name: str, change: object) -> None:
    values = np.load(folder / name)
    change(values)  # type: ignore[operator]
    np.save(folder / name, values)


def _set(index: int, value: float) -> object:
    def change(values: np.ndarray) -> None:
        values[index] = value
    return change


@pytest.mark.parametrize("name, change, message", [
    (ROWS_FILE, _set(0, 10_000), "past the last chunk"),
    (ROWS_FILE, _set(0, -1), "past the last chunk"),
    (ROWS_FILE, lambda v: v.__setitem__(1, v[0]), "twice or out of order"),
    (TF_FILE, _set(0, -1.0), "negative"),
    (TF_FILE, _set(0, np.nan), "negative or not a number"),
    (TF_FILE, _set(0, 7.0), "disagree with the chunk lengths"),
    (LENGTHS_FILE, lambda v: v.__setitem__(slice(0, 2), [v[0] + 1, v[1] - 1]), "disagree with the chunk lengths"),
    (INDPTR_FILE, lambda v: v.__setitem__(1, v[2] + 1), "out of order"),
    (IDS_FILE, lambda v: v.__setitem__(1, v[0]), "appears twice"),
])
def test_load_refuses_arrays_that_disagree(saved: Path, name: str, change: object, message: str) -> None:
    segment = Postings.load(saved)
    assert segment.indptr[1] >= 2  # so that rows[1] = rows[0] repeats a posting within the first term
    assert segment.lengths[1] > 0  # so that moving a token from chunk 1 to chunk 0 stays positive
    damage(saved, name, change)
    with pytest.raises(IndexCorruptError, match=message) as caught:
        Postings.load(saved)
    assert str(saved) in str(caught.value) and "rebuild the index" in str(caught.value)


@pytest.mark.parametrize("key, delta", [("chunks", 1), ("terms", -1), ("postings", 1), ("tokens", 1)])
def test_load_refuses_wrong_recorded_counts(saved: Path, key: str, delta: int) -> None:
    meta = json.loads((saved / META_FILE).read_text(encoding="utf-8"))
    meta[key] += delta
    (saved / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="recorded") as caught:
        Postings.load(saved)
    assert str(saved) in str(caught.value)


def test_load_refuses_other_tokenizer_settings_and_formats(saved: Path) -> None:
    with pytest.raises(IndexMismatchError, match="re-index"):
        Postings.load(saved, Tokenizer(chinese="bigrams").settings)
    assert len(Postings.load(saved, TOKENIZER.settings)) == 150
    meta = json.loads((saved / META_FILE).read_text(encoding="utf-8"))
    meta["format"] = 99
    (saved / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match="format 99"):
        Postings.load(saved)
