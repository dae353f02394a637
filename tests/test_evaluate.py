import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from rag.citations import Answer, Citation
from rag.conversation import Turn
from rag.errors import EvalDataError, RagError
from rag.evaluate import (EvalDocument, EvalQuestion, cites_source, contains_reference, exact_match, f1_score,
                          is_chinese, mrr_at_k, ndcg_at_k, percentile, read_beir, read_qa_jsonl, read_squad,
                          recall_at_k, retrieval_report, sample)
from rag.evaluate.run import answer_scores

REPO = Path(__file__).resolve().parents[1]

# -- Retrieval metrics, by hand ---------------------------------------------------------------

# q1: graded judgements; "b" is judged not relevant (0), "d" (rel 3) is never retrieved.
# q2: the only relevant document comes third.
# q3: judged but missing from the run: scores 0 everywhere.
# q4: no relevant document at all: left out of every mean.
RUN = {"q1": ["a", "b", "c"], "q2": ["x", "y", "z"], "q4": ["n"]}
QRELS = {"q1": {"a": 1, "b": 0, "c": 2, "d": 3}, "q2": {"z": 1}, "q3": {"m": 1}, "q4": {"n": 0}}

# q1 DCG@3 = 1/log2(2) + 0/log2(3) + 2/log2(4) = 1 + 0 + 1 = 2
# q1 IDCG@3 = 3/log2(2) + 2/log2(3) + 1/log2(4) = 3.5 + 2/log2(3)   (ideal order d, c, a)
Q1_NDCG_3 = 2 / (3.5 + 2 / math.log2(3))
# q2 DCG@3 = 1/log2(4) = 0.5; IDCG = 1/log2(2) = 1
Q2_NDCG_3 = 0.5


def test_ndcg_of_one_graded_ranking():
    only_q1 = {"q1": QRELS["q1"]}
    assert ndcg_at_k(RUN, only_q1, 3) == pytest.approx(Q1_NDCG_3, abs=1e-12)
    # @1: DCG = 1 (a), IDCG = 3 (d)
    assert ndcg_at_k(RUN, only_q1, 1) == pytest.approx(1 / 3, abs=1e-12)
    # k beyond the ranking: nothing more is gained, and the ideal has only 3 relevant documents
    assert ndcg_at_k(RUN, only_q1, 10) == pytest.approx(Q1_NDCG_3, abs=1e-12)


def test_ndcg_is_one_for_the_ideal_order_and_zero_without_relevant_hits():
    assert ndcg_at_k({"q": ["d", "c", "a"]}, {"q": QRELS["q1"]}, 3) == pytest.approx(1.0)
    assert ndcg_at_k({"q": ["b", "e"]}, {"q": QRELS["q1"]}, 10) == 0.0


def test_means_skip_unjudgeable_queries_and_count_missing_ones_as_zero():
    # mean over q1, q2, q3 (q4 has nothing relevant): (Q1 + Q2 + 0) / 3
    assert ndcg_at_k(RUN, QRELS, 3) == pytest.approx((Q1_NDCG_3 + Q2_NDCG_3) / 3, abs=1e-12)
    # recall@1: q1 1/3 (a of a, c, d), q2 0, q3 0 -> 1/9
    assert recall_at_k(RUN, QRELS, 1) == pytest.approx(1 / 9)
    # recall@3: q1 2/3, q2 1, q3 0 -> 5/9; k = 100 beyond every ranking: the same
    assert recall_at_k(RUN, QRELS, 3) == pytest.approx(5 / 9)
    assert recall_at_k(RUN, QRELS, 100) == pytest.approx(5 / 9)
    # MRR@10: q1 1/1, q2 1/3, q3 0 -> 4/9; MRR@2: q2's z (rank 3) is cut off -> 1/3
    assert mrr_at_k(RUN, QRELS, 10) == pytest.approx(4 / 9)
    assert mrr_at_k(RUN, QRELS, 2) == pytest.approx(1 / 3)


