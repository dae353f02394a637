#!/usr/bin/env python3
"""The default generator's runtimes side by side on this CPU: OpenVINO GenAI on the GGUF, and
torch on weights de-quantized once (bf16 where the CPU has native bf16, fp32 elsewhere).

Each runtime runs in a process of its own, one after the other, over the same sample-corpus
index (built once with rag's defaults into a temporary folder), so that its memory is its own:
- answers: the 80 answerable and 28 unanswerable sample questions asked one at a time, streamed
  as `rag ask` and the service do (scores as `rag eval qa --answers`; p50/p95 seconds; first
  streamed token p50);
- throughput: all the answerable questions at once through `Engine.ask_many`, what
  `rag ask --file` does (questions/s);
- resident memory (VmRSS) after the first answer, and its peak (VmHWM);
- load: the generator's load in that process, from the prepared cache (the one-time
  preparation of a fresh install is benchmarks/first_answer_bench.py's).
The answers of the runtimes are compared question by question (how many are the same text).
Then each runtime answers the same 100 SQuAD v1.1 dev questions (seed 0, `--squad N`) over its
paragraphs, in a process of its own: EM, F1, and how many answers are the same text.

The CPU kind (AVX-512 with native bf16, or not) is printed with the record; on a machine of the
other kind, the same command measures that kind. `--emulate-avx2` approximates one on an AVX-512
machine: both runtimes' kernels limited to AVX2 (ONEDNN_MAX_CPU_ISA, OV_CPU_MAX_ISA, ATEN_CPU_CAPABILITY) and
fp32 where they would pick bf16. It is recorded as emulated: the cores, caches and memory are
still this machine's, so it is no substitute for measuring on one.

    python3 benchmarks/cpu_answer_bench.py                      # appended to docs/benchmarks.md
    python3 benchmarks/cpu_answer_bench.py --limit 10 --squad 0 --no-record
    python3 benchmarks/cpu_answer_bench.py --emulate-avx2 --limit 20 --squad 20
    python3 benchmarks/cpu_answer_bench.py --runtimes openvino --squad 0 --set generate.local_focus_sentences=6
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from benchmark_record import RECORD_FILE, append_section, cpu_flags, machine
from rag import Engine, Settings
from rag.evaluate.datasets import read_qa_jsonl
from rag.evaluate.metrics import percentile
from rag.evaluate.run import answer_scores, prepare_squad

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS = REPO_ROOT / "corpora"
SQUAD = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets")) / "squad-v1.1-dev" / "dev-v1.1.json"
RUNTIMES = ("openvino", "torch")
# OV_CPU_MAX_ISA caps OpenVINO's own kernels where the release honours it (openvinotoolkit/openvino#38257).
AVX2_ENVIRONMENT = {"ONEDNN_MAX_CPU_ISA": "AVX2", "OV_CPU_MAX_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
AVX2_SETTINGS = {"generate.local_precision": "fp32", "embedding.precision": "fp32"}


def memory_mb() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MB (/proc/self/status)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def settings_from(pairs: list[str]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, values read as JSON where they parse (numbers, booleans)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


EXTRA: dict[str, Any] = {}  # --set, in a worker


def squad_answers(runtime: str, index: Path, count: int, avx2: bool) -> dict[str, Any]:
    """`count` SQuAD dev questions (seed 0) over its paragraphs, one at a time: EM, F1 and the answers."""
    overrides: dict[str, Any] = {"index.path": str(index), "generate.local_runtime": runtime,
                                 **(AVX2_SETTINGS if avx2 else {}), **EXTRA}
    engine = Engine(Settings.load(overrides=overrides, environ={}))
    questions, _ = prepare_squad(engine, str(SQUAD), count, 0, None)
    pairs, seconds = [], []
    for question in questions:
        started = time.perf_counter()
        pairs.append((question, engine.ask(question.question)))
        seconds.append(time.perf_counter() - started)
    engine.close()
    return {**{f"squad_{k}": v for k, v in answer_scores(pairs).items()}, "squad_p50": percentile(seconds, 50),
            "squad_answers": {q.qid: a.answer for q, a in pairs}}


def worker(runtime: str, index: Path, limit: int | None, avx2: bool) -> dict[str, Any]:
    """One runtime, measured in this process."""
    overrides: dict[str, Any] = {"index.path": str(index), "generate.local_runtime": runtime,
                                 **(AVX2_SETTINGS if avx2 else {}), **EXTRA}
    engine = Engine(Settings.load(overrides=overrides, environ={}))
    started = time.perf_counter()
    generator = engine.answerer().generator
    generator.warm_up()
    load = time.perf_counter() - started  # the generator and the embedder, from their caches
    answerable = read_qa_jsonl(CORPUS / "sample_qa.jsonl")[:limit]
    questions = [*answerable, *read_qa_jsonl(CORPUS / "unanswerable_qa.jsonl")[:limit]]
    pairs, seconds, first, memory = [], [], [], {}
    for i, question in enumerate(questions, start=1):
        started = time.perf_counter()
        *_, answer = engine.ask_stream(question.question)
        seconds.append(time.perf_counter() - started)
        if not memory:
            memory = memory_mb()
        if answer.timings.get("first_token"):
            first.append(answer.timings["first_token"])
        pairs.append((question, answer))
        if i % 20 == 0:
            print(f"[{runtime}] {i}/{len(questions)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    engine.ask_many([q.question for q in answerable])
    throughput = len(answerable) / (time.perf_counter() - started)
    engine.close()
    return {"runtime": runtime, "model": generator.name, "load_s": load, **answer_scores(pairs),
            "p50": percentile(seconds, 50), "p95": percentile(seconds, 95),
            "first_token_p50": percentile(first, 50), "throughput": throughput,
            "rss_after_first_mb": memory["VmRSS"], "peak_mb": memory_mb()["VmHWM"],
            "answers": {q.qid: a.answer for q, a in pairs}}


def run_worker(runtime: str, index: Path, limit: int | None, avx2: bool, squad: int,
               extra: Sequence[str] = ()) -> dict[str, Any]:
    """One runtime in a process of its own (its memory its own); prepared once beforehand. Then,
    with `squad`, that many SQuAD questions in another process (the sample's figures untouched)."""
    environment = {**os.environ, **(AVX2_ENVIRONMENT if avx2 else {})}
    command = [sys.executable, __file__, "--worker", runtime, "--index", str(index)]
    command += ["--emulate-avx2"] if avx2 else []
    command += [f"--set={pair}" for pair in extra]
    subprocess.run([*command, "--limit", "1"], check=True, capture_output=True, env=environment)
    done = subprocess.run([*command, *(["--limit", str(limit)] if limit else [])], check=True, capture_output=True,
                          text=True, env=environment)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if squad:
        done = subprocess.run([*command, "--squad", str(squad), "--squad-index", str(index.parent / "squad")],
                              check=True, capture_output=True, text=True, env=environment)
        result.update(json.loads(done.stdout.strip().splitlines()[-1]))
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| runtime | contains | F1 | refused (answerable) | unanswerable: I don't know | answer p50 / p95 s | "
             "first token p50 s | ask_many q/s | RSS after first answer | peak RSS | load s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        lines.append(f"| {r['runtime']} | {r['contains']:.1%} | {r['F1']:.1f} | {r['refused_answerable']:.1%} | "
                     f"{r['unanswerable_abstained']:.1%} | {r['p50']:.2f} / {r['p95']:.2f} | "
                     f"{r['first_token_p50']:.2f} | {r['throughput']:.2f} | {r['rss_after_first_mb'] / 1024:.2f} GB | "
                     f"{r['peak_mb'] / 1024:.2f} GB | {r['load_s']:.1f} |")
    return "\n".join(lines)


