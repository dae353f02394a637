"""One `rag tune` run: read pairs, mine, train, measure both models, write the verdict.

The tuned folder is always written (a user may want to inspect it); `rag_tune.json` inside it
says whether it beat the current model on the held-out questions' nDCG@10, and only then is it
recommended. The JSON sits inside the folder so that it travels with the model when copied."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.embed import resolve_model
from rag.engine import Engine
from rag.errors import EvalDataError, RagError
from rag.tune.corpus import read_corpus
from rag.tune.measure import held_out_qrels, scores, torch_embedder
from rag.tune.mining import mine
from rag.tune.pairs import Pair, read_pairs, split_holdout
from rag.tune.train import TrainOptions, train

log = logging.getLogger(__name__)
VERDICT_FILE = "rag_tune.json"


@dataclass(frozen=True)
class TuneOptions:
    """Where the pairs come from, where the model goes, and what is held out to measure it."""

    pairs: Path
    output: Path
    holdout: float = 0.2
    eval_file: Path | None = None
    training: TrainOptions = field(default_factory=TrainOptions)


@dataclass
class TuneReport:
    """The side-by-side table and the verdict; `recommended` only when nDCG@10 went up."""

    base_model: str
    output: str
    chunks: int
    train_pairs: int
    eval_questions: int
    hard_negatives: int
    skipped: dict[str, int]
    train_seconds: float
    seconds_per_1000_pairs: float
    current: dict[str, float]
    tuned: dict[str, float]
    recommended: bool
    reason: str
    seed: int
    total_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _split(options: TuneOptions) -> tuple[list[Pair], list[Pair]]:
    pairs = read_pairs(options.pairs)
    if options.eval_file is not None:
        return pairs, read_pairs(options.eval_file)
    return split_holdout(pairs, options.holdout, options.training.seed)


def _check_output(output: Path, base: Path) -> None:
    """Refuse to write over the current model, or over a folder that is not an earlier tuning's."""
    if output.resolve() == base.resolve():
        raise RagError(f"--output {output} is the current model's own folder; choose a new folder")
    if output.is_file() or (output.is_dir() and any(output.iterdir()) and not (output / VERDICT_FILE).is_file()):
        raise RagError(f"--output {output} already holds files that are not an earlier `rag tune` model; "
                       "choose a new or empty folder")


def _verdict(current: dict[str, float], tuned: dict[str, float]) -> tuple[bool, str]:
    gain = tuned["ndcg@10"] - current["ndcg@10"]
    if gain > 1e-9:
        return True, f"held-out nDCG@10 {current['ndcg@10']:.4f} -> {tuned['ndcg@10']:.4f} (+{gain:.4f})"
    return False, (f"not better: held-out nDCG@10 {current['ndcg@10']:.4f} -> {tuned['ndcg@10']:.4f} "
                   f"({gain:+.4f}); keep the current model")


def tune(engine: Engine, options: TuneOptions) -> TuneReport:
    """Fine-tune the index's embedding model on the pairs and measure it against the current one."""
    started = time.perf_counter()
    training, held = _split(options)
    corpus = read_corpus(engine)
    settings = engine.settings.embedding
    name, base_path = resolve_model(settings.model)
    _check_output(options.output, base_path)
    current = torch_embedder(settings, base_path)
    vectors = current.embed_passages(corpus.texts)
    passages = {n: p.passage for n, p in enumerate(training) if p.passage is not None}
    passage_vectors = dict(zip(passages, current.embed_passages(list(passages.values())))) if passages else {}
    rows = mine(training, corpus, vectors, current.embed_queries([p.question for p in training]), passage_vectors,
                options.training.negatives)
    if not rows.anchor:
        raise EvalDataError(f"no pair could be used ({rows.skipped}); check that the doc_ids are in the index",
                            str(options.pairs))
    eval_pairs, qrels = held_out_qrels(held, corpus)
    if not eval_pairs:
        raise EvalDataError("no held-out question has a gold document in the index; nothing to measure",
                            str(options.eval_file or options.pairs))
    seconds = train(base_path, rows, options.output, options.training, settings.query_prefix, settings.passage_prefix)
    tuned_embedder = torch_embedder(settings, options.output)
    before = scores(current, vectors, corpus, eval_pairs, qrels)
    after = scores(tuned_embedder, tuned_embedder.embed_passages(corpus.texts), corpus, eval_pairs, qrels)
    recommended, reason = _verdict(before, after)
    report = TuneReport(name, str(options.output), len(corpus.texts), len(rows.anchor), len(eval_pairs),
                        min((len(n) for n in rows.negatives), default=0), rows.skipped, seconds,
                        seconds / (len(rows.anchor) * options.training.epochs) * 1000, before, after, recommended, reason,
                        options.training.seed, time.perf_counter() - started)
    _write_verdict(options.output, report)
    return report


def _write_verdict(output: Path, report: TuneReport) -> None:
    try:
        (output / VERDICT_FILE).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise RagError(f"could not write {output / VERDICT_FILE}: {exc.strerror}") from None