def test_retrieval_report():
    report = retrieval_report(RUN, QRELS, ks=(1, 3))
    assert report == {
        "ndcg@10": pytest.approx((Q1_NDCG_3 + Q2_NDCG_3) / 3),
        "recall@1": pytest.approx(1 / 9),
        "recall@3": pytest.approx(5 / 9),
        "mrr@10": pytest.approx(4 / 9),
        "queries": 3,
    }
    assert list(retrieval_report(RUN, QRELS)) == ["ndcg@10", "recall@1", "recall@5", "recall@10", "recall@100",
                                                  "mrr@10", "queries"]


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, mrr_at_k])
def test_retrieval_metrics_refuse_bad_input(metric):
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric(RUN, QRELS, 0)
    with pytest.raises(ValueError, match="twice"):
        metric({"q1": ["a", "c", "a"]}, QRELS, 10)
    with pytest.raises(ValueError, match="no query"):
        metric(RUN, {"q4": {"n": 0}}, 10)


def test_retrieval_metrics_match_trec_eval_on_random_runs():
    rng = random.Random(1234)
    pool = [f"d{i}" for i in range(40)]
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for q in range(50):
        qid = f"q{q}"
        judged = rng.sample(pool, rng.randint(1, 10))
        qrels[qid] = {doc: rng.choice([0, 1, 1, 2, 3]) for doc in judged}
        qrels[qid][judged[0]] = rng.randint(1, 3)  # at least one relevant, as trec_eval needs to average it
        run[qid] = rng.sample(pool, rng.randint(1, 25))  # includes unjudged documents, sometimes fewer than 10
    top10 = {qid: ranking[:10] for qid, ranking in run.items()}
    # Distinct, descending scores: trec_eval sorts by score, so ties would reorder the ranking.
    scored = {qid: {doc: float(len(ranking) - rank) for rank, doc in enumerate(ranking)}
              for qid, ranking in top10.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_5", "recip_rank"})
    per_query = evaluator.evaluate(scored)
    assert len(per_query) == 50

    def mean(measure: str) -> float:
        return math.fsum(v[measure] for v in per_query.values()) / len(per_query)

    assert ndcg_at_k(run, qrels, 10) == pytest.approx(mean("ndcg_cut_10"), abs=1e-9)
    assert recall_at_k(run, qrels, 5) == pytest.approx(mean("recall_5"), abs=1e-9)
    assert mrr_at_k(run, qrels, 10) == pytest.approx(mean("recip_rank"), abs=1e-9)
    # Guard against a vacuous comparison.
    assert 0 < mean("ndcg_cut_10") < 1 and 0 < mean("recall_5") < 1 and 0 < mean("recip_rank") < 1


# -- Answer metrics -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "prediction, golds, em, f1",
    [
        ("Denver Broncos", ["Denver Broncos"], 1.0, 1.0),
        ("The Denver Broncos!", ["denver broncos"], 1.0, 1.0),  # case, article, punctuation
        # pred [broncos], gold [denver, broncos]: P = 1/1, R = 1/2, F1 = 2 * 1 * 1/2 / (3/2) = 2/3
        ("the Broncos", ["Denver Broncos"], 0.0, 2 / 3),
        # the best gold counts: 0 against "Carolina Panthers", 2/3 against "Denver Broncos"
        ("Broncos", ["Carolina Panthers", "Denver Broncos"], 0.0, 2 / 3),
        ("Broncos", ["Denver Broncos", "Denver Broncos"], 0.0, 2 / 3),  # duplicate golds change nothing
        # pred [cat, cat] after "the" goes, gold [cat]: common 1, P = 1/2, R = 1, F1 = 2/3
        ("the cat, the cat", ["cat"], 0.0, 2 / 3),
        ("1,000 people", ["1000 people"], 1.0, 1.0),  # punctuation inside numbers is dropped too
        ("an apple a day", ["apple day"], 1.0, 1.0),
        ("", ["Denver Broncos"], 0.0, 0.0),
        ("Santa Clara", ["Denver Broncos"], 0.0, 0.0),
    ],
)
def test_squad_exact_match_and_f1(prediction, golds, em, f1):
    assert exact_match(prediction, golds) == em
    assert f1_score(prediction, golds) == pytest.approx(f1, abs=1e-12)


def test_chinese_is_scored_by_characters():
    # pred 北京天安门 (5 characters), gold 北京 (2): common 2, P = 2/5, R = 1, F1 = 0.8 / 1.4 = 4/7
    assert f1_score("北京天安门", ["北京"], chinese=True) == pytest.approx(4 / 7, abs=1e-12)
    assert f1_score("北京天安门", ["北京"]) == 0.0  # as one English "word" nothing overlaps: why the switch exists
    assert exact_match("“北京。”", ["北 京"], chinese=True) == 1.0  # CJK punctuation and spaces go
    assert exact_match("《战国无双3》", ["战国无双3"], chinese=True) == 1.0
    assert exact_match("1807－1809年", ["1807-1809年"], chinese=True) == 1.0  # full-width and ASCII dash
    assert exact_match("iPhone手机", ["IPHONE 手机"], chinese=True) == 1.0
    # pred 光荣 (2), gold 光荣和ωforce (9 characters once "-" goes): P = 1, R = 2/9, F1 = (4/9) / (11/9) = 4/11
    assert f1_score("光荣", ["光荣和ω-force"], chinese=True) == pytest.approx(4 / 11, abs=1e-12)


