#!/usr/bin/env python3
"""Calibrate answer.min_relevance: the best question-passage cosine for questions the sample
corpus answers (corpora/sample_qa.jsonl) against questions it cannot (corpora/unanswerable_qa.jsonl).

For each candidate floor it prints how many answerable questions would wrongly abstain and how
many unanswerable ones would rightly abstain, and proposes a floor 0.05 below the weakest
answerable English question. Chinese questions are left out: the bundled MiniLM does not
understand Chinese, so they get no floor.

    python3 benchmarks/relevance_floor.py             # prints, and appends to docs/benchmarks.md
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import tempfile
from pathlib import Path

from benchmark_record import append_section, machine
from rag import Engine, Settings
from rag.answering import best_relevance
from rag.evaluate.metrics import is_chinese

REPO_ROOT = Path(__file__).resolve().parent.parent


def _questions(path: Path) -> list[str]:
    return [json.loads(line)["question"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> int:
    corpus = REPO_ROOT / "corpora"
    answerable = [q for q in _questions(corpus / "sample_qa.jsonl") if not is_chinese(q)]
    unanswerable = _questions(corpus / "unanswerable_qa.jsonl")
    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        engine = Engine(Settings.load(overrides={"index.path": str(Path(tmp) / "index")}))
        engine.index([corpus])
        k = engine.settings.answer.k

        def relevance(questions: list[str]) -> list[float]:
            return [best_relevance(hits) or 0.0 for hits in engine.search_many(questions, k)]

        good, bad = relevance(answerable), relevance(unanswerable)
        engine.close()
    # A 0.05 step at least 0.05 below the weakest answerable question: a margin for questions
    # this small set does not hold.
    floor = math.floor((min(good) - 0.05) * 20) / 20
    rows = ["| floor | answerable that abstain | unanswerable that abstain |", "|---:|---:|---:|"]
    for candidate in sorted({0.0, 0.1, 0.2, 0.25, 0.3, 0.35, 0.4, floor}):
        rows.append(f"| {candidate:.2f} | {sum(g < candidate for g in good)} of {len(good)} | "
                    f"{sum(b < candidate for b in bad)} of {len(bad)} |")
    summary = (f"best cosine, answerable: min {min(good):.3f}, median {sorted(good)[len(good) // 2]:.3f}; "
               f"unanswerable: max {max(bad):.3f}, median {sorted(bad)[len(bad) // 2]:.3f}")
    text = "\n".join(rows) + f"\n\n{summary}; proposed answer.min_relevance = {floor:.2f}"
    print(text)
    if "--no-record" not in sys.argv:
        append_section("Relevance floor calibration", dt.datetime.now(dt.timezone.utc), [
            f"Machine: {machine()}; {len(good)} answerable English questions (corpora/sample_qa.jsonl), "
            f"{len(bad)} unanswerable (corpora/unanswerable_qa.jsonl)",
            "Reproduce: `python3 benchmarks/relevance_floor.py`"], text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
