"""Hybrid retrieval: BM25 in step with FAISS, fusion, Chinese without a Chinese embedding model,
reranking with a real cross-encoder, the relevance floor, and `rag eval`."""

import json
import subprocess
import sys

import pytest

from conftest import CORPORA, REPO


@pytest.fixture
def codes(tmp_path):
    docs = tmp_path / "codes"
    docs.mkdir()
    for i in range(40):
        (docs / f"part-{i:02d}.md").write_text(
            f"# Part {i}\n\nReplacement wheel assembly for the warehouse robot, order code MR-{2000 + i}. "
            f"Fits chassis revision {i % 4}.")
    (docs / "leave.md").write_text("# Leave\n\nLisbon employees get 25 days of annual leave.")
    (docs / "cantina.md").write_text("# 食堂\n\n上海办公室的食堂早上七点半开门，晚上八点关门。员工午餐免费。")
    return docs


def test_bm25_finds_the_exact_code_and_hybrid_keeps_it(make_engine, codes):
    engine = make_engine()
    engine.index([codes])
    assert engine.search("MR-2031", k=1, mode="bm25")[0].doc_id == "part-31.md"
    assert engine.search("MR-2031", k=1, mode="hybrid")[0].doc_id == "part-31.md"
    hit = engine.search("how much annual leave in Lisbon", k=1)[0]
    assert hit.doc_id == "leave.md" and set(hit.metadata["scores"]) == {"dense", "bm25"}


def test_a_chinese_question_is_ranked_by_bm25_alone_with_an_english_model(make_engine, codes):
    engine = make_engine()
    engine.index([codes])
    hits = engine.search("上海食堂几点开门？", k=3)
    assert hits[0].doc_id == "cantina.md"
    assert "dense" not in hits[0].metadata["scores"], "an English-only model's vectors must not vote"


def test_bm25_stays_in_step_through_update_delete_and_compact(make_engine, codes):
    engine = make_engine(**{"index.factory": "HNSW32"})
    engine.index([codes])
    (codes / "part-07.md").write_text("# Part 7\n\nDiscontinued; order MR-3007 instead.")
    engine.index([codes])
    assert all("MR-2007" not in h.text for h in engine.search("MR-2007", k=40, mode="bm25"))
    assert engine.search("MR-3007", k=1, mode="bm25")[0].doc_id == "part-07.md"
    engine.delete(["part-08.md"])
    assert "part-08.md" not in {h.doc_id for h in engine.search("MR-2008", k=40, mode="bm25")}
    assert engine.check().problems == []
    engine.compact()
    assert engine.check().problems == []
    hits = engine.search("MR-2009", k=5, filters=["doc_id=part-09.md"], mode="bm25")
    assert [h.doc_id for h in hits] == ["part-09.md"]


def test_new_bm25_parameters_are_read_as_built_until_the_next_write_rebuilds(make_engine, codes):
    engine = make_engine(**{"index.bm25_k1": 1.5, "index.bm25_b": 0.75})
    engine.index([codes])
    built = engine.search("order code MR-2031 chassis", k=3, mode="bm25")
    engine.close()
    retuned = make_engine(**{"index.bm25_k1": 0.5, "index.bm25_b": 0.2})
    # The score arrays already hold the old weights: a reader opens them as they are.
    assert [(h.chunk_id, h.score) for h in retuned.search("order code MR-2031 chassis", k=3, mode="bm25")] == \
        [(h.chunk_id, h.score) for h in built]
    report = retuned.index([codes])
    assert report.added == report.updated == 0, "no document changed; only BM25 is rebuilt"
    rebuilt = retuned.search("order code MR-2031 chassis", k=3, mode="bm25")
    assert rebuilt[0].doc_id == "part-31.md"
    assert [h.score for h in rebuilt] != [h.score for h in built]
    assert report.version == "v000002" and retuned.check().problems == []