@pytest.mark.parametrize("metric", [exact_match, f1_score])
def test_answer_metrics_need_a_gold_answer(metric):
    with pytest.raises(ValueError, match="no gold answer"):
        metric("anything", [])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("《战国无双3》是由哪两个公司合作开发的？", True),
        ("2018年北京奥运会在哪一年举办？", True),
        ("iPhone 手机", True),  # a Latin word counts once, like one character
        ("Which NFL team represented the AFC at Super Bowl 50?", False),
        ("25 working days", False),
        ("Denver 丹佛", True),
        ("Denver Broncos 丹", False),
        ("", False),
        ("？！", False),
    ],
)
def test_is_chinese(text, expected):
    assert is_chinese(text) is expected


def test_percentile_interpolates_like_numpy():
    # [1, 2, 3, 4]: p50 at position 1.5 -> 2.5; p95 at position 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    assert percentile([4, 1, 3, 2], 50) == pytest.approx(2.5)
    assert percentile([4, 1, 3, 2], 95) == pytest.approx(3.85)
    assert percentile([4, 1, 3, 2], 0) == 1 and percentile([4, 1, 3, 2], 100) == 4
    assert percentile([0.7], 95) == 0.7
    rng = random.Random(7)
    for _ in range(200):
        values = [rng.expovariate(1.0) for _ in range(rng.randint(1, 60))]
        q = rng.choice([50, 95, 99, rng.uniform(0, 100)])
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-15)


def test_percentile_refuses_empty_input_and_bad_q():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], 101)


# -- Readers --------------------------------------------------------------------------------------

def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "corpus.jsonl", [
        {"_id": "d1", "title": "Leave", "text": "25 working days."},
        {"_id": 2, "text": "Numeric id, no title."},
        {"_id": "d3", "title": "Gifts", "text": "Up to EUR 75.", "metadata": {}},
    ])
    write_jsonl(tmp_path / "queries.jsonl", [
        {"_id": "q1", "text": "How much leave?"},
        {"_id": "q2", "text": "Gift limit?"},
        {"_id": "q9", "text": "Not judged in test."},
    ])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\nq2\t2\t0\n",
                                                 encoding="utf-8")
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n", encoding="utf-8")
    return tmp_path


def test_read_beir(beir: Path):
    dataset = read_beir(beir)
    assert dataset.queries == {"q1": "How much leave?", "q2": "Gift limit?"}  # only judged queries
    assert dataset.qrels == {"q1": {"d1": 1}, "q2": {"d3": 2, "2": 0}}
    documents = list(dataset.documents())
    assert documents == [EvalDocument("d1", "Leave", "25 working days."),
                         EvalDocument("2", "", "Numeric id, no title."),
                         EvalDocument("d3", "Gifts", "Up to EUR 75.")]
    assert list(dataset.documents()) == documents  # each call streams the file afresh
    assert read_beir(beir, split="dev").queries == {"q9": "Not judged in test."}


