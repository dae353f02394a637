"""The shipped sample knowledge base indexes cleanly and covers what the issue asks of it."""

import json

from conftest import CORPORA


def test_sample_corpus_indexes_cleanly_and_every_qa_source_exists(make_engine):
    engine = make_engine()
    report = engine.index([CORPORA])
    assert report.failed == 0 and report.skipped == 0, report.problems
    files = [p for p in CORPORA.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.name not in ("sample_qa.jsonl", "README.md")]
    assert len(files) >= 20
    assert {p.suffix for p in files} >= {".md", ".txt", ".html", ".pdf", ".docx", ".csv", ".jsonl", ".pptx", ".xlsx",
                                         ".eml"}
    assert report.ocr_pages == 1  # the scanned fire safety certificate, and nothing else

    qa = [json.loads(line) for line in (CORPORA / "sample_qa.jsonl").read_text().splitlines() if line.strip()]
    assert len(qa) >= 30 and all(q["question"] and q["answer"] and q["doc_id"] for q in qa)
    indexed = {row[0] for row in engine.reader().chunks.conn.execute("SELECT doc_id FROM documents")}
    missing = [q["doc_id"] for q in qa if q["doc_id"] not in indexed]
    assert not missing
    # Answers are found in the text of their source document.
    corpus = {}
    for doc_id, text in engine.reader().chunks.conn.execute("SELECT doc_id, text FROM chunks ORDER BY id"):
        corpus[doc_id] = corpus.get(doc_id, "") + "\n" + text
    normalized = {d: " ".join(t.split()).lower() for d, t in corpus.items()}
    for q in qa:
        assert " ".join(q["answer"].split()).lower().replace("**", "") in normalized[q["doc_id"]].replace("**", ""), q
