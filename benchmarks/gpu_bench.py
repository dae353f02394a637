#!/usr/bin/env python3
"""GPU against CPU, side by side: passage embedding, FAISS index build, search QPS and recall@10.

Embedding: BEIR SciFact abstracts (title and text, cut at the model's max_seq_length) through
rag's Embedder: on the CPU as rag picks it (OpenVINO or ONNX Runtime, bf16 where the CPU has it
natively, else fp32; batch 16), and on CUDA with torch in fp32 and fp16 (rag's pick, batch 128),
and fp16 at batch 512. Passages/s excludes model loading (and the one-off ONNX export).

Indexes: through rag's own VectorIndex (what `rag index` builds) on the CPU and on the GPU:
Flat and IVF (nlist scaled to the corpus: 1024 at a million vectors), searched at rag's nprobe
and four times it; and CAGRA (cuVS), where the installed faiss has it, built on the GPU and
searched there, and also searched on the CPU as the HNSW graph it is saved as (IndexHNSWCagra).
Build is train + add (one call each); save is the copy back to the CPU plus write_index. QPS: all
queries in one batch, best of several runs; 1-query ms: p50 of single-query searches, as rag
serves them. recall@10 is against the exact answer, the CPU Flat index's.

The index vectors are the SciFact passage vectors and, past those, synthetic ones (normalized
mixes of two real vectors plus noise) up to --vectors; the output says how many of each.
Queries are SciFact's claims, embedded like rag embeds questions.

Where no CUDA device is seen the script says so; with --quick or --cpu-only it then measures the
CPU side alone (small sizes with --quick: well under a minute on 2 cores), otherwise it exits 0
at once. Data is read from ../shared/datasets (or $RAG_DATASETS). The tables go to stdout and,
unless --no-record, to docs/benchmarks.md.

    python3 benchmarks/gpu_bench.py                          # a GPU box: a few minutes
    python3 benchmarks/gpu_bench.py --quick --no-record      # smoke test, any machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO_ROOT))

from benchmark_record import append_section, machine  # noqa: E402

K = 10
SINGLE_QUERIES = 50  # single-query searches timed for the p50


def _scifact() -> Path:
    root = Path(os.environ.get("RAG_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    folder = root / "beir-scifact"
    if not (folder / "corpus.jsonl").is_file():
        raise SystemExit(f"gpu_bench: {folder}/corpus.jsonl not found (set RAG_DATASETS to the folder holding "
                         "beir-scifact/)")
    return folder


def _read(path: Path, limit: int) -> list[str]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            out.append(" ".join(t for t in (record.get("title", ""), record["text"]) if t))
            if len(out) >= limit:
                break
    return out


# -- devices ---------------------------------------------------------------------------------


def _torch_cuda() -> bool:
    """rag's own test: an NVIDIA device node, then torch.cuda (torch is not imported without one)."""
    from rag.embed import resolve_device

    return resolve_device("auto").startswith("cuda")


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return "; ".join(line.strip() for line in out.stdout.strip().splitlines())
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown NVIDIA GPU"


def _cagra_available(faiss: Any) -> bool:
    """GpuIndexCagra exists only in faiss-gpu builds with cuVS (faiss's own tests check the same)."""
    return hasattr(faiss, "GpuIndexCagra") and "CUVS" in faiss.get_compile_options()


# -- embedding -------------------------------------------------------------------------------


def _embedder(overrides: dict[str, Any]) -> Any:
    from rag import Settings
    from rag.embed import Embedder

    embedder = Embedder(Settings.load(overrides=overrides, environ={}).embedding)
    embedder.warm_up()
    return embedder


def _embed_rate(label: str, overrides: dict[str, Any], texts: list[str]) -> tuple[dict[str, Any], Any, np.ndarray]:
    embedder = _embedder(overrides)
    embedder.embed_passages(texts[:64])  # first kernels, allocator and thread pools warm
    started = time.perf_counter()
    vectors = embedder.embed_passages(texts)
    seconds = time.perf_counter() - started
    row = {"label": label, "backend": embedder.backend, "precision": embedder.precision,
           "batch": embedder.batch_size, "passages": len(texts), "seconds": seconds,
           "rate": len(texts) / seconds}
    print(f"  embed {label}: {row['rate']:,.0f} passages/s ({embedder.backend}, {embedder.precision}, "
          f"batch {embedder.batch_size}, {len(texts):,} passages)", flush=True)
    return row, embedder, vectors