def test_read_beir_errors(beir: Path, tmp_path: Path):
    with pytest.raises(EvalDataError, match="not a folder"):
        read_beir(tmp_path / "nowhere")
    with pytest.raises(EvalDataError) as excinfo:
        read_beir(beir, split="train")
    assert str(excinfo.value) == f"{beir / 'qrels' / 'train.tsv'}: not found; splits in this folder: dev, test; " \
                                 "pass one of them as the split"

    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\n", encoding="utf-8")
    with pytest.raises(EvalDataError) as excinfo:
        read_beir(beir)
    assert "test.tsv line 3: expected 3 tab-separated columns" in str(excinfo.value)
    (beir / "qrels" / "test.tsv").write_text("q1\td1\tyes\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="line 1: score 'yes' is not a whole number"):
        read_beir(beir)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td1\t1\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"1 judged queries are not in queries.jsonl \(e.g. q7\)"):
        read_beir(beir)
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n", encoding="utf-8")
    with pytest.raises(EvalDataError, match="holds no judgements"):
        read_beir(beir)

    (beir / "qrels" / "test.tsv").write_text("q1\td1\t1\n", encoding="utf-8")
    with (beir / "corpus.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"_id": "d4", "text": "cut short\n')
    dataset = read_beir(beir)  # the corpus is streamed: its errors come while reading it
    with pytest.raises(EvalDataError) as excinfo:
        list(dataset.documents())
    assert str(excinfo.value).startswith(f"{beir / 'corpus.jsonl'} line 4: not valid JSON")
    write_jsonl(beir / "corpus.jsonl", [{"_id": "d1", "body": "wrong field"}])
    with pytest.raises(EvalDataError, match="line 1: field 'text' must be a string, it is missing"):
        list(read_beir(beir).documents())
    (beir / "corpus.jsonl").unlink()
    with pytest.raises(EvalDataError, match="corpus.jsonl: not found"):
        read_beir(beir)


SQUAD = {
    "version": "1.1",
    "data": [
        {"title": "Super_Bowl_50", "paragraphs": [
            {"context": "Super Bowl 50 was won by the Denver Broncos.", "qas": [
                {"id": "s1", "question": "Who won Super Bowl 50?",
                 "answers": [{"text": "Denver Broncos", "answer_start": 29},
                             {"text": "the Denver Broncos", "answer_start": 25},
                             {"text": "Denver Broncos", "answer_start": 29}]},
                {"id": "s2", "question": "Unanswerable?", "answers": [], "is_impossible": True},
            ]},
            {"context": "It was played in Santa Clara.", "qas": [
                {"id": "s3", "question": "Where was it played?", "answers": [{"text": "Santa Clara"}]},
            ]},
        ]},
        {"id": "DEV_0", "paragraphs": [  # CMRC style: an id, no title
            {"id": "DEV_0", "context": "《战国无双3》是由光荣和ω-force开发的作品。", "qas": [
                {"id": "DEV_0_QUERY_0", "question": "《战国无双3》是由哪两个公司合作开发的？",
                 "answers": [{"text": "光荣和ω-force", "answer_start": 11}]},
            ]},
        ]},
    ],
}


def test_read_squad(tmp_path: Path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(SQUAD, ensure_ascii=False), encoding="utf-8")
    dataset = read_squad(path)
    assert dataset.documents == [
        EvalDocument("Super_Bowl_50#0", "Super_Bowl_50", "Super Bowl 50 was won by the Denver Broncos."),
        EvalDocument("Super_Bowl_50#1", "Super_Bowl_50", "It was played in Santa Clara."),
        EvalDocument("DEV_0#0", "DEV_0", "《战国无双3》是由光荣和ω-force开发的作品。"),
    ]
    assert dataset.questions == [
        EvalQuestion("s1", "Who won Super Bowl 50?", ("Denver Broncos", "the Denver Broncos"), "Super_Bowl_50#0"),
        EvalQuestion("s3", "Where was it played?", ("Santa Clara",), "Super_Bowl_50#1"),
        EvalQuestion("DEV_0_QUERY_0", "《战国无双3》是由哪两个公司合作开发的？", ("光荣和ω-force",), "DEV_0#0"),
    ]


def test_read_squad_errors(tmp_path: Path):
    path = tmp_path / "dev.json"
    with pytest.raises(EvalDataError, match="dev.json: not found"):
        read_squad(path)
    path.write_text('{"data": [\n  {"title": "x",}\n]}', encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"not valid JSON \(.* at line 2, column 17\)"):
        read_squad(path)
    path.write_text('[{"title": "x"}]', encoding="utf-8")
    with pytest.raises(EvalDataError, match="not SQuAD format"):
        read_squad(path)
    twice = {"data": [SQUAD["data"][0], SQUAD["data"][0]]}
    path.write_text(json.dumps(twice), encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"data\[1\]: title 'Super_Bowl_50' was already used by data\[0\]"):
        read_squad(path)
    path.write_text(json.dumps({"data": [{"title": "t", "paragraphs": [{"text": "no context", "qas": []}]}]}),
                    encoding="utf-8")
    with pytest.raises(EvalDataError, match=r"data\[0\]\.paragraphs\[0\]: field 'context' must be a string"):
        read_squad(path)


def test_read_qa_jsonl(tmp_path: Path):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "a", "question": "How many days?", "answer": "25 days", "doc_id": "handbook/leave.md"}),
        json.dumps({"question": " Gift limit? ", "answers": ["EUR 75", "75 euros", "EUR 75", " "]}),
        "",
        json.dumps({"id": 7, "question": "Retrieval only?", "doc_id": "it-faq-002"}),
        json.dumps({"question": "Answer only?", "answer": ["yes"], "category": "ignored"}),
    ]) + "\n", encoding="utf-8")
    assert read_qa_jsonl(path) == [
        EvalQuestion("a", "How many days?", ("25 days",), "handbook/leave.md"),
        EvalQuestion("qa.jsonl#2", "Gift limit?", ("EUR 75", "75 euros"), None),
        EvalQuestion("7", "Retrieval only?", (), "it-faq-002"),
        EvalQuestion("qa.jsonl#5", "Answer only?", ("yes",), None),
    ]


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"question": "ok"}', '', '{"question": "broken"'], "line 3: not valid JSON"),
        (['["question"]'], "line 1: expected a JSON object, got list"),
        (['{"q": "wrong field"}'], "line 1: field 'question' must be a string, it is missing (fields: q)"),
        (['{"question": "  "}'], "line 1: field 'question' is empty"),
        (['{"question": "x", "answer": "a", "answers": ["b"]}'], "line 1: has both 'answer' and 'answers'"),
        (['{"question": "x", "answer": 25}'], "line 1: 'answer' must be a string or a list of strings"),
        (['{"id": "a", "question": "x"}', '{"id": "a", "question": "y"}'], "line 2: id 'a' is also used on line 1"),
        (['', '  '], "holds no questions"),
    ],
)
def test_read_qa_jsonl_errors(tmp_path: Path, lines, message):
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(EvalDataError) as excinfo:
        read_qa_jsonl(path)
    assert str(excinfo.value).startswith(f"{path}")
    assert message in str(excinfo.value)
    assert isinstance(excinfo.value, RagError)


