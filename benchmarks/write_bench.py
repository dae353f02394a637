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
(index.max_segments 10, so no merge), copies the one-write index byte for byte, and reports
nDCG@10 and hybrid search p50/p95 of the three, each test claim searched on the three in turn
(side by side, so that the machine's own swings fall on all alike); the copy's difference from
the original is the noise the 10-segment index's difference is read against.

    python3 benchmarks/write_bench.py                        # 10k, 100k, 1M, and SciFact
    python3 benchmarks/write_bench.py --sizes 10000 --no-scifact --no-record
    python3 benchmarks/write_bench.py --sizes ""             # SciFact alone
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
    print(f"  built in {seconds:.0f} s, {info.disk_bytes / 2**20:.0f} MB", file=sys.stderr, flush=True)
    files = work / f"files-{size}"
    add(engine, files, 0)  # the first write also loads the reader and compiles the encoder
    engine.delete(["new-0000.txt"])
    segments = lambda: len(engine.info().segments)  # noqa: E731
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
    assert engine.check().problems == [], engine.check().problems
    rows.insert(0, f"| {size:,} | built in one write (synthetic vectors) | {seconds:.1f} | | "
                   f"{info.disk_bytes / 2**20:.1f} on disk | 1 |")
    for r in rows:
        print(r, flush=True)
    engine.close()
    shutil.rmtree(index, ignore_errors=True)
    return rows


def reader_open(engine: Engine, times: int = 5) -> float:
    """Median seconds to open a reader on the live version, its segments already loaded."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        engine.store.open_reader().close()
        spent.append(time.perf_counter() - started)
    return percentile(spent, 50)


ONE, COPY, TEN = "one write", "a byte-for-byte copy of the one-write index", "10 writes of ~520 abstracts"


def scifact_section(work: Path, rounds: int) -> list[str]:
    from rag.evaluate.datasets import EvalQuestion, read_beir
    from rag.evaluate.run import _records, evaluate

    data = read_beir(DATA / "beir-scifact", "test")
    documents = list(data.documents())
    questions = [EvalQuestion(qid, text) for qid, text in data.queries.items()]
    qrels = {q.qid: data.qrels[q.qid] for q in questions}
    engines: dict[str, Engine] = {}
    written: dict[str, float] = {}
    for label, parts in ((ONE, 1), (TEN, 10)):
        path = work / f"scifact-{parts}"
        # One embedding model for all, so that the indexes differ in nothing else.
        shared = {"embedder": engines[ONE].embedder} if engines else {}
        engine = Engine(Settings.load(overrides={"index.path": str(path), "index.max_segments": 10}), **shared)
        started = time.perf_counter()
        size = -(-len(documents) // parts)
        for start in range(0, len(documents), size):
            engine.index_jsonl(_records(documents[start:start + size]), "beir-scifact/corpus.jsonl")
        written[label] = time.perf_counter() - started
        engines[label] = engine
        if parts == 1:
            # The same files again: how far two identical indexes' latencies differ is the noise.
            shutil.copytree(path, work / "scifact-1-copy")
            engines[COPY] = Engine(Settings.load(overrides={
                "index.path": str(work / "scifact-1-copy"), "index.max_segments": 10}), embedder=engine.embedder)
    texts = [q.question for q in questions]
    stages = ("embed", "search", "bm25", "fuse", "fetch")
    spent: dict[str, list[float]] = {label: [] for label in engines}
    per_stage = {label: {stage: [] for stage in stages} for label in engines}
    round_p50: dict[str, list[float]] = {label: [] for label in engines}
    for engine in engines.values():
        for q in texts[:5]:
            engine.search_many([q], 10)
    labels = list(engines)
    for n in range(rounds):
        this_round: dict[str, list[float]] = {label: [] for label in engines}
        for i, q in enumerate(texts):
            # Side by side, each question in turn on every index, in an order that rotates, so
            # that what else the machine does falls on all of them alike.
            shift = (i + n) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                timings: dict[str, float] = {}
                started = time.perf_counter()
                engines[label].search_many([q], 10, timings=timings)
                this_round[label].append(time.perf_counter() - started)
                for stage in stages:
                    per_stage[label][stage].append(timings.get(stage, 0.0))
        for label, seconds in this_round.items():
            spent[label].extend(seconds)
            round_p50[label].append(percentile(seconds, 50))
    rows = ["| index | segments | write s | open ms | nDCG@10 | hybrid search p50 ms | p95 ms | p50 of each round ms | " +
            " | ".join(f"{s} p50 ms" for s in stages) + " |",
            "|---|---:|---:|---:|---:|---:|---:|---|" + "---:|" * len(stages)]
    for label, engine in engines.items():
        ndcg = evaluate(engine, "SciFact test", [q for q in questions if q.qid in qrels], qrels, None, 10) \
            .retrieval["ndcg@10"]
        write = f"{written[label]:.1f}" if label in written else "—"
        rows.append(f"| {label} | {len(engine.info().segments)} | {write} | {1000 * reader_open(engine):.0f} | "
                    f"{ndcg:.4f} | "
                    f"{1000 * percentile(spent[label], 50):.2f} | {1000 * percentile(spent[label], 95):.2f} | "
                    + ", ".join(f"{1000 * p:.2f}" for p in round_p50[label]) + " | "
                    + " | ".join(f"{1000 * percentile(per_stage[label][s], 50):.2f}" for s in stages) + " |")
        print(rows[-1], flush=True)
        assert engine.check().problems == []
    one, ten = percentile(spent[ONE], 50), percentile(spent[TEN], 50)
    copy = percentile(spent[COPY], 50)
    rows.append(f"\n10 segments against one: {1000 * (ten - one):+.2f} ms at p50 ({100 * (ten / one - 1):+.1f}%); "
                f"the two identical one-segment indexes differ by {1000 * abs(copy - one):.2f} ms "
                f"({100 * abs(copy / one - 1):.1f}%). {rounds} rounds of the {len(texts)} test claims, each claim on "
                "the three indexes in turn.")
    print(rows[-1], flush=True)
    for engine in engines.values():
        engine.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="chunk counts, comma-separated")
    parser.add_argument("--no-scifact", action="store_true", help="skip SciFact in 1 and 10 segments")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of SciFact's test claims over the indexes")
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
        scifact = [] if args.no_scifact else scifact_section(work, args.rounds)
    parts = []
    if sizes:
        parts.append("\n".join(body) + (
            "\n\nMB written: bytes the process caused to be written to storage during that one call "
            "(/proc/self/io write_bytes). The add writes a new segment (its SQLite rows, vector and BM25 postings) "
            "and a manifest; the delete writes a segment holding only tombstones. Seconds without embedding: "
            "the call's time less its report's embed stage. A write also deletes the segments that no kept "
            "version names any more (index.keep_versions 1): the first add after `rag compact` removes the "
            "segments compaction replaced, which at a million chunks is 2.6 GB of files to unlink."))
    if scifact:
        parts.append("SciFact (5,183 abstracts, 300 test claims) written in one write and in 10, searched side by "
                     "side:\n\n" + "\n".join(scifact) + (
                         "\n\nThe three indexes share one embedding model, which keeps the vectors of recent "
                         "queries: a claim is embedded once, by the index that meets it first (the order rotates), "
                         "so the p50 is the indexes' own work and the p95 includes the embedding. Open: a reader "
                         "opening the version once its segments are loaded (what a server does after each "
                         "write), which for small segments includes copying their rows, vectors and postings "
                         "together (median of 5)."))
    text = "\n\n".join(parts)
    if not args.no_record:
        append_section("Write cost by index size, and SciFact in segments", started, [
            f"Machine: {machine()}; rag defaults (Flat index, index.max_segments 8)",
            "Reproduce: `python3 benchmarks/write_bench.py`"], text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
