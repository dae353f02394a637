"""`rag tune`: fine-tune the index's embedding model on the user's own questions, measured first.

- `pairs`: the training and held-out questions (the `rag eval qa` format, or {question, passage});
- `corpus`: the index's live chunks, read into memory once (fine up to tens of thousands);
- `mining`: each question's positive chunk and hard negatives, from the current model's vectors;
- `train`: sentence-transformers' trainer with MultipleNegativesRankingLoss, seeded, on the CPU;
- `measure`: dense retrieval of the held-out questions with the current and the tuned model;
- `run`: the whole run, its report and the verdict written beside the model.
"""

from rag.tune.run import TuneOptions, TuneReport, tune

__all__ = ["TuneOptions", "TuneReport", "tune"]
