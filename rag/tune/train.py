"""Fine-tuning with sentence-transformers' trainer and MultipleNegativesRankingLoss.

MNRL treats every other positive in a batch as a negative, so small labelled sets train without
mined negatives too; the mined ones (one column each) make the batch's task harder. The run is
seeded (shuffling, dropout, the loss's cache) and single-process, so that the same seed gives
the same weights on the same machine."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError
from rag.tune.mining import Rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """How to train: epochs, batch size, learning rate, seed, device, mined negatives per row."""

    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 2e-5
    seed: int = 0
    device: str = "cpu"
    negatives: int = 1
    cached: bool = False


def _columns(rows: Rows, query_prefix: str, passage_prefix: str, negatives: int) -> dict[str, list[str]]:
    """The dataset's columns; negatives only as many as every row has (MNRL needs full columns)."""
    shared = min((len(n) for n in rows.negatives), default=0) if negatives else 0
    if negatives and shared < negatives:
        log.warning("only %d of %d hard negatives found for every question; training with %d", shared,
                    negatives, shared)
    columns = {"anchor": [query_prefix + a for a in rows.anchor],
               "positive": [passage_prefix + p for p in rows.positive]}
    for k in range(shared):
        columns[f"negative_{k + 1}"] = [passage_prefix + n[k] for n in rows.negatives]
    return columns


def train(base: Path, rows: Rows, output: Path, options: TrainOptions, query_prefix: str = "",
          passage_prefix: str = "") -> float:
    """Fine-tune the model in `base` on `rows` and save it to `output`; the seconds training took."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from datasets import Dataset
    except ImportError:
        raise RagError("rag tune needs the datasets package (sentence-transformers' trainer reads pairs with it): "
                       "pip install 'rag[tune]'") from None
    from sentence_transformers import (SentenceTransformer, SentenceTransformerTrainer,
                                       SentenceTransformerTrainingArguments, losses)
    from sentence_transformers.training_args import BatchSamplers
    from transformers import PrinterCallback, set_seed

    set_seed(options.seed)
    model = SentenceTransformer(str(base), device=options.device, local_files_only=True)
    data = Dataset.from_dict(_columns(rows, query_prefix, passage_prefix, options.negatives))
    loss = (losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=8) if options.cached
            else losses.MultipleNegativesRankingLoss(model))
    with tempfile.TemporaryDirectory(prefix="rag-tune-") as scratch:
        args = SentenceTransformerTrainingArguments(
            output_dir=scratch, num_train_epochs=options.epochs, per_device_train_batch_size=options.batch_size,
            learning_rate=options.learning_rate, warmup_steps=0.1, seed=options.seed, data_seed=options.seed,
            batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", logging_strategy="no", report_to=[],
            use_cpu=options.device == "cpu", dataloader_num_workers=0, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
        trainer.remove_callback(PrinterCallback)  # it prints the run's figures on stdout, where --json goes
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            trainer.train()
        seconds = time.perf_counter() - started
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    return seconds