def _free_cuda() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# -- vectors ---------------------------------------------------------------------------------


def _tile(real: np.ndarray, total: int, seed: int = 0) -> np.ndarray:
    """The real vectors, then synthetic ones: normalized 0.6 a + 0.4 b + noise of two real ones."""
    if total <= len(real):
        return np.ascontiguousarray(real[:total], dtype=np.float32)
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    out = np.empty((total, d), dtype=np.float32)
    out[: len(real)] = real
    step = 100_000
    for start in range(len(real), total, step):
        n = min(step, total - start)
        a = real[rng.integers(0, len(real), n)]
        b = real[rng.integers(0, len(real), n)]
        x = 0.6 * a + 0.4 * b + rng.standard_normal((n, d), dtype=np.float32) * (0.5 / math.sqrt(d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + n] = x
    return out


def _nlist(n: int) -> int:
    """A power of two near sqrt(n), between 16 and 1024: IVF1024 at a million vectors."""
    return int(min(1024, max(16, 2 ** round(math.log2(max(1.0, math.sqrt(n)))))))


# -- timing ----------------------------------------------------------------------------------


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def _best_run(fn: Callable[[], Any], budget_s: float = 1.0, max_runs: int = 10) -> tuple[Any, float]:
    """(result, seconds of the fastest run): runs until `budget_s` is spent, at least once."""
    result, best = _timed(fn)
    spent, runs = best, 1
    while spent < budget_s and runs < max_runs:
        result, seconds = _timed(fn)
        best, spent, runs = min(best, seconds), spent + seconds, runs + 1
    return result, best


def _single_query_ms(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> float:
    times = []
    for q in queries[:SINGLE_QUERIES]:
        _, seconds = _timed(lambda q=q: search(q[None, :]))
        times.append(seconds * 1000)
    return statistics.median(times)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / len(t) for f, t in zip(found, truth)]))


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20


# -- indexes ---------------------------------------------------------------------------------


def _rag_index(factory: str, base: np.ndarray, use_gpu: bool, train_sample: int, path: Path) -> dict[str, Any]:
    """Build through rag's VectorIndex (train, add), time the save through the CPU copy."""
    from rag.index.vectors import VectorIndex

    ids = np.arange(len(base), dtype=np.int64)

    def build() -> Any:
        index = VectorIndex.create(factory, base.shape[1], use_gpu=use_gpu)
        if use_gpu and not index.on_gpu:
            raise RuntimeError(f"{factory} did not go to the GPU")
        if not index.is_trained:
            index.train(base[:train_sample])
        index.add(base, ids)
        return index

    index, build_s = _timed(build)
    _, save_s = _timed(lambda: index.save(path))
    return {"index": index, "build_s": build_s, "save_s": save_s, "mb": _file_mb(path)}


def _measure(search: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], queries: np.ndarray,
             truth: np.ndarray | None, warm: bool) -> dict[str, Any]:
    if warm:
        search(queries[: min(len(queries), 32)])
    (_, found), batch_s = _best_run(lambda: search(queries))
    return {"qps": len(queries) / batch_s, "one_ms": _single_query_ms(search, queries),
            "recall": _recall(found, truth) if truth is not None else 1.0, "found": found}