def test_read_qa_jsonl_missing_file(tmp_path: Path):
    with pytest.raises(EvalDataError, match="missing.jsonl: not found; pass a JSONL file"):
        read_qa_jsonl(tmp_path / "missing.jsonl")


def test_the_sample_question_set_reads():
    questions = read_qa_jsonl(REPO / "corpora" / "sample_qa.jsonl")
    assert len(questions) == 89
    assert questions[0] == EvalQuestion("qa-001", "I work at the Lisbon HQ. How much annual leave am I entitled to "
                                        "each year?", ("25 working days",), "handbook/leave-policy.md")
    assert all(q.answers and q.doc_id for q in questions)
    for q in questions:  # doc ids are paths under corpora/, attachments of an e-mail there, or ids of JSONL records
        mail, _, attachment = q.doc_id.partition(".eml/")
        assert (REPO / "corpora" / q.doc_id).is_file() or "/" not in q.doc_id or \
            (attachment and (REPO / "corpora" / f"{mail}.eml").is_file())


def test_sample_is_fixed_and_keeps_order():
    items = [f"q{i}" for i in range(100)]
    picked = sample(items, 10, seed=0)
    assert picked == sample(items, 10, seed=0)
    assert picked == sorted(picked, key=items.index)
    assert set(picked) == set(random.Random(0).sample(items, 10))  # the same questions as the benchmark's draw
    assert sample(items, 10, seed=1) != picked
    assert sample(items, None) == items and sample(items, 0) == items and sample(items, 500) == items
    with pytest.raises(ValueError, match="0 or more"):
        sample(items, -1)


# -- Contains the reference, cites the source, abstentions (issue 14) -----------------------------

@pytest.mark.parametrize(
    "prediction, golds, chinese, expected",
    [
        ("Every employee gets 27 days of paid vacation a year.", ["27 days"], False, 1.0),
        ("The Denver Broncos won it.", ["the Denver Broncos!"], False, 1.0),  # case, article, punctuation go
        ("1,000 people came", ["1000 people"], False, 1.0),
        ("Broncos", ["Denver Broncos"], False, 0.0),  # a part of the reference is not the reference
        ("Santa Clara", ["Carolina Panthers", "Santa Clara"], False, 1.0),  # any gold answer will do
        ("125 working days", ["25 working days"], False, 0.0),  # whole words: 25 is not in 125
        ("It is EUR 75 [1].", ["EUR 75"], False, 1.0),
        ("", ["Denver Broncos"], False, 0.0),  # an abstention is scored as ""
        ("the answer is the", ["the"], False, 0.0),  # a gold answer that normalises to nothing never matches
        ("上海办公室的食堂早上七点半开门。", ["七点半"], True, 1.0),
        ("上海办公室的食堂早上七点半开门。", ["七 点 半。"], True, 1.0),  # spaces and CJK punctuation go
        ("员工午餐免费", ["七点半"], True, 0.0),
        ("开发商是光荣和ω-force", ["光荣和ω－force"], True, 1.0),  # ASCII and full-width dash both go
    ],
)
def test_contains_reference(prediction, golds, chinese, expected):
    assert contains_reference(prediction, golds, chinese) == expected


