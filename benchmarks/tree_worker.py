"""One side of tree_bench.py: the `rag` of one source tree (whatever PYTHONPATH names), on one
index, answering the driver's commands, one JSON line in and one out.

Uses only what the library offered before and after the refactors it compares: Settings.load,
Engine.index / index_jsonl / search_many / delete, rag.evaluate.run.prepare_beir and evaluate.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    import rag
    from rag import Engine, Settings
    from rag.evaluate.run import evaluate, prepare_beir

    engine: Engine | None = None
    questions: list = []
    qrels: dict = {}
    reply({"ready": True, "rag": str(Path(rag.__file__).resolve().parent)})
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "open":  # index SciFact (nothing new when the index holds it already)
            engine = Engine(Settings.load(overrides={"index.path": command["index"]}))
            started = time.perf_counter()
            questions, qrels = prepare_beir(engine, command["data"], "test", None, 0, None)
            reply({"seconds": time.perf_counter() - started})
        elif op == "ndcg":
            report = evaluate(engine, "SciFact test", questions, qrels, None, 10)
            reply({"ndcg": report.retrieval["ndcg@10"]})
        elif op == "warm":
            for question in questions[:10]:
                engine.search_many([question.question], 10)
            reply({})
        elif op == "search":
            started = time.perf_counter()
            engine.search_many([questions[command["i"] % len(questions)].question], 10)
            reply({"seconds": time.perf_counter() - started})
        elif op == "add":  # one document written and one deleted, as `rag index` and `rag delete` do
            folder = Path(command["folder"])
            started = time.perf_counter()
            engine.index([folder])
            added = time.perf_counter() - started
            started = time.perf_counter()
            engine.delete([command["doc_id"]])
            reply({"add": added, "delete": time.perf_counter() - started})
        elif op == "quit":
            reply({})
            return


def reply(data: dict) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