def test_reranking_with_a_local_cross_encoder(make_engine, codes, tmp_path, embedder):
    from sentence_transformers import CrossEncoder

    # A real CrossEncoder: the bundled MiniLM with a fresh one-label head, saved to a folder.
    folder = tmp_path / "cross-encoder"
    CrossEncoder(str(embedder.path), num_labels=1, local_files_only=True).save(str(folder))
    engine = make_engine(**{"search.reranker": str(folder), "search.rerank_top_n": 5})
    engine.index([codes])
    hits = engine.search("wheel assembly order code", k=5)
    scores = [h.metadata["scores"]["rerank"] for h in hits]
    assert scores == sorted(scores, reverse=True) and [h.score for h in hits] == scores
    with pytest.raises(Exception, match="not a local model folder"):
        make_engine(**{"search.reranker": str(tmp_path / "nothing")}).search("x")


def test_the_relevance_floor_abstains_without_asking_the_generator(make_engine, codes):
    engine = make_engine(**{"answer.min_relevance": 0.99})
    engine.index([codes])
    answer = engine.ask("How much annual leave do Lisbon employees get?", generator="extractive")
    assert answer.abstained and not answer.passages
    assert "answer.min_relevance" in answer.warnings[0]
    relaxed = make_engine(**{"answer.min_relevance": 0.0})
    assert not relaxed.ask("How much annual leave do Lisbon employees get?", generator="extractive").abstained


def _rag(*args, env):
    return subprocess.run([sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def test_rag_eval_beir_and_squad_on_small_datasets(cli_env, tmp_path):
    beir = tmp_path / "tiny-beir"
    (beir / "qrels").mkdir(parents=True)
    topics = ["solar panels convert sunlight into electricity", "bees pollinate flowering plants",
              "glaciers carve deep valleys over millennia", "vaccines train the immune system"]
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(topics)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t.split()[0] + " " + t.split()[1]})
                                                + "\n" for i, t in enumerate(topics)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                            "".join(f"q{i}\td{i}\t1\n" for i in range(len(topics))))
    done = _rag("eval", "beir", str(beir), "--index", str(tmp_path / "ev"), "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["questions"] == 4 and report["retrieval"]["ndcg@10"] == 1.0
    assert report["retrieval"]["recall@1"] == 1.0 and report["latency_ms"]["total"]["p50"] > 0
    squad = tmp_path / "tiny-squad.json"
    squad.write_text(json.dumps({"data": [{"title": "Topics", "paragraphs": [
        {"context": t, "qas": [{"id": f"s{i}", "question": f"What do {t.split()[0]} do?",
                                "answers": [{"text": t.split()[1], "answer_start": 0}]}]}
        for i, t in enumerate(topics)]}]}))
    done = _rag("eval", "squad", str(squad), "--index", str(tmp_path / "ev2"), "--answers", "-g", "extractive",
                "--mode", "bm25", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["mode"] == "bm25" and report["retrieval"]["recall@1"] == 1.0
    assert 0 <= report["answers"]["F1"] <= 100 and "answer.total" in report["latency_ms"]


def test_eval_progress_counts_every_ranking_and_answer_step_once(make_engine, codes):
    from rag.evaluate import EvalQuestion
    from rag.evaluate.run import evaluate, evaluation_steps

    engine = make_engine()
    engine.index([codes])
    questions = [EvalQuestion("1", "Which part has order code MR-2031?", ("Part 31",), "part-31.md"),
                 EvalQuestion("2", "How many days of annual leave in Lisbon?", ("25 days",), "leave.md"),
                 EvalQuestion("3", "Answer only, no judged document?", ())]
    qrels = {q.qid: {q.doc_id: 1} for q in questions if q.doc_id}
    steps: list[int] = []
    report = evaluate(engine, "codes", questions, qrels, None, 5, answers=True, generator="extractive",
                      on_question=steps.append)
    assert steps == [1, 2, 3, 4, 5], "2 judged questions ranked, then all 3 answered"
    assert evaluation_steps(questions, qrels, answers=True) == 5 and evaluation_steps(questions, qrels, False) == 2
    assert report.retrieval["recall@1"] == 1.0 and report.answers["scored"] == 2


def test_rag_eval_qa_finds_every_sample_answer_source_in_the_top_5(cli_env):
    done = _rag("eval", "qa", str(CORPORA / "sample_qa.jsonl"), "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["questions"] == 89 and report["retrieval"]["recall@5"] == 1.0, report["retrieval"]