def test_contains_reference_needs_a_gold_answer():
    with pytest.raises(ValueError, match="no gold answer"):
        contains_reference("anything", [])


def test_cites_source():
    assert cites_source(["leave.md"], "leave.md") == 1.0
    assert cites_source(["prices.csv", "leave.md"], "leave.md") == 1.0  # other citations as well still count
    assert cites_source(iter(["prices.csv"]), "leave.md") == 0.0  # the wrong document
    assert cites_source([], "leave.md") == 0.0
    assert cites_source(["Leave.md"], "leave.md") == 0.0  # doc ids are compared exactly
    with pytest.raises(ValueError, match="no gold document"):
        cites_source(["leave.md"], "")


def _answer(text: str, cited: list[str] | None = None, abstained: bool = False) -> Answer:
    """An answer as the engine returns it; citations need only their doc_id here."""
    citations = [Citation(n, doc_id, doc_id, doc_id, "", "") for n, doc_id in enumerate(cited or [], start=1)]
    return Answer("?", text, citations, [], abstained, grounded=bool(citations) and not abstained)


def test_answer_scores_by_hand():
    pairs = [
        # answered, contains its reference (citation markers go first), cites its gold document: EM 0, F1 2/3
        (EvalQuestion("1", "How much leave?", ("25 days",), "leave.md"),
         _answer("Lisbon staff get 25 days [1].", ["leave.md"])),
        # answered in Chinese, contains its reference, cites the wrong document
        (EvalQuestion("2", "食堂几点开门？", ("七点半",), "cantina.md"),
         _answer("食堂早上七点半开门。[1]", ["prices.csv"])),
        # answerable, but abstained: counts against EM, F1, contains and refused_answerable; not in cites_source
        (EvalQuestion("3", "Who approves big purchases?", ("the CFO",), "policy.docx"),
         _answer("I don't know.", abstained=True)),
        # answered exactly, gold answer but no gold document: not in cites_source
        (EvalQuestion("4", "Which gateway?", ("vpn.acme.example",)), _answer("vpn.acme.example", ["intranet.html"])),
        # marked unanswerable, rightly abstained; and one wrongly answered
        (EvalQuestion("5", "Most moons?", unanswerable=True), _answer("I don't know.", abstained=True)),
        (EvalQuestion("6", "Capital of Australia?", unanswerable=True), _answer("Sydney [1].", ["faq.jsonl"])),
        # no gold answer, no gold document, no mark (a thumbs-down export): only asked
        (EvalQuestion("7", "Anything else?"), _answer("Something [1].", ["notes.txt"])),
    ]
    scores = answer_scores(pairs)
    assert scores == {
        "answered": 5, "abstained": pytest.approx(2 / 7), "grounded": pytest.approx(5 / 7),
        "scored": 4,
        # EM: only question 4; F1: q1 pred [lisbon, staff, get, 25, days] vs [25, days]: P 2/5, R 1 -> 4/7;
        # q2 characters 食堂早上七点半开门 (9) vs 七点半 (3): P 1/3, R 1 -> 1/2; q3 0; q4 1
        "EM": pytest.approx(100 * 1 / 4), "F1": pytest.approx(100 * (4 / 7 + 1 / 2 + 0 + 1) / 4),
        "contains": pytest.approx(3 / 4), "refused_answerable": pytest.approx(1 / 4),
        "cites_source": pytest.approx(1 / 2), "cites_source_questions": 2,  # q1 yes, q2 the wrong document
        "unanswerable": 2, "unanswerable_abstained": pytest.approx(1 / 2),
    }
    assert isinstance(scores["answered"], int) and isinstance(scores["cites_source_questions"], int)


