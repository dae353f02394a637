"""`rag tune`: a tiny real fine-tuning run on a small index, its determinism and its verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag import Engine, Settings
from rag.embed import Embedder
from rag.errors import EvalDataError
from rag.tune import TuneOptions, tune
from rag.tune.measure import torch_embedder
from rag.tune.pairs import read_pairs
from rag.tune.train import TrainOptions

FACTS = [
    ("volcano", "The Kessel volcano erupted in 1887 and buried the village of Arnow under ash."),
    ("bridge", "The Lindqvist bridge spans 1.2 kilometres and opened to traffic in 1998."),
    ("coffee", "Our office coffee machine is descaled every Friday by the facilities team."),
    ("parrot", "The grey parrot Kiko can name forty colours and counts to twelve."),
    ("tax", "Travel expenses must be filed within thirty days to be refunded by payroll."),
    ("glacier", "The Varn glacier retreated four hundred metres between 1990 and 2020."),
    ("chess", "The club chess tournament uses a Swiss system with seven rounds."),
    ("bread", "Sourdough bread rises overnight in the fridge before it is baked at 250 degrees."),
    ("satellite", "The Orla-2 satellite measures sea surface temperature from a polar orbit."),
    ("violin", "A violin's sound post transmits vibrations from the top plate to the back."),
    ("vaccine", "The clinic offers flu vaccines on Tuesdays between nine and noon."),
    ("password", "Passwords must be changed every ninety days and hold at least fourteen characters."),
    ("marathon", "The city marathon starts at the harbour at 8:30 and ends at the cathedral."),
    ("battery", "The X5 drone battery lasts twenty-five minutes and charges in one hour."),
    ("library", "The library lends up to fifteen books for four weeks, renewable twice."),
    ("tomato", "Tomato plants need staking once they reach forty centimetres."),
    ("printer", "Printer queue PRN-9 on floor five prints double-sided by default."),
    ("whale", "Humpback whales migrate five thousand kilometres to breed in warm water."),
    ("parking", "Employees park in garage B; visitors get a ticket at reception."),
    ("telescope", "The observatory telescope has a 2.4 metre mirror and opens on clear nights."),
    ("insurance", "Dental insurance covers two check-ups a year and half the cost of fillings."),
    ("earthquake", "The 1923 earthquake measured 7.9 and destroyed the old town hall."),
    ("server", "The build server restarts every Sunday at 03:00 for patches."),
    ("honey", "Each beehive on the roof produces about twenty kilograms of honey a year."),
]
QUESTIONS = [
    "When did the Kessel volcano erupt?", "How long is the Lindqvist bridge?", "Who descales the coffee machine?",
    "How many colours can Kiko name?", "How soon must travel expenses be filed?", "How far did the Varn glacier retreat?",
    "How many rounds does the chess tournament have?", "How long does sourdough rise?",
    "What does the Orla-2 satellite measure?", "What does a violin sound post do?", "When are flu vaccines given?",
    "How often must passwords be changed?", "Where does the marathon start?", "How long does the drone battery last?",
    "How many books can I borrow?", "When do tomato plants need staking?", "Which printer prints double-sided?",
    "How far do humpback whales migrate?", "Where do employees park?", "How big is the telescope mirror?",
    "What does dental insurance cover?", "How strong was the 1923 earthquake?", "When does the build server restart?",
    "How much honey does a beehive produce?",
]
FAST = TrainOptions(epochs=1, batch_size=8, seed=7)


def _write_pairs(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tune_index(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> tuple[Engine, Path]:
    root = tmp_path_factory.mktemp("tune")
    engine = Engine(Settings.load(overrides={"index.path": str(root / "index")}, environ={}), embedder=embedder)
    engine.index_jsonl([json.dumps({"id": name, "text": text}).encode() + b"\n" for name, text in FACTS], "kb.jsonl")
    yield engine, root
    engine.close()


@pytest.fixture(scope="module")
def tuned(tune_index: tuple[Engine, Path]) -> tuple[Path, object]:
    engine, root = tune_index
    pairs = _write_pairs(root / "pairs.jsonl", [{"question": q, "doc_id": name} for q, (name, _) in zip(QUESTIONS, FACTS)])
    out = root / "tuned"
    return out, tune(engine, TuneOptions(pairs, out, holdout=0.2, training=FAST))


def test_a_tiny_run_writes_a_model_that_loads_as_embedding_model(tuned):
    out, report = tuned
    assert report.train_pairs == 19 and report.eval_questions == 5 and report.chunks == len(FACTS)
    assert report.hard_negatives == 1 and report.seconds_per_1000_pairs > 0
    assert set(report.current) == set(report.tuned) == {"recall@5", "mrr@10", "ndcg@10"}
    verdict = json.loads((out / "rag_tune.json").read_text())
    assert verdict["recommended"] == report.recommended and verdict["tuned"] == report.tuned
    settings = Settings.load(overrides={"embedding.model": str(out)}, environ={})
    loaded = Embedder(settings.embedding)
    vectors = loaded.embed_queries(["Where do employees park?"])
    assert vectors.shape == (1, 384) and np.isfinite(vectors).all()
    assert abs(float(np.linalg.norm(vectors[0])) - 1) < 1e-3
    assert loaded.identity()["model"] == out.name


def test_the_same_seed_gives_the_same_model(tune_index, tuned):
    engine, root = tune_index
    out, _ = tuned
    again = root / "tuned-again"
    tune(engine, TuneOptions(root / "pairs.jsonl", again, holdout=0.2, training=FAST))
    texts = [text for _, text in FACTS[:4]]
    first = torch_embedder(engine.settings.embedding, out).embed_passages(texts)
    second = torch_embedder(engine.settings.embedding, again).embed_passages(texts)
    np.testing.assert_array_equal(first, second)


def test_nonsense_pairs_are_not_recommended(tune_index):
    engine, root = tune_index
    # Every question paired with another topic's document, and measured on the true pairs: the
    # model learns to rank wrong documents, so it cannot beat the current one.
    shifted = [{"question": q, "doc_id": FACTS[(n + 7) % len(FACTS)][0]} for n, q in enumerate(QUESTIONS)]
    truth = [{"question": q, "doc_id": name} for q, (name, _) in zip(QUESTIONS, FACTS)]
    out = root / "nonsense"
    report = tune(engine, TuneOptions(_write_pairs(root / "nonsense.jsonl", shifted), out,
                                      eval_file=_write_pairs(root / "truth.jsonl", truth),
                                      training=TrainOptions(epochs=2, batch_size=8, learning_rate=1e-4, seed=7)))
    assert not report.recommended and "not better" in report.reason
    assert report.tuned["ndcg@10"] <= report.current["ndcg@10"]
    assert json.loads((out / "rag_tune.json").read_text())["recommended"] is False
    assert (out / "modules.json").is_file()  # written anyway, for inspection


@pytest.mark.parametrize("line, message", [
    ('{"question": "Where?", "doc_id": ', "line 3: not a JSON object"),
    ('{"doc_id": "bridge"}', "line 3: needs a non-empty string 'question'"),
    ('{"question": "Where?"}', "line 3: has no 'doc_id', 'passage' or 'answer'"),
    ('{"question": "Where?", "doc_id": ["a", 3.5]}', "line 3: field 'doc_id' must be a string"),
])
def test_a_bad_pairs_file_names_the_line(tmp_path, line, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"question": "Q1", "doc_id": "volcano"}\n{"question": "Q2", "passage": "text"}\n' + line + "\n",
                    encoding="utf-8")
    with pytest.raises(EvalDataError, match="pairs.jsonl " + message.replace("(", r"\(").replace("[", r"\[")):
        read_pairs(path)


def test_hard_negatives_skip_the_gold_document_and_near_copies_of_the_positive():
    from rag.tune.corpus import Corpus
    from rag.tune.mining import mine
    from rag.tune.pairs import Pair

    corpus = Corpus(["gold a", "gold b", "copy of gold", "same text", "hard", "easy"],
                    ["g", "g", "other1", "other2", "other3", "other4"])
    vectors = np.array([[1, 0, 0], [0.9, 0.43, 0], [0.99, 0.14, 0], [0.5, 0.5, 0.7], [0.8, 0, 0.6], [0, 0, 1]],
                       dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    corpus.texts[3] = "gold a"  # the positive's own text, held by another document
    query = np.array([[1, 0.05, 0.05]], dtype=np.float32)
    rows = mine([Pair("q", "question?", doc_ids=("g",))], corpus, vectors, query, {}, wanted=2)
    assert rows.positive == ["gold a"]  # the gold document's best chunk for the question
    assert rows.negatives == [["hard", "easy"]]  # not gold b, not the near-copy, not the same text
    answered = mine([Pair("q", "question?", answers=("HARD",))], corpus, vectors, query, {}, wanted=1)
    assert answered.positive == ["hard"]
    missing = mine([Pair("q", "question?", doc_ids=("nowhere",))], corpus, vectors, query, {}, wanted=1)
    assert not missing.anchor and missing.skipped == {"gold document not in the index": 1}


def test_the_output_may_not_be_the_current_model(tune_index, tuned):
    from rag.embed import resolve_model
    from rag.errors import RagError

    engine, root = tune_index
    _, base = resolve_model(engine.settings.embedding.model)
    with pytest.raises(RagError, match="current model's own folder"):
        tune(engine, TuneOptions(root / "pairs.jsonl", base, eval_file=root / "pairs.jsonl", training=FAST))
