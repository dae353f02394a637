#!/usr/bin/env python3
"""What one write costs: adding one document and deleting one, on indexes of 10,000, 100,000 and
1,000,000 chunks, before and after merges; and SciFact written as 10 segments against one.

Part 1 builds each index in one write through the library's IndexWriter, with SciFact passages
as chunk texts (cycled, each with a distinct suffix) and synthetic unit vectors (embedding a
million chunks would take this CPU two hours; what is measured here is the writing). Then, on
each index, through the Engine as `rag index` and `rag delete` run it:
  - add one document (a real file, really embedded) and delete one: seconds (total, and without
    the embedding), and bytes the process caused to be written to storage (/proc/self/io
    write_bytes, which counts at page-dirtying time, so fsynced or not);
  - single-document writes until the writer merges segments (index.max_segments, 8), and that
    write's cost;
  - `rag compact` (everything merged into one segment), then one add and one delete again.
Targets (issue 16): an add or a delete writes under 5 MB at 10,000 chunks and under 10 MB at
1,000,000, in under 1 s excluding embedding.

Part 2 indexes SciFact's 5,183 abstracts once in one write and once in 10 writes of about 520
(index.max_segments 10, so no merge), and reports nDCG@10 and hybrid search p50/p95 of both.

    python3 benchmarks/write_bench.py                        # 10k, 100k, 1M, and SciFact
    python3 benchmarks/write_bench.py --sizes 10000 --no-scifact --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmark_record import append_section, machine
from rag import Engine, Settings
from rag.evaluate.metrics import percentile
from rag.indexing import chunking_identity
from rag.records import Chunk, Document

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT.parent / "shared" / "datasets"


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def measured(action: Callable[[], Any]) -> tuple[Any, float, int]:
    """(result, seconds, bytes written to storage) of one action."""
    before, started = write_bytes(), time.perf_counter()
    result = action()
    return result, time.perf_counter() - started, write_bytes() - before


def passages(words: int = 40) -> list[str]:
    out = []
    with (DATA / "beir-scifact" / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            tokens = json.loads(line)["text"].split()
            out.extend(" ".join(tokens[i:i + words]) for i in range(0, len(tokens), words) if len(tokens[i:i + words]) > 10)
    return out


def build(engine: Engine, n: int, texts: list[str], batch: int = 20_000) -> float:
    """An index of `n` one-chunk documents in one write, with synthetic unit vectors."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    dimension = engine.embedder.dimension
    with engine.store.open_writer(engine.embedder.identity(), chunking_identity(engine.settings, engine.embedder)) \
            as writer:
        for start in range(0, n, batch):
            vectors = rng.standard_normal((min(batch, n - start), dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for offset, vector in enumerate(vectors):
                i = start + offset
                text = f"{texts[i % len(texts)]} (record {i})"
                document = Document(f"r{i}", [], {"source": "synthetic.jsonl", "title": f"r{i}", "format": "record",
                                                  "sha256": hashlib.sha256(text.encode()).hexdigest()}, origin="stream")
                writer.put_document(document, "default", [Chunk(f"r{i}", 0, text, text, {})], vector[None, :])
            print(f"  built {start + len(vectors):,} of {n:,}", file=sys.stderr, flush=True)
    return time.perf_counter() - started


def one_file(folder: Path, i: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"new-{i:04d}.txt"
    path.write_text(f"Memo {i}: the freight elevator in hall {i % 5} is serviced on Tuesday {i}.\n", encoding="utf-8")
    return path


def add(engine: Engine, folder: Path, i: int) -> dict[str, Any]:
    path = one_file(folder, i)
    report, seconds, nbytes = measured(lambda: engine.index([path]))
    embed = report.stages.get("embed", 0.0)
    return {"seconds": seconds, "without_embedding": seconds - embed, "bytes": nbytes}


def delete(engine: Engine, doc_id: str) -> dict[str, Any]:
    (deleted, _), seconds, nbytes = measured(lambda: engine.delete([doc_id]))
    assert deleted == [doc_id], doc_id
    return {"seconds": seconds, "without_embedding": seconds, "bytes": nbytes}


def row(size: int, what: str, m: dict[str, Any], segments: int) -> str:
    return (f"| {size:,} | {what} | {m['seconds']:.3f} | {m['without_embedding']:.3f} | "
            f"{m['bytes'] / 2**20:.2f} | {segments} |")


def size_section(size: int, texts: list[str], work: Path) -> list[str]:
    index = work / f"index-{size}"
    settings = Settings.load(overrides={"index.path": str(index)})
    engine = Engine(settings)
    engine.embedder.warm_up()
    print(f"building {size:,} chunks", file=sys.stderr, flush=True)
    seconds = build(engine, size, texts)
    info = engine.info()
    rows = []
    print(f"  built in {seconds:.0f} s, {info['disk_bytes'] / 2**20:.0f} MB", file=sys.stderr, flush=True)
    files = work / f"files-{size}"
    add(engine, files, 0)  # the first write also loads the reader and compiles the encoder
    engine.delete(["new-0000.txt"])
    segments = lambda: len(engine.info()["segments"])  # noqa: E731
    rows.append(row(size, "add one document", add(engine, files, 1), segments()))
    rows.append(row(size, "delete one document (of the big segment)", delete(engine, "r17"), segments()))
    rows.append(row(size, "delete one document (of a small segment)", delete(engine, "new-0001.txt"), segments()))
    i = 2
    while True:  # single adds until one of them merges segments
        before = segments()
        m = add(engine, files, i)
        i += 1
        if segments() <= before:
            rows.append(row(size, f"add one document, merging ({before} segments before)", m, segments()))
            break
    (dropped, seconds_, nbytes) = measured(engine.compact)
    rows.append(row(size, f"rag compact (all into one, {dropped} dead vectors dropped)",
                    {"seconds": seconds_, "without_embedding": seconds_, "bytes": nbytes}, segments()))
    rows.append(row(size, "add one document, after compaction", add(engine, files, i), segments()))
    rows.append(row(size, "delete one document, after compaction", delete(engine, "r18"), segments()))
    assert engine.check() == [], engine.check()
    rows.insert(0, f"| {size:,} | built in one write (synthetic vectors) | {seconds:.1f} | | "
                   f"{info['disk_bytes'] / 2**20:.1f} on disk | 1 |")
    for r in rows:
        print(r, flush=True)
    engine.close()
    shutil.rmtree(index, ignore_errors=True)
    return rows


def scifact_section(work: Path) -> list[str]:
    from rag.evaluate.datasets import EvalQuestion, read_beir
    from rag.evaluate.run import _records, evaluate

    data = read_beir(DATA / "beir-scifact", "test")
    documents = list(data.documents())
    questions = [EvalQuestion(qid, text) for qid, text in data.queries.items()]
    qrels = {q.qid: data.qrels[q.qid] for q in questions}
    stages = ("embed", "search", "bm25", "fuse", "fetch")
    rows = ["| index | segments | write s | nDCG@10 | hybrid search p50 ms | p95 ms | " +
            " | ".join(f"{s} p50 ms" for s in stages) + " |", "|---|---:|---:|---:|---:|---:|" + "---:|" * len(stages)]
    for label, parts in (("one write", 1), ("10 writes of ~520 abstracts", 10)):
        settings = Settings.load(overrides={"index.path": str(work / f"scifact-{parts}"), "index.max_segments": 10})
        engine = Engine(settings)
        started = time.perf_counter()
        size = -(-len(documents) // parts)
        for start in range(0, len(documents), size):
            engine.index_jsonl(_records(documents[start:start + size]), "beir-scifact/corpus.jsonl")
        written = time.perf_counter() - started
        segments = len(engine.info()["segments"])
        ndcg = evaluate(engine, "SciFact test", [q for q in questions if q.qid in qrels], qrels, None, 10) \
            .retrieval["ndcg@10"]
        texts = [q.question for q in questions]
        for q in texts[:5]:
            engine.search_many([q], 10)
        spent, per_stage = [], {stage: [] for stage in stages}
        for q in texts:
            timings: dict[str, float] = {}
            started = time.perf_counter()
            engine.search_many([q], 10, timings=timings)
            spent.append(time.perf_counter() - started)
            for stage in stages:
                per_stage[stage].append(timings.get(stage, 0.0))
        rows.append(f"| {label} | {segments} | {written:.1f} | {ndcg:.4f} | {1000 * percentile(spent, 50):.2f} | "
                    f"{1000 * percentile(spent, 95):.2f} | "
                    + " | ".join(f"{1000 * percentile(per_stage[s], 50):.2f}" for s in stages) + " |")
        print(rows[-1], flush=True)
        assert engine.check() == []
        engine.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts, comma-separated")
    parser.add_argument("--no-scifact", action="store_true", help="skip SciFact in 1 and 10 segments")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = parser.parse_args()
    if not (DATA / "beir-scifact").is_dir():
        print(f"needs {DATA / 'beir-scifact'} (../shared/datasets)", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    texts = passages()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    body = ["| chunks | write | seconds | seconds without embedding | MB written | segments after |",
            "|---:|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="write-bench-", dir=REPO_ROOT / "indexes") as tmp:
        work = Path(tmp)
        for size in sizes:
            body.extend(size_section(size, texts, work))
        scifact = [] if args.no_scifact else scifact_section(work)
    text = "\n".join(body)
    if scifact:
        text += "\n\nSciFact (5,183 abstracts, 300 test claims) written in one write and in 10, searched the same:\n\n" \
            + "\n".join(scifact)
    text += ("\n\nMB written: bytes the process caused to be written to storage during that one call "
             "(/proc/self/io write_bytes). The add writes a new segment (its SQLite rows, vector and BM25 postings) "
             "and a manifest; the delete writes a segment holding only tombstones. Seconds without embedding: "
             "the call's time less its report's embed stage. A write also deletes the segments that no kept "
             "version names any more (index.keep_versions 1): the first add after `rag compact` removes the "
             "segments compaction replaced, which at a million chunks is 2.6 GB of files to unlink.")
    if not args.no_record:
        append_section("Write cost by index size, and SciFact in segments", started, [
            f"Machine: {machine()}; rag defaults (Flat index, index.max_segments 8)",
            "Reproduce: `python3 benchmarks/write_bench.py`"], text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