def test_answer_scores_leave_out_what_does_not_apply():
    # Questions alone: no gold answers, documents or marks, so only the counts and shares of all questions.
    only_asked = answer_scores([(EvalQuestion("1", "Anything?"), _answer("Yes [1].", ["a.md"])),
                                (EvalQuestion("2", "Else?"), _answer("I don't know.", abstained=True))])
    assert only_asked == {"answered": 1, "abstained": 0.5, "grounded": 0.5}
    # Every answerable question abstained: no answered question to check citations of.
    refused = answer_scores([(EvalQuestion("1", "Leave?", ("25 days",), "leave.md"),
                              _answer("I don't know.", abstained=True))])
    assert refused["refused_answerable"] == 1.0 and refused["contains"] == 0.0 and "cites_source" not in refused
    assert "unanswerable" not in refused
    assert answer_scores([]) == {"answered": 0, "abstained": 0.0, "grounded": 0.0}


def test_read_qa_jsonl_reads_the_unanswerable_mark(tmp_path: Path):
    path = write_jsonl(tmp_path / "qa.jsonl", [
        {"id": "u", "question": "Capital of Australia?", "answerable": False},
        {"id": "a", "question": "Leave?", "answer": "25 days", "answerable": True},
        {"id": "n", "question": "No answer, no mark?"},
    ])
    assert read_qa_jsonl(path) == [EvalQuestion("u", "Capital of Australia?", unanswerable=True),
                                   EvalQuestion("a", "Leave?", ("25 days",)),
                                   EvalQuestion("n", "No answer, no mark?")]
    questions = read_qa_jsonl(REPO / "corpora" / "unanswerable_qa.jsonl")
    assert len(questions) == 28 and all(q.unanswerable and not q.answers and not q.doc_id for q in questions)
    assert not any(q.unanswerable for q in read_qa_jsonl(REPO / "corpora" / "sample_qa.jsonl"))


@pytest.mark.parametrize(
    "record, message",
    [
        ({"question": "x", "answerable": "no"}, "line 1: field 'answerable' must be true or false, not \"no\""),
        ({"question": "x", "answerable": 0}, "line 1: field 'answerable' must be true or false, not 0"),
        ({"question": "x", "answer": "y", "answerable": False}, 'marked "answerable": false but has an answer'),
        ({"question": "x", "doc_id": "d", "answerable": False}, "but has an answer or a doc_id"),
    ],
)
def test_read_qa_jsonl_refuses_a_bad_unanswerable_mark(tmp_path: Path, record, message):
    path = write_jsonl(tmp_path / "qa.jsonl", [record])
    with pytest.raises(EvalDataError) as excinfo:
        read_qa_jsonl(path)
    assert message in str(excinfo.value)


