#!/usr/bin/env python3
"""Two trees of the code side by side on SciFact: a commit (--base) and the working tree.

For a change that must not change behaviour (issue 29 reshaped the storage engine, the indexing
run, BM25 and the fronts), this measures in one run, each tree in a process of its own
(benchmarks/tree_worker.py, importing that tree's `rag`):

- an index built by each tree from SciFact's 5,183 abstracts (build seconds), and its nDCG@10;
- the base tree's index opened and searched by the working tree (an index written before the
  change opens and answers after it: the same nDCG@10);
- hybrid search latency, p50/p95 over the 300 test claims, each claim searched by the two
  processes in turn (which goes first alternates), so the machine's own swings fall on both;
- one document added and deleted (`rag index` and `rag delete`), --writes times each, alternated.

Data comes from ../shared/datasets (or $RAG_DATASETS); the base tree is exported with
`git archive` into a temporary folder; nothing is copied into the repository. Unless
--no-record, the figures are appended to docs/benchmarks.md.

    python3 benchmarks/tree_bench.py --base 1b18ee4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmark_record import append_section, machine

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "tree_worker.py"


class Tree:
    """A worker process running one tree's `rag`."""

    def __init__(self, label: str, root: Path) -> None:
        self.label = label
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"PYTHONPATH": str(root)}
        self.process = subprocess.Popen([sys.executable, str(WORKER)], cwd=root, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, bufsize=1)
        self.rag = self.ask()["rag"]

    def ask(self, **command: Any) -> dict[str, Any]:
        if command:
            self.process.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"the {self.label} worker stopped; its stderr says why")
        return json.loads(line)

    def close(self) -> None:
        self.ask(op="quit")
        self.process.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = int(at)
    return ordered[low] + (ordered[min(low + 1, len(ordered) - 1)] - ordered[low]) * (at - low)


def run(base: str, data: Path, work: Path, writes: int) -> tuple[list[str], list[str]]:
    exported = work / "base"
    exported.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", base], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(exported)], input=archive.stdout, check=True)
    (exported / "rag" / "default_config.toml").unlink(missing_ok=True)  # a link in git: the tree's own
    shutil.copy(exported / "config.toml", exported / "rag" / "default_config.toml")
    trees = [Tree(f"base {base}", exported), Tree("working tree", REPO_ROOT)]
    built: dict[str, dict[str, Any]] = {}
    for tree in trees:
        index = work / f"index-{len(built)}"
        seconds = tree.ask(op="open", index=str(index), data=str(data / "beir-scifact"))["seconds"]
        built[tree.label] = {"index": index, "build": seconds, "ndcg": tree.ask(op="ndcg")["ndcg"]}
        print(f"{tree.label}: built in {seconds:.1f} s, nDCG@10 {built[tree.label]['ndcg']:.4f}", flush=True)
    # The working tree on the base tree's index: written before the change, read after it.
    reader = Tree("working tree on the base index", REPO_ROOT)
    reader.ask(op="open", index=str(built[trees[0].label]["index"]), data=str(data / "beir-scifact"))
    compat = reader.ask(op="ndcg")["ndcg"]
    reader.close()
    print(f"working tree on the base tree's index: nDCG@10 {compat:.4f}", flush=True)
    latency: dict[str, list[float]] = {tree.label: [] for tree in trees}
    for tree in trees:
        tree.ask(op="warm")
    for i in range(300):
        for tree in (trees if i % 2 == 0 else trees[::-1]):
            latency[tree.label].append(tree.ask(op="search", i=i)["seconds"])
    edits: dict[str, dict[str, list[float]]] = {tree.label: {"add": [], "delete": []} for tree in trees}
    folder = work / "new"
    folder.mkdir()
    (folder / "new.txt").write_text("Bacterial biofilms resist antibiotics that clear free-floating cells.\n")
    for i in range(writes):
        for tree in (trees if i % 2 == 0 else trees[::-1]):
            done = tree.ask(op="add", folder=str(folder), doc_id="new.txt")
            edits[tree.label]["add"].append(done["add"])
            edits[tree.label]["delete"].append(done["delete"])
    for tree in trees:
        tree.close()
    rows = ["| tree | build (s) | nDCG@10 | search p50 / p95 (ms) | add one document p50 (s) | delete one p50 (s) |",
            "|---|---:|---:|---:|---:|---:|"]
    for tree in trees:
        t, lat, ed = built[tree.label], latency[tree.label], edits[tree.label]
        rows.append(f"| {tree.label} | {t['build']:.1f} | {t['ndcg']:.4f} | {1000 * percentile(lat, 50):.2f} / "
                    f"{1000 * percentile(lat, 95):.2f} | {percentile(ed['add'], 50):.3f} | "
                    f"{percentile(ed['delete'], 50):.3f} |")
    rows.append(f"| working tree, on the base tree's index | | {compat:.4f} | | | |")
    notes = [f"the same nDCG@10 from the base tree's index read by the working tree: "
             f"{'yes' if abs(compat - built[trees[0].label]['ndcg']) < 1e-9 else 'NO'}"]
    return rows, notes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="the commit to compare the working tree with")
    p.add_argument("--writes", type=int, default=5, help="documents added and deleted by each tree")
    p.add_argument("--no-record", action="store_true", help="print only; do not append to docs/benchmarks.md")
    args = p.parse_args()
    data = Path(os.environ.get("RAG_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))
    if not (data / "beir-scifact").is_dir():
        print(f"no SciFact under {data}; set RAG_DATASETS", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="rag-tree-bench-") as work:
        rows, notes = run(args.base, data, Path(work), args.writes)
    print("\n".join(rows + notes))
    if not args.no_record:
        append_section(f"Two trees side by side: {args.base} and the working tree at {head}", started,
                       [f"Machine: {machine()}", f"Command: `python3 benchmarks/tree_bench.py --base {args.base}`",
                        "Each tree in its own process; claims searched by the two in turn, alternating which first",
                        *notes], "\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
