"""rag.lexical: real tokenizers (PyStemmer, jieba) and real bm25s scoring on small texts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import bm25s
import numpy as np
import pytest

from rag.errors import ConfigError, IndexCorruptError, IndexMismatchError
from rag.lexical import BM25Index, Tokenizer, deserialize_tokens, serialize_tokens
from rag.lexical import tokenizer as tokenizer_module
from rag.lexical.bm25 import DATA_FILE, FILES, INDICES_FILE, META_FILE, VOCAB_FILE

ENGLISH = [
    "The pump runs at 3000 rpm and is serviced every month.",
    "Maintenance record MR-2041 covers the cooling valve replacement.",
    "Firmware v2.3 fixes the overheating reported under ISO-9001 audits.",
    "Cats sleep most of the day; a cat that is running is rare.",
    "Quarterly revenue grew by twelve percent in the northern region.",
    "The safety manual says operators must wear gloves near the press.",
]
CHINESE = [
    "大熊猫是中国特有的熊科动物，主要栖息在四川的山区竹林中，以竹子为主要食物。",
    "长城是古代中国为抵御北方游牧民族而修建的军事工程，总长度超过两万千米。",
    "故宫位于北京中轴线的中心，是明清两代的皇家宫殿，现为故宫博物院。",
    "2023年第三季度，公司在华东地区的销售额增长了百分之十五。",
]
MIXED = "我们用Python3.11写的RAG系统支持MR-2041工单查询。"


def build(texts: list[str], ids: list[int] | None = None, **kwargs: object) -> BM25Index:
    index = BM25Index(**kwargs)  # type: ignore[arg-type]
    index.build(np.array(ids if ids is not None else range(100, 100 + len(texts)), dtype=np.int64),
                [index.tokenizer.tokenize(t) for t in texts])
    return index


@pytest.fixture(scope="module")
def corpus_index() -> BM25Index:
    return build(ENGLISH + CHINESE + [MIXED])


# -- tokenizer ---------------------------------------------------------------------------


def test_english_is_stemmed_and_stop_words_dropped() -> None:
    tokens = Tokenizer().tokenize("The runners were running to the runs")
    assert "the" not in tokens and "to" not in tokens
    assert tokens.count("run") == 2 and "runner" in tokens
    assert Tokenizer(stem=False).tokenize("running runs") == ["running", "runs"]
    assert "the" in Tokenizer(stopwords=None).tokenize("the pump")


def test_codes_keep_their_whole_form_and_their_parts() -> None:
    tok = Tokenizer()
    assert tok.tokenize("MR-2041") == ["mr-2041", "mr", "2041"]
    assert {"v2.3", "v2", "v", "2", "3"} <= set(tok.tokenize("v2.3"))
    assert {"iso-9001", "iso", "9001"} <= set(tok.tokenize("ISO-9001"))
    assert tok.tokenize("MR2041") == ["mr2041", "mr", "2041"]
    # A hyphenated word with no digit is matched through its parts alone.
    assert tok.tokenize("e-mail") == ["e", "mail"]
    # Full-width forms are folded to the ASCII ones (NFKC).
    assert tok.tokenize("ＭＲ－２０４１") == tok.tokenize("MR-2041")


def test_chinese_uses_jieba_search_mode_without_punctuation() -> None:
    tokens = Tokenizer().tokenize("中华人民共和国成立了。 “北京”，欢迎！")
    assert {"中华", "人民", "共和国", "中华人民共和国", "北京", "欢迎"} <= set(tokens)
    assert all(t.strip() and t not in "。，“”！ " for t in tokens)


def test_mixed_text_splits_into_chinese_and_latin_runs() -> None:
    tokens = Tokenizer().tokenize(MIXED)
    assert {"我们", "python3.11", "python", "rag", "系统", "mr-2041", "mr", "2041", "查询"} <= set(tokens)


def test_bigram_mode_needs_no_dictionary() -> None:
    assert Tokenizer(chinese="bigrams").tokenize("故宫博物院") == [
        "故", "宫", "博", "物", "院", "故宫", "宫博", "博物", "物院"]


def test_tokenizer_is_deterministic_and_records_its_settings() -> None:
    text = ENGLISH[1] + CHINESE[0] + MIXED
    assert Tokenizer().tokenize(text) == Tokenizer().tokenize(text)
    assert Tokenizer().settings == Tokenizer().settings
    assert Tokenizer().settings != Tokenizer(stem=False).settings


def test_tokenizer_rejects_unknown_settings() -> None:
    with pytest.raises(ConfigError, match="stopwords"):
        Tokenizer(stopwords="fr")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="chinese"):
        Tokenizer(chinese="chars")  # type: ignore[arg-type]


def test_tokens_survive_serialization_even_from_messy_text() -> None:
    messy = "tab\there\u00a0nbsp\u3000ideographic\u200bzero-width\nnew line 中文\t检索 A_B c/d"
    for tokenizer in (Tokenizer(), Tokenizer(chinese="bigrams"), Tokenizer(stem=False, stopwords=None)):
        tokens = tokenizer.tokenize(messy)
        assert tokens and deserialize_tokens(serialize_tokens(tokens)) == tokens
    assert deserialize_tokens(serialize_tokens([])) == []
    for bad in (["a b"], [""], ["a\tb"], ["x\u3000y"]):
        with pytest.raises(ValueError):
            serialize_tokens(bad)


def test_jieba_cache_goes_to_a_private_folder_when_home_is_unusable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails, even for root
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    folder = tokenizer_module._jieba_cache_dir()
    assert folder == tmp_path / f"rag-jieba-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)  # writable by others: jieba would load a cache anyone could plant
    assert tokenizer_module._jieba_cache_dir() is None


# -- BM25 index --------------------------------------------------------------------------


def test_stemming_finds_other_word_forms(corpus_index: BM25Index) -> None:
    ids, scores = corpus_index.search("running pumps", 3)
    assert set(ids[:2]) == {100, 103}
    assert np.all(scores > 0) and np.all(np.diff(scores) <= 0)


def test_codes_match_exactly_first(corpus_index: BM25Index) -> None:
    assert corpus_index.search("MR-2041", 5)[0].tolist() == [101, 110]
    assert corpus_index.search("mr2041", 1)[0].tolist() == [101]
    assert corpus_index.search("firmware V2.3", 1)[0].tolist() == [102]


def test_chinese_question_finds_its_passage(corpus_index: BM25Index) -> None:
    assert corpus_index.search("大熊猫主要吃什么？", 1)[0].tolist() == [106]
    assert corpus_index.search("明清两代的皇宫在哪里", 1)[0].tolist() == [108]
    assert corpus_index.search("华东地区销售额增长了多少", 1)[0].tolist() == [109]


def test_queries_without_known_tokens_return_nothing(corpus_index: BM25Index) -> None:
    for query in ("", "   ", "the and of", "zyxwvut", "？！"):
        ids, scores = corpus_index.search(query, 5)
        assert ids.dtype == np.int64 and len(ids) == 0 and len(scores) == 0


def test_search_many_matches_single_searches(corpus_index: BM25Index) -> None:
    queries = ["running", "zyxwvut", "长城有多长", "MR-2041 valve"]
    for (ids, scores), query in zip(corpus_index.search_many(queries, 3), queries):
        one_ids, one_scores = corpus_index.search(query, 3)
        assert ids.tolist() == one_ids.tolist() and np.array_equal(scores, one_scores)


def test_k_limits_and_validates(corpus_index: BM25Index) -> None:
    assert len(corpus_index.search("the pump", 1000)[0]) == 1
    with pytest.raises(ValueError):
        corpus_index.search("pump", 0)


def test_ties_go_to_the_earlier_chunk_also_at_the_kth_place() -> None:
    # Every seventh chunk says "pump" twice, the others once; ids fall as rows rise, so the rows
    # decide among equal scores, also for the last places of the k.
    texts = ["pump pump seal" if row % 7 == 0 else "pump seal" for row in range(20)]
    ids = list(range(900, 880, -1))
    index = build(texts, ids)
    assert index.search("pump", 4)[0].tolist() == [900, 893, 886, 899]
    assert index.search("pump", 5)[0].tolist() == [900, 893, 886, 899, 898]
    assert index.search("pump", 2, allowed=[881, 890, 895])[0].tolist() == [895, 890]


def test_filter_is_applied_inside_scoring() -> None:
    # 500 chunks all matching "pump"; the 5 admitted ones are the weakest matches, so filtering
    # the top k afterwards would return none of them.
    texts = [("pump " * (1 + i % 5)) + f"unit {i} " + "filler text " * 3 for i in range(500)]
    ids = list(range(7_000, 7_500))
    index = build(texts, ids)
    everything, _ = index.search("pump", 500)
    allowed = everything[-5:]
    hit_ids, scores = index.search("pump", 10, allowed=allowed)
    assert sorted(hit_ids.tolist()) == sorted(allowed.tolist())
    assert np.all(scores > 0)
    for kind in (set, list, np.array):
        hit_ids, _ = index.search("pump", 3, allowed=kind(allowed.tolist()))  # type: ignore[operator]
        assert len(hit_ids) == 3 and set(hit_ids.tolist()) <= set(allowed.tolist())
    # Ids that are not indexed are ignored; an empty filter admits nothing.
    assert index.search("pump", 10, allowed=[1, 2, int(allowed[0])])[0].tolist() == [allowed[0]]
    assert len(index.search("pump", 10, allowed=[])[0]) == 0
    # The filter never lets through a chunk outside it, even when few admitted ones match.
    assert len(index.search("unit 7", 10, allowed=allowed)[0]) <= 5
    assert set(index.search("unit 7", 10, allowed=allowed)[0].tolist()) <= set(allowed.tolist())


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_scores_equal_bm25s_own_index(method: str) -> None:
    texts = ENGLISH + CHINESE + [MIXED] + ["pump pump pump valve", "valve"]
    ours = build(texts, method=method, k1=1.2, b=0.6)
    reference = bm25s.BM25(method=method, k1=1.2, b=0.6)
    reference.index([ours.tokenizer.tokenize(t) for t in texts], show_progress=False)
    for query in ("running pumps valve", "MR-2041", "大熊猫 长城", "the pump"):
        expected = reference.get_scores(ours.tokenizer.tokenize(query))
        ids, scores = ours.search(query, len(texts))
        assert np.allclose(scores, expected[ids - 100], rtol=1e-5)
        assert set((ids - 100).tolist()) == set(np.flatnonzero(expected > 0).tolist())


def test_build_validates_its_input() -> None:
    index = BM25Index()
    with pytest.raises(ValueError, match="unique"):
        index.build(np.array([1, 1]), [["a"], ["b"]])
    with pytest.raises(ValueError, match="token lists"):
        index.build(np.array([1, 2]), [["a"]])
    for bad in ({"method": "bm25+"}, {"k1": 0}, {"b": 1.5}):
        with pytest.raises(ConfigError):
            BM25Index(**bad)  # type: ignore[arg-type]


def test_empty_index_searches_saves_and_loads(tmp_path: Path) -> None:
    for texts in ([], ["", "the of and"]):
        index = build(texts)
        assert len(index) == len(texts) and len(index.search("pump", 5)[0]) == 0
        index.save(tmp_path / str(len(texts)))
        loaded = BM25Index.load(tmp_path / str(len(texts)))
        assert len(loaded) == len(texts) and len(loaded.search("pump", 5)[0]) == 0


# -- files -------------------------------------------------------------------------------


QUERIES = ["running pumps", "MR-2041", "大熊猫吃什么", "Python RAG 系统", "zyxwvut", "valve gloves"]


@pytest.mark.parametrize("mmap", [True, False])
def test_save_load_round_trip_gives_identical_results(corpus_index: BM25Index, tmp_path: Path, mmap: bool) -> None:
    corpus_index.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    loaded = BM25Index.load(tmp_path, mmap=mmap)
    assert loaded.ids.tolist() == corpus_index.ids.tolist()
    for query in QUERIES:
        for allowed in (None, [101, 106, 110]):
            got, want = loaded.search(query, 4, allowed), corpus_index.search(query, 4, allowed)
            assert got[0].tolist() == want[0].tolist() and np.array_equal(got[1], want[1])


def test_saved_files_hold_no_pickle_and_are_reproducible(tmp_path: Path) -> None:
    build(ENGLISH + CHINESE).save(tmp_path / "a")
    build(ENGLISH + CHINESE).save(tmp_path / "b")
    for path in (tmp_path / "a").iterdir():
        if path.suffix == ".npy":
            assert np.load(path, allow_pickle=False).dtype != object
        else:
            json.loads(path.read_text(encoding="utf-8"))
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes()


@pytest.fixture
def saved(corpus_index: BM25Index, tmp_path: Path) -> Path:
    corpus_index.save(tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", FILES)
def test_load_refuses_a_missing_file(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(IndexCorruptError, match=f"{name} is missing"):
        BM25Index.load(saved)


@pytest.mark.parametrize("name", FILES)
def test_load_refuses_a_truncated_file(saved: Path, name: str) -> None:
    path = saved / name
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 2)])
    with pytest.raises(IndexCorruptError, match="rebuild the index"):
        BM25Index.load(saved)


def test_load_refuses_a_pickled_array(saved: Path) -> None:
    np.save(saved / DATA_FILE, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(IndexCorruptError, match=DATA_FILE):
        BM25Index.load(saved)


def test_load_refuses_arrays_that_disagree(saved: Path) -> None:
    indices = np.load(saved / INDICES_FILE)
    indices[0] = 10_000
    np.save(saved / INDICES_FILE, indices)
    with pytest.raises(IndexCorruptError, match="past the last chunk"):
        BM25Index.load(saved)


def test_load_refuses_a_repeated_vocabulary_entry(saved: Path) -> None:
    terms = json.loads((saved / VOCAB_FILE).read_text(encoding="utf-8"))
    terms[1] = terms[0]
    (saved / VOCAB_FILE).write_text(json.dumps(terms), encoding="utf-8")
    with pytest.raises(IndexCorruptError, match="vocabulary"):
        BM25Index.load(saved)


def test_load_refuses_other_settings(saved: Path) -> None:
    with pytest.raises(IndexMismatchError, match="re-index"):
        BM25Index.load(saved, Tokenizer(chinese="bigrams"))
    with pytest.raises(IndexMismatchError, match="rebuild the BM25 index"):
        BM25Index.load(saved, k1=1.2)
    meta = json.loads((saved / META_FILE).read_text(encoding="utf-8"))
    meta["format"] = 99
    (saved / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(IndexMismatchError, match="format 99"):
        BM25Index.load(saved)