@pytest.mark.slow
def test_rag_eval_qa_answers_reports_contains_citations_and_abstentions(make_engine, sample_docs, cli_env,
                                                                       tmp_path: Path):
    engine = make_engine()
    engine.index([sample_docs])
    index = engine.store.path
    engine.close()
    questions = write_jsonl(tmp_path / "qa.jsonl", [
        # the extractive generator answers with the whole sentence, cited: contains 1, cites 1, EM 0
        {"id": "vacation", "question": "How many days of paid vacation does every employee get?",
         "answer": "27 days", "doc_id": "handbook.md"},
        # a reference the answer does not hold: contains 0, cites 1
        {"id": "lidar", "question": "What does error code E-451 mean?", "answer": "the battery is empty",
         "doc_id": "manual.pdf"},
        # the answer cites notes.txt, the gold document is another file: contains 1, cites 0
        {"id": "cafeteria", "question": "When does the cafeteria open?", "answer": "07:45",
         "doc_id": "handbook.md"},
        # answerable by its gold answer, but nothing in the documents: abstains (below the relevance floor)
        {"id": "ethanol", "question": "What is the boiling point of ethanol?", "answer": "78 degrees"},
        {"id": "moons", "question": "Which planet has the most moons?", "answerable": False},
        {"id": "ana", "question": "Who leads the Lisbon robotics lab?"},  # only asked
    ])
    done = subprocess.run([sys.executable, "-m", "rag", "eval", "qa", str(questions), "--index", str(index),
                           "--answers", "--generator", "extractive", "--json"],
                          env=cli_env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["questions"] == 6 and report["retrieval"]["queries"] == 3
    assert report["answers"] == {
        "answered": 4, "abstained": pytest.approx(2 / 6), "grounded": pytest.approx(4 / 6),
        # F1: the vacation sentence has 9 tokens, 2 of them gold (4/11); the lidar one 15, sharing "is" with
        # the 3 gold tokens (1/9); the cafeteria one 10, "0745" gold (2/11); the abstention 0
        "EM": 0.0, "F1": pytest.approx(100 * (4 / 11 + 1 / 9 + 2 / 11) / 4), "scored": 4,
        "contains": 0.5, "refused_answerable": 0.25,
        "cites_source": pytest.approx(2 / 3), "cites_source_questions": 3,
        "unanswerable": 1, "unanswerable_abstained": 1.0,
    }, report["answers"]


# -- Follow-ups: history, standalone, side by side (issue 30) ---------------------------------------

FIX_IT = {"id": "fix", "question": "How do I fix it?", "answer": "dry cloth", "doc_id": "manual.pdf",
          "history": [{"role": "user", "content": "What does error code E-451 mean?"},
                      {"role": "assistant", "content": "The lidar sensor is blocked."}],
          "standalone": "How do I fix error code E-451?"}


def test_read_qa_jsonl_reads_a_conversation(tmp_path: Path):
    (question,) = read_qa_jsonl(write_jsonl(tmp_path / "qa.jsonl", [FIX_IT]))
    assert question.history == (Turn("user", "What does error code E-451 mean?"),
                                Turn("assistant", "The lidar sensor is blocked."))
    assert question.standalone == "How do I fix error code E-451?"
    followups = read_qa_jsonl(REPO / "corpora" / "followup_qa.jsonl")
    conversations = {q.qid.rsplit("-", 1)[0] for q in followups}
    assert len(conversations) >= 40 and all(q.history and q.standalone for q in followups)
    assert all(2 <= len(q.history) // 2 + 1 <= 4 for q in followups), "2 to 4 turns"
    assert sum(q.unanswerable for q in followups) >= 5
    assert all((REPO / "corpora" / q.doc_id).is_file() or "/" not in q.doc_id for q in followups if q.doc_id)


@pytest.mark.parametrize("history, message", [
    ("earlier", "line 1: field 'history' must be a list"),
    ([{"role": "system", "content": "x"}], "line 1: history[0]: expected"),
    ([{"role": "user", "content": "a"}, {"role": "user"}], "line 1: history[1]: expected"),
])
def test_read_qa_jsonl_refuses_a_bad_history(tmp_path: Path, history, message):
    with pytest.raises(EvalDataError, match=re.escape(message)):
        read_qa_jsonl(write_jsonl(tmp_path / "qa.jsonl", [{"question": "x", "history": history}]))
    with pytest.raises(EvalDataError, match="field 'standalone' is empty"):
        read_qa_jsonl(write_jsonl(tmp_path / "qa.jsonl", [{"question": "x", "standalone": " "}]))


def test_eval_reports_follow_ups_with_history_last_turn_and_standalone_side_by_side(make_engine, sample_docs,
                                                                                    tmp_path: Path):
    from rag.evaluate.run import evaluate, evaluation_steps, prepare_qa

    engine = make_engine()
    engine.index([sample_docs])
    first = {"id": "first", "question": "What does error code E-451 mean?", "answer": "lidar", "doc_id": "manual.pdf"}
    questions, qrels = prepare_qa(str(write_jsonl(tmp_path / "qa.jsonl", [first, FIX_IT])), None, 0)
    steps: list[int] = []
    report = evaluate(engine, "qa.jsonl", questions, qrels, None, 10, answers=True, generator="extractive",
                      on_question=steps.append)
    assert steps == list(range(1, evaluation_steps(questions, qrels, True) + 1)) and len(steps) == 2 + 2 + 2 + 2
    conversation = report.as_dict()["conversation"]
    assert conversation["questions"] == 1 and conversation["ways"] == ["history", "last_turn", "standalone"]
    retrieval = conversation["retrieval"]
    assert retrieval["history"]["recall@1"] == 1.0 and retrieval["standalone"]["recall@1"] == 1.0
    assert retrieval["last_turn"]["recall@1"] == 0.0, "on its own, 'it' finds another document"
    answers = conversation["answers"]
    assert answers["history"]["contains"] == 1.0 and answers["standalone"]["contains"] == 1.0
    assert answers["last_turn"]["contains"] == 0.0
    assert "conversation" not in evaluate(engine, "x", questions[:1], qrels, None, 10).as_dict()