def cpu_kind(avx2: bool = False) -> str:
    if avx2:
        return "AVX2 emulated on an AVX-512 machine: kernels limited to AVX2, fp32"
    flags = set(cpu_flags())
    return "AVX-512 + native bf16" if flags & {"avx512_bf16", "amx_bf16"} else "AVX2 only (no native bf16)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=None, help="the first N questions of each file (default: all)")
    p.add_argument("--no-record", action="store_true", help=f"do not append to {RECORD_FILE.relative_to(REPO_ROOT)}")
    p.add_argument("--emulate-avx2", action="store_true", help="approximate a CPU without AVX-512 and bf16")
    p.add_argument("--worker", choices=RUNTIMES, help=argparse.SUPPRESS)
    p.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--squad", type=int, default=100, help="SQuAD dev questions each runtime answers (0 to skip)")
    p.add_argument("--squad-index", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a setting for both runtimes")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated (default: openvino,torch)")
    args = p.parse_args()
    EXTRA.update(settings_from(args.set))
    if args.worker and args.squad_index:
        print(json.dumps(squad_answers(args.worker, args.squad_index, args.squad, args.emulate_avx2)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.index, args.limit, args.emulate_avx2)))
        return
    started = dt.datetime.now(dt.timezone.utc)
    kind = cpu_kind(args.emulate_avx2)
    print(f"CPU: {machine()} ({kind})", flush=True)
    with tempfile.TemporaryDirectory(prefix="cpu-answer-bench-") as tmp:
        index = Path(tmp) / "index"
        Engine(Settings.load(overrides={"index.path": str(index)}, environ={})).index([CORPUS])
        squad = args.squad if SQUAD.is_file() else 0
        if squad:  # indexed once, here
            prepare_squad(Engine(Settings.load(overrides={"index.path": str(Path(tmp) / "squad")}, environ={})),
                          str(SQUAD), squad, 0, None)
        results = [run_worker(runtime, index, args.limit, args.emulate_avx2, squad, args.set)
                   for runtime in args.runtimes.split(",")]
    text = table(results)
    if len(results) == 2:
        ov, torch = (r["answers"] for r in results)
        text += f"\n\nThe same answer text from both runtimes: {sum(ov[q] == torch[q] for q in ov)} of {len(ov)} questions."
    if squad and len(results) == 2:
        ov, torch = (r["squad_answers"] for r in results)
        text += ("\n\nSQuAD v1.1 dev, the same questions (seed 0) over its 2,067 paragraphs, one at a time:\n\n"
                 "| runtime | EM | F1 | contains | answer p50 s |\n| --- | ---: | ---: | ---: | ---: |\n"
                 + "\n".join(f"| {r['runtime']} | {r['squad_EM']:.1f} | {r['squad_F1']:.1f} | {r['squad_contains']:.1%} | "
                             f"{r['squad_p50']:.2f} |" for r in results)
                 + f"\n\nThe same SQuAD answer text from both runtimes: {sum(ov[q] == torch[q] for q in ov)} of {len(ov)}.")
    print(text)
    if not args.no_record:
        command = "python3 benchmarks/cpu_answer_bench.py" + (" --emulate-avx2" if args.emulate_avx2 else "") + \
            (f" --limit {args.limit}" if args.limit else "") + (f" --squad {args.squad}" if args.squad != 100 else "") + \
            "".join(f" --set {pair}" for pair in args.set) + \
            (f" --runtimes {args.runtimes}" if args.runtimes != ",".join(RUNTIMES) else "")
        append_section(f"The default generator's runtimes on this CPU ({kind})", started,
                       [f"Machine: {machine()}",
                        f"Model: {results[0]['model']}; sample corpus, k=5, hybrid retrieval, each runtime in its "
                        "own process, loaded from its prepared cache"
                        + "".join(f"; {pair}" for pair in args.set),
                        f"Reproduce: `{command}`"], text)


if __name__ == "__main__":
    main()