def _cagra(faiss: Any, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, degree: int, itopk: int,
           ef_search: int, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """CAGRA built and searched on the GPU; then copied to a CPU IndexHNSWCagra (how it is saved,
    and the only way a CPU reads it), written, and searched there. Positions are the ids."""
    res = faiss.StandardGpuResources()
    config = faiss.GpuIndexCagraConfig()
    config.graph_degree = degree
    config.intermediate_graph_degree = 2 * degree
    gpu = faiss.GpuIndexCagra(res, base.shape[1], faiss.METRIC_INNER_PRODUCT, config)
    _, build_s = _timed(lambda: gpu.train(base))  # train() builds the graph over these vectors
    params = faiss.SearchParametersCagra()
    params.itopk_size = max(itopk, K)
    gpu_side = _measure(lambda q: gpu.search(q, K, params=params), queries, truth, warm=True)
    cpu_index = faiss.IndexHNSWCagra()

    def save() -> None:
        gpu.copyTo(cpu_index)  # base_level_only stays False: upper levels are built, adds stay possible
        faiss.write_index(cpu_index, str(path))

    _, save_s = _timed(save)
    gpu_side.update(build_s=build_s, save_s=save_s, mb=_file_mb(path))
    del gpu, res
    cpu_index.hnsw.efSearch = ef_search
    cpu_side = _measure(lambda q: cpu_index.search(q, K), queries, truth, warm=True)
    cpu_side.update(build_s=None, save_s=None, mb=None)
    return gpu_side, cpu_side


# -- table -----------------------------------------------------------------------------------


def _pair(cpu: float | None, gpu: float | None, fmt: str) -> str:
    def one(v: float | None) -> str:
        return "—" if v is None else format(v, fmt)

    return f"{one(cpu)} / {one(gpu)}"


def _row(label: str, cpu: dict[str, Any] | None, gpu: dict[str, Any] | None) -> str:
    c, g = cpu or {}, gpu or {}
    return (f"| {label} | {_pair(c.get('build_s'), g.get('build_s'), '.2f')} | "
            f"{_pair(c.get('save_s'), g.get('save_s'), '.2f')} | {_pair(c.get('qps'), g.get('qps'), ',.0f')} | "
            f"{_pair(c.get('one_ms'), g.get('one_ms'), '.2f')} | {_pair(c.get('recall'), g.get('recall'), '.3f')} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vectors", type=int, default=1_000_000, help="index size (SciFact vectors, then synthetic)")
    p.add_argument("--queries", type=int, default=1000, help="SciFact claims searched (at most 1,109)")
    p.add_argument("--passages", type=int, default=5183, help="SciFact abstracts embedded (at most 5,183)")
    p.add_argument("--cpu-passages", type=int, default=1000, help="of those, embedded on the CPU for its rate")
    p.add_argument("--graph-degree", type=int, default=32, help="CAGRA graph degree (HNSW M = half of it)")
    p.add_argument("--itopk", type=int, default=64, help="CAGRA search breadth (itopk_size)")
    p.add_argument("--cpu-hnsw", action="store_true", help="also build HNSW on the CPU, M = half the graph degree (minutes at 1M vectors)")
    p.add_argument("--cpu-only", action="store_true", help="measure the CPU side alone, even with a GPU")
    p.add_argument("--quick", action="store_true",
                   help="smoke-test sizes: 300 passages (100 on the CPU), 10,000 vectors, 100 queries")
    p.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args()
    if args.quick:
        args.vectors, args.queries, args.passages = min(args.vectors, 10_000), min(args.queries, 100), \
            min(args.passages, 300)
        args.cpu_passages = min(args.cpu_passages, 100)
        args.cpu_hnsw = True

    started = dt.datetime.now(dt.timezone.utc)
    import faiss

    from rag import Settings
    from rag.index.faisslib import gpu_count

    cuda_embed = not args.cpu_only and _torch_cuda()
    faiss_gpu = not args.cpu_only and gpu_count() > 0
    cagra = faiss_gpu and _cagra_available(faiss)
    if not (cuda_embed or faiss_gpu):
        why = "--cpu-only" if args.cpu_only else (
            "NO CUDA DEVICE: neither torch nor faiss sees a GPU here "
            f"(faiss {faiss.__version__}, GPU functions: {'yes' if hasattr(faiss, 'StandardGpuResources') else 'no, faiss-cpu'})")
        print(f"gpu_bench: {why}; the GPU columns stay empty.", flush=True)
        if not (args.quick or args.cpu_only):
            print("gpu_bench: nothing to compare; run on a CUDA machine, or with --quick / --cpu-only to measure "
                  "the CPU side alone.")
            return 0
    else:
        if not cuda_embed:
            print("gpu_bench: torch sees no CUDA device: embeddings on the CPU only", flush=True)
        if not faiss_gpu:
            print("gpu_bench: faiss sees no GPU (faiss-cpu installed?): indexes on the CPU only", flush=True)
        elif not cagra:
            print("gpu_bench: this faiss has no GpuIndexCagra (no cuVS): no CAGRA rows", flush=True)

    scifact = _scifact()
    texts = _read(scifact / "corpus.jsonl", args.passages)
    claims = _read(scifact / "queries.jsonl", args.queries)
    settings = Settings.load(environ={})

    # -- embedding --------------------------------------------------------------------------
    print(f"embedding ({len(texts):,} SciFact abstracts; {min(args.cpu_passages, len(texts)):,} on the CPU)", flush=True)
    embed_rows = []
    row, cpu_embedder, cpu_vectors = _embed_rate("CPU (rag's pick)", {"embedding.device": "cpu"},
                                                 texts[: args.cpu_passages])
    embed_rows.append(row)
    query_embedder, passage_vectors = cpu_embedder, cpu_vectors
    if cuda_embed:
        variants = [("GPU fp32", {"embedding.precision": "fp32"}), ("GPU fp16 (rag's pick)", {}),
                    ("GPU fp16, batch 512", {"embedding.batch_size": 512})]
        for label, extra in variants:
            row, embedder, vectors = _embed_rate(label, {"embedding.device": "cuda", **extra}, texts)
            embed_rows.append(row)
            if label.startswith("GPU fp16 (rag"):
                query_embedder, passage_vectors = embedder, vectors
            else:
                del embedder
                _free_cuda()
    else:
        passage_vectors = cpu_vectors
    queries = query_embedder.embed_queries(claims)
    del cpu_embedder
    cpu_rate = embed_rows[0]["rate"]
    embed_table = ["| embedding | backend | precision | batch | passages | passages/s | × CPU |",
                   "|---|---|---|---:|---:|---:|---:|"]
    embed_table += [f"| {r['label']} | {r['backend']} | {r['precision']} | {r['batch']} | {r['passages']:,} | "
                    f"{r['rate']:,.0f} | {r['rate'] / cpu_rate:.1f} |" for r in embed_rows]

    # -- indexes ----------------------------------------------------------------------------
    base = _tile(passage_vectors, args.vectors)
    real = min(len(passage_vectors), len(base))
    nlist = _nlist(len(base))
    ivf = f"IVF{nlist},Flat"
    train_sample = min(len(base), settings.index.train_sample)
    nprobes = [settings.index.nprobe, 4 * settings.index.nprobe]
    print(f"indexes: {len(base):,} vectors ({real:,} SciFact, {len(base) - real:,} synthetic), d={base.shape[1]}, "
          f"{len(queries):,} queries, k={K}", flush=True)
    index_rows: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        path = Path(tmp) / "vectors.faiss"

        def run(factory: str, use_gpu: bool, truth: np.ndarray | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
            where = "GPU" if use_gpu else "CPU"
            built = _rag_index(factory, base, use_gpu, train_sample, path)
            index = built.pop("index")
            probes = nprobes if factory.startswith("IVF") else [settings.index.nprobe]
            searched = []
            for nprobe in probes:
                def search(q: np.ndarray, nprobe: int = nprobe) -> tuple[np.ndarray, np.ndarray]:
                    return index.search(q, K, nprobe, settings.index.hnsw_ef_search)

                searched.append(_measure(search, queries, truth, warm=use_gpu))
            print(f"  {factory} {where}: build {built['build_s']:.2f} s, save {built['save_s']:.2f} s, "
                  + ", ".join(f"{s['qps']:,.0f} QPS recall {s['recall']:.3f}" for s in searched), flush=True)
            del index
            _free_cuda()
            path.unlink(missing_ok=True)
            return built, searched

        def run_gpu(factory: str, truth: np.ndarray, probes: int) -> tuple[dict[str, Any] | None, list[Any]]:
            """The GPU side, or empty cells and a note where this faiss cannot build it there."""
            if not faiss_gpu:
                return None, [None] * probes
            try:
                return run(factory, True, truth)
            except (AttributeError, RuntimeError) as exc:
                notes.append(f"{factory} on the GPU failed: {(str(exc).splitlines() or [''])[-1]}")
                print(f"  {factory} GPU failed: {exc}", flush=True)
                path.unlink(missing_ok=True)
                _free_cuda()
                return None, [None] * probes

        # Flat on the CPU first: its answers are the exact ones every recall is measured against.
        flat_cpu, (flat_cpu_search,) = run("Flat", False, None)
        truth = flat_cpu_search["found"]
        flat_gpu, flat_gpu_search = run_gpu("Flat", truth, 1)
        index_rows.append(_row("Flat (exact)", {**flat_cpu, **flat_cpu_search},
                               {**flat_gpu, **flat_gpu_search[0]} if flat_gpu else None))

        ivf_cpu, ivf_cpu_search = run(ivf, False, truth)
        ivf_gpu, ivf_gpu_search = run_gpu(ivf, truth, len(nprobes))
        for nprobe, c, g in zip(nprobes, ivf_cpu_search, ivf_gpu_search):
            index_rows.append(_row(f"{ivf}, nprobe {nprobe}", {**ivf_cpu, **c}, {**ivf_gpu, **g} if g else None))

        if args.cpu_hnsw:
            m = max(2, args.graph_degree // 2)
            hnsw_cpu, (hnsw_search,) = run(f"HNSW{m}", False, truth)
            index_rows.append(_row(f"HNSW{m} (efSearch {settings.index.hnsw_ef_search}), CPU build",
                                   {**hnsw_cpu, **hnsw_search}, None))
        if cagra:
            try:
                gpu_side, cpu_side = _cagra(faiss, base, queries, truth, args.graph_degree, args.itopk,
                                            settings.index.hnsw_ef_search, path)
                index_rows.append(_row(f"CAGRA graph {args.graph_degree} (GPU itopk {args.itopk}; CPU: its "
                                       f"HNSW copy, efSearch {settings.index.hnsw_ef_search})", cpu_side, gpu_side))
                print(f"  CAGRA: GPU build {gpu_side['build_s']:.2f} s, {gpu_side['qps']:,.0f} QPS recall "
                      f"{gpu_side['recall']:.3f}; CPU HNSW copy {cpu_side['qps']:,.0f} QPS recall "
                      f"{cpu_side['recall']:.3f}", flush=True)
            except (AttributeError, RuntimeError) as exc:
                notes.append(f"CAGRA failed: {(str(exc).splitlines() or [''])[-1]}")
                print(f"  CAGRA failed: {exc}", flush=True)
            path.unlink(missing_ok=True)
        elif faiss_gpu:
            notes.append("CAGRA: not in this faiss build (no cuVS)")

    index_table = ["| index | build s (CPU / GPU) | save s (CPU / GPU) | QPS, one batch (CPU / GPU) | "
                   "1-query ms p50 (CPU / GPU) | recall@10 (CPU / GPU) |",
                   "|---|---:|---:|---:|---:|---:|"] + index_rows
    text = "\n".join(embed_table) + "\n\n" + "\n".join(index_table)
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    print()
    print(text)

    gpu_words = _gpu_name() if (cuda_embed or faiss_gpu) else "none"
    bullets = [
        f"Machine: {machine()}, GPU: {gpu_words}; faiss {faiss.__version__} "
        f"({'GPU' if faiss_gpu else 'CPU'} build{', cuVS' if cagra else ''})" + (" (--cpu-only)" if args.cpu_only else ""),
        (f"Embedding: {len(texts):,} SciFact abstracts on the GPU, the first {embed_rows[0]['passages']:,} on the CPU "
         if cuda_embed else f"Embedding: {embed_rows[0]['passages']:,} SciFact abstracts on the CPU ")
        + "(model loading excluded)",
        f"Index: {len(base):,} vectors of {base.shape[1]} dimensions: {real:,} SciFact passage vectors and "
        f"{len(base) - real:,} synthetic ones (normalized 0.6 a + 0.4 b + noise of two real vectors); {len(queries):,} "
        f"SciFact claims as queries, k={K}; built through rag's VectorIndex (IVF trained on {train_sample:,})",
        "Recall@10 against the CPU Flat index; QPS: all queries in one search call, best run; 1-query ms: p50 of "
        f"{min(SINGLE_QUERIES, len(queries))} single-query searches; save: the copy back to the CPU plus write_index",
    ]
    command = "python3 benchmarks/gpu_bench.py" + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:] if a != "--no-record")
    if os.environ.get("RAG_DATASETS"):
        command = f"RAG_DATASETS={shlex.quote(os.environ['RAG_DATASETS'])} {command}"
    bullets.append(f"Reproduce: `{command}`")
    if not args.no_record:
        title = "GPU against CPU: embedding, FAISS build, search" + ("" if (cuda_embed or faiss_gpu) else " (CPU side only)")
        append_section(title, started, bullets, text)
        print(f"\nrecorded in {Path('docs') / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
