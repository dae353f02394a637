"""Convert the MTRAG multi-turn RAG benchmark (human conversations) into corpus/questions JSONL.

Dataset
-------
MTRAG ("MTRAG: A Multi-Turn Conversational Benchmark for Evaluating Retrieval-Augmented
Generation Systems", Katsis et al., IBM Research, 2025): 110 human-written conversations
(842 turns, 7.7 turns on average) over four domains -- ClapNQ (Wikipedia), FiQA (finance
forum posts), Govt (US government web pages) and Cloud (IBM Cloud documentation). Each
agent turn carries the passages an annotator saw (retrieved by ELSER from the full domain
corpus) with a relevant yes/no judgement; the official qrels mark the relevant ones for the
777 answerable / partially answerable turns. Agent answers are reviewer-repaired reference
responses. Licence: Apache-2.0 (LICENSE of github.com/IBM/mt-rag-benchmark; the fork used
below carries the same LICENSE). The underlying corpora keep their own terms (ClapNQ is
Wikipedia text, CC BY-SA; FiQA comes from BEIR/FiQA-2018).

Sources (all public GitHub; read with the tool library's ``fetch``)
--------------------------------------------------------------------
* IBM/mt-rag-benchmark @ cc5b1d481b391181b89f7ced860308482e785463
    mtrag-human/retrieval_tasks/{clapnq,cloud,fiqa,govt}/qrels/dev.tsv   -> gold passages
    mtrag-human/retrieval_tasks/*/*_rewrite.jsonl                         -> LLM rewrites (optional)
    mtragun-human/generation_tasks/reference.jsonl                        -> extra distractors
  (conversations/conversations.json and the corpora zips are >= 4 MiB / LFS and are ABSENT
  from the mirror, in every commit.)
* pashaAbri/mt-rag-benchmark @ 8bb7127798149e44eebd255b7434d0e97b1f12a8 (a fork that split
  the official conversations.json into one file per conversation)
    cleaned_data/conversations/{1..110}.json      -> the 110 conversations, with passage texts
    cleaned_data/tasks/<domain>/<task_id>.json    -> maps official task ids (hash<::>turn)
                                                      to the conversation file number
    scripts/baselines/retrieval_scripts/{bm25,bge,elser}/results/
        {bm25,bge,elser}_{clapnq,cloud,fiqa}_{lastturn,questions,rewrite}.jsonl
                                                   -> top-10 passages retrieved from the FULL
                                                      corpora (text included) -> distractors
  Every qrels passage (2,128 pairs) is present, with text, in the conversation files; the
  passages shared by the fork's conversation files and its retrieval results are
  byte-identical.

Getting the raw data (RAW_DIR layout)
-------------------------------------
  fetch github:IBM/mt-rag-benchmark      -> /work/.mirror/IBM+mt-rag-benchmark/repo
  fetch github:pashaAbri/mt-rag-benchmark -> /work/.mirror/pashaAbri+mt-rag-benchmark/repo
  python benchmarks/multiturn_data.py RAW_DIR OUT_DIR --extract-from-mirrors
or by hand:
  git -C IBM_MIRROR archive cc5b1d4 mtrag-human/retrieval_tasks LICENSE | tar -x -C RAW_DIR
  git -C IBM_MIRROR show cc5b1d4:mtragun-human/generation_tasks/reference.jsonl \
      > RAW_DIR/mtragun_reference.jsonl
  git -C FORK_MIRROR archive 8bb7127 cleaned_data | tar -x -C RAW_DIR
  git -C FORK_MIRROR show 8bb7127:scripts/baselines/retrieval_scripts/bm25/results/bm25_fiqa_rewrite.jsonl \
      > RAW_DIR/distractors/bm25_fiqa_rewrite.jsonl       (and the other 26 such files)
Only cleaned_data/ and mtrag-human/retrieval_tasks/ are required; distractors/ and
mtragun_reference.jsonl are optional extra distractor passages.

Output
------
corpus.jsonl    {"id", "title", "text"}: every passage of all 110 conversations (2,021, the
                gold ones included, whatever --conversations says), then the distractors
                (retrieval results for clapnq/cloud/fiqa, MTRAG-UN reference passages for all
                four domains). Ids are the official MTRAG passage ids
                ("<doc>-<start>-<end>" chunk ids), so they are stable. The four domains
                share one corpus. FiQA and Cloud passages have an empty title; ClapNQ/Govt
                texts start with the title line, as in the dataset.
questions.jsonl one record per turn that has official qrels (answerable or partial turns):
                {"id": official task id "<conversation hash><::><turn>", "question",
                 "doc_id": first gold passage (qrels order), "doc_ids": all gold passages
                 (1-9 per turn, 2.7 on average), "answer": reference agent response,
                 "history": earlier turns, oldest first, user questions and reference agent
                 responses (unanswerable turns included, as they were)}.
                No "standalone": MTRAG's rewrites are LLM-generated (Mixtral), not human;
                --llm-rewrite adds them as "standalone_llm".
Conversations are taken in conversation-file order 1..110 (domains already interleaved).

Counts (full run, all 110 conversations): 110 conversations, 842 turns, 777 question records
(675 with history, 102 first turns), 2,128 gold pairs over 1,800 distinct gold passages;
corpus 17,020 passages (2,021 from the conversations + 14,999 distractors; 3 empty Cloud
distractor chunks are dropped). With --conversations 10: 76 turns, 71 records (62 with history), 154 gold
passages, same corpus. Conversion takes about 0.7 s (about 3 s with --extract-from-mirrors).

Caveats: the corpus is a sample of the 366k-passage MTRAG corpora (not obtainable here).
The distractors include passages that BM25/BGE/ELSER retrieved for these very questions:
some may be relevant but unjudged (MTRAG's qrels are incomplete anyway). Govt has no
retrieval-result distractors (the fork's govt files are >= 4 MiB), only MTRAG-UN ones.
The Cloud corpus repeats pages: 344 groups of passages share one text under different ids;
for 17 questions a gold passage has an identical-text twin that is not in doc_ids (kept, so
score by id or also accept identical text).
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import time
from pathlib import Path

IBM_COMMIT = "cc5b1d481b391181b89f7ced860308482e785463"
FORK_COMMIT = "8bb7127798149e44eebd255b7434d0e97b1f12a8"
DOMAINS = ("clapnq", "cloud", "fiqa", "govt")


def extract_from_mirrors(raw_dir: Path,
                         ibm: Path = Path("/work/.mirror/IBM+mt-rag-benchmark/repo"),
                         fork: Path = Path("/work/.mirror/pashaAbri+mt-rag-benchmark/repo")) -> None:
    """Fill raw_dir from the bare mirrors that the library's ``fetch`` creates."""
    raw_dir.mkdir(parents=True, exist_ok=True)

    def archive(repo: Path, commit: str, *paths: str) -> None:
        tar = subprocess.run(["git", "-C", str(repo), "archive", commit, *paths],
                             check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(raw_dir)], input=tar, check=True)

    def show(repo: Path, commit: str, path: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(subprocess.run(["git", "-C", str(repo), "show", f"{commit}:{path}"],
                                        check=True, capture_output=True).stdout)

    archive(ibm, IBM_COMMIT, "mtrag-human/retrieval_tasks", "LICENSE")
    show(ibm, IBM_COMMIT, "mtragun-human/generation_tasks/reference.jsonl",
         raw_dir / "mtragun_reference.jsonl")
    archive(fork, FORK_COMMIT, "cleaned_data")
    for system in ("bm25", "bge", "elser"):
        for domain in ("clapnq", "cloud", "fiqa"):
            for kind in ("lastturn", "questions", "rewrite"):
                name = f"{system}_{domain}_{kind}.jsonl"
                show(fork, FORK_COMMIT, f"scripts/baselines/retrieval_scripts/{system}/results/{name}",
                     raw_dir / "distractors" / name)


def _user_text(rec: str) -> str:
    return re.sub(r"^\|user\|:\s*", "", rec).strip()


def prepare(raw_dir: Path, out_dir: Path, max_conversations: int | None,
            llm_rewrite: bool = False) -> tuple[Path, Path]:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    conv_dir = raw_dir / "cleaned_data" / "conversations"
    conv_files = sorted(conv_dir.glob("*.json"), key=lambda p: int(p.stem))
    if not conv_files:
        raise FileNotFoundError(f"no conversations under {conv_dir}")
    conversations = {int(p.stem): json.loads(p.read_text()) for p in conv_files}

    # official task id hash -> conversation file number
    hash_to_conv: dict[str, int] = {}
    for p in (raw_dir / "cleaned_data" / "tasks").glob("*/*.json"):
        task = json.loads(p.read_text())
        h = task["task_id"].split("<::>")[0]
        n = int(task["conversation_id"])
        if hash_to_conv.setdefault(h, n) != n:
            raise ValueError(f"task hash {h} maps to two conversations")
    conv_to_hash = {n: h for h, n in hash_to_conv.items()}

    qrels: dict[str, list[str]] = {}
    rewrites: dict[str, str] = {}
    lastturn: dict[str, str] = {}
    rt = raw_dir / "mtrag-human" / "retrieval_tasks"
    for domain in DOMAINS:
        with open(rt / domain / "qrels" / "dev.tsv", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if int(row["score"]) > 0:
                    qrels.setdefault(row["query-id"], []).append(row["corpus-id"])
        for name, target in ((f"{domain}_rewrite.jsonl", rewrites), (f"{domain}_lastturn.jsonl", lastturn)):
            path = rt / domain / name
            if path.exists():
                for line in path.open():
                    r = json.loads(line)
                    target[r["_id"]] = _user_text(r["text"])

    # ---- corpus: all conversation passages first, then distractors --------------------
    corpus: dict[str, dict] = {}

    def add(ctx: dict) -> None:
        pid = ctx["document_id"]
        text = ctx["text"].strip()
        title = (ctx.get("title") or "").strip()
        if not text:  # three empty Cloud chunks, none of them gold
            return
        old = corpus.get(pid)
        if old is None:
            corpus[pid] = {"id": pid, "title": title, "text": text}
        else:
            if old["text"] != text:
                raise ValueError(f"passage {pid} has two different texts")
            if not old["title"] and title:
                old["title"] = title

    for n, conv in conversations.items():
        for m in conv["messages"]:
            for ctx in m.get("contexts", []):
                add(ctx)
    n_conv_passages = len(corpus)
    for p in sorted((raw_dir / "distractors").glob("*.jsonl")):
        for line in p.open():
            for ctx in json.loads(line)["contexts"]:
                add(ctx)
    un = raw_dir / "mtragun_reference.jsonl"
    if un.exists():
        for line in un.open():
            for ctx in json.loads(line)["contexts"]:
                add(ctx)

    # ---- questions ------------------------------------------------------------------------
    chosen = list(conversations)[: max_conversations] if max_conversations else list(conversations)
    questions = []
    n_turns = 0
    for n in chosen:
        conv = conversations[n]
        h = conv_to_hash[n]
        msgs = conv["messages"]
        history: list[dict] = []
        turn = 0
        for i, m in enumerate(msgs):
            if m["speaker"] != "user":
                continue
            turn += 1
            n_turns += 1
            nxt = msgs[i + 1] if i + 1 < len(msgs) and msgs[i + 1]["speaker"] == "agent" else None
            answer = nxt["text"].strip() if nxt else ""
            tid = f"{h}<::>{turn}"
            question = m["text"].strip()
            if tid in lastturn and lastturn[tid] != question:
                raise ValueError(f"{tid}: question text differs from the official retrieval task")
            gold = qrels.get(tid)
            if gold:
                missing = [g for g in gold if g not in corpus]
                if missing:
                    raise ValueError(f"{tid}: gold passages without text: {missing}")
                rec = {"id": tid, "question": question, "doc_id": gold[0], "doc_ids": gold,
                       "answer": answer, "history": list(history)}
                if llm_rewrite and tid in rewrites:
                    rec["standalone_llm"] = rewrites[tid]
                questions.append(rec)
            history.append({"role": "user", "content": question})
            if nxt:
                history.append({"role": "assistant", "content": answer})

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_path, questions_path = out_dir / "corpus.jsonl", out_dir / "questions.jsonl"
    with corpus_path.open("w") as f:
        for rec in corpus.values():
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with questions_path.open("w") as f:
        for rec in questions:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    gold_ids = {g for q in questions for g in q["doc_ids"]}
    print(f"conversations={len(chosen)} turns={n_turns} questions={len(questions)} "
          f"with_history={sum(bool(q['history']) for q in questions)} "
          f"gold_pairs={sum(len(q['doc_ids']) for q in questions)} gold_passages={len(gold_ids)} "
          f"corpus={len(corpus)} (conversation passages={n_conv_passages}, "
          f"distractors={len(corpus) - n_conv_passages})", file=sys.stderr)
    return corpus_path, questions_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("raw_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--conversations", type=int, default=None,
                    help="use only the first N conversations (the corpus stays whole)")
    ap.add_argument("--llm-rewrite", action="store_true",
                    help='add MTRAG\'s LLM query rewrites as "standalone_llm"')
    ap.add_argument("--extract-from-mirrors", action="store_true",
                    help="first fill RAW_DIR from the fetched git mirrors")
    args = ap.parse_args()
    t0 = time.perf_counter()
    if args.extract_from_mirrors:
        extract_from_mirrors(args.raw_dir)
    c, q = prepare(args.raw_dir, args.out_dir, args.conversations, args.llm_rewrite)
    print(f"wrote {c} and {q} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
