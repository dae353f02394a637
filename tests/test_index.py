import os

import numpy as np
import pytest

from rag import Engine, IndexMismatchError, IndexNotFoundError, RagError
from rag.errors import IndexLockedError
from rag.index.vectors import ON_DISK_FILE, VectorIndex


def test_index_every_format_and_find_each_fact(make_engine, sample_docs):
    engine = make_engine()
    report = engine.index([sample_docs])
    assert report.failed == 0 and report.skipped == 0
    assert report.added == 9 and report.documents == 9 and report.chunks >= 10
    expectations = {
        "How many vacation days does an employee get?": ("handbook.md", {"headings": ["Handbook", "Leave"]}),
        "When does the cafeteria close?": ("notes.txt", {}),
        "What is the VPN gateway address?": ("intranet.html", {"headings": ["IT Services"]}),
        "What does error code E-451 mean?": ("manual.pdf", {"page": 2}),
        "Who approves purchases above 50,000 euros?": ("policy.docx", {"headings": ["Procurement Policy", "Approvals"]}),
        "How much does spare part P-042 cost?": ("prices.csv", {}),
        "How do I reset my password?": ("faq-1", {}),
        "Who leads the Lisbon robotics lab?": ("person-ana", {}),
    }
    for question, (doc_id, meta) in expectations.items():
        hits = engine.search(question, k=3)
        assert hits[0].doc_id == doc_id, (question, [(h.doc_id, h.score) for h in hits])
        for key, value in meta.items():
            assert hits[0].metadata[key] == value
        assert hits[0].score >= hits[-1].score
        assert hits[0].source.endswith(doc_id) or hits[0].source.endswith(".jsonl") or hits[0].source.endswith(".json")


def test_manifest_records_what_the_index_was_built_with(make_engine, sample_docs):
    engine = make_engine()
    engine.index([sample_docs])
    info = engine.info()
    manifest = info.manifest
    assert manifest["format_version"] == 3
    assert manifest["embedding"] == {
        "model": "sentence-transformers/all-MiniLM-L6-v2", "dimension": 384, "normalize": True,
        "query_prefix": "", "passage_prefix": "", "max_seq_length": 256,
        "backend": engine.embedder.backend, "precision": engine.embedder.precision,
    }
    assert manifest["chunking"]["chunk_size"] == 200 and manifest["index"]["factory"] == "Flat"
    assert manifest["counts"]["documents"] == 9
    assert manifest["counts"]["chunks"] == manifest["counts"]["vectors"] > 0
    assert manifest["created_at"] and manifest["updated_at"]
    # One write, one segment: its rows, vectors and BM25 postings, each with its checksum.
    assert info.disk_bytes > 0 and manifest["files"] == {} and len(manifest["segments"]) == 1
    assert set(manifest["segments"][0]["files"]) == {
        "chunks.sqlite", "vectors.faiss", "postings.json", "postings.vocab.json", "postings.ids.npy",
        "postings.lengths.npy", "postings.tf.npy", "postings.rows.npy", "postings.indptr.npy"}


def test_unchanged_documents_cost_nothing_and_changed_ones_replace_their_chunks(make_engine, sample_docs):
    engine = make_engine()
    first = engine.index([sample_docs])
    again = engine.index([sample_docs])
    assert again.unchanged == 9 and again.documents == 0 and again.chunks == 0
    assert again.version == first.version  # no new version written
    (sample_docs / "notes.txt").write_text("The cafeteria now closes at 16:00.\n")
    changed = engine.index([sample_docs])
    assert changed.updated == 1 and changed.added == 0 and changed.version != first.version
    hits = engine.search("When does the cafeteria close?", k=20)
    cafeteria = [h for h in hits if h.doc_id == "notes.txt"]
    assert len(cafeteria) == 1 and "16:00" in cafeteria[0].text
    assert engine.info().manifest["counts"]["documents"] == 9


def test_a_bad_file_never_costs_what_is_already_indexed(make_engine, sample_docs, tmp_path):
    engine = make_engine()
    engine.index([sample_docs])
    before = engine.info().manifest["counts"]
    (sample_docs / "corrupt.pdf").write_bytes(b"%PDF-1.4\n garbage garbage")
    (sample_docs / "new.md").write_text("# New\n\nThe new parking garage opens in May.")
    report = engine.index([sample_docs])
    assert report.failed == 1 and report.added == 1 and report.exit_code() == 1
    assert report.problems[0].path == str(sample_docs / "corrupt.pdf")
    after = engine.info().manifest["counts"]
    assert after["documents"] == before["documents"] + 1
    assert engine.search("parking garage", k=1)[0].doc_id == "new.md"


def test_opening_with_another_embedding_configuration_fails_clearly(make_engine, make_settings, sample_docs, embedder):
    make_engine().index([sample_docs])
    other = Engine(make_settings(**{"embedding.query_prefix": "query: "}))
    with pytest.raises(IndexMismatchError, match="query_prefix: index has '', settings give 'query: '"):
        other.search("vacation")
    with pytest.raises(IndexMismatchError, match="query_prefix"):
        other.index([sample_docs])


def test_another_model_of_another_dimension_is_refused(make_settings, sample_docs, tmp_path, embedder):
    """A real second model: MiniLM plus a Dense projection to 64 dimensions, saved to a folder."""
    from sentence_transformers import SentenceTransformer, models

    dense = models.Dense(in_features=384, out_features=64, bias=False)
    minilm = SentenceTransformer(str(embedder.path), device="cpu", local_files_only=True)
    small = SentenceTransformer(modules=[minilm[0], minilm[1], dense], device="cpu")
    model_dir = tmp_path / "minilm-64"
    small.save(str(model_dir))

    settings = make_settings(**{"embedding.model": str(model_dir)})
    engine = Engine(settings)
    assert engine.index([sample_docs]).documents == 9
    assert engine.info().manifest["embedding"]["dimension"] == 64
    assert engine.info().manifest["embedding"]["model"] == "minilm-64"
    default = Engine(make_settings(), embedder=embedder)
    with pytest.raises(IndexMismatchError, match=r"model: index has 'minilm-64'.*dimension: index has 64"):
        default.search("vacation days")


def test_unknown_model_name_is_refused_without_download(make_settings):
    with pytest.raises(RagError, match="never downloads models"):
        Engine(make_settings(**{"embedding.model": "BAAI/bge-small-en-v1.5"})).embedder


def test_missing_index_says_how_to_build_one(make_engine):
    with pytest.raises(IndexNotFoundError, match="rag index PATH --index"):
        make_engine().search("anything")


def test_empty_question_is_refused(make_engine, sample_docs):
    engine = make_engine()
    engine.index([sample_docs])
    with pytest.raises(RagError, match="empty"):
        engine.search("   ")


@pytest.mark.parametrize("factory", ["HNSW32", "IVF4,Flat", "IVF2,PQ16x4"])
def test_other_index_types_build_train_update_and_search(make_engine, tmp_path, factory):
    docs = tmp_path / "many"
    docs.mkdir()
    for i in range(300):
        (docs / f"note-{i:03d}.txt").write_text(f"Ticket {i}: the conveyor in aisle {i} reports fault code F{i:03d}.")
    engine = make_engine(**{"index.factory": factory, "index.train_sample": 256})
    assert engine.index([docs]).documents == 300
    assert engine.search("fault code F123 in aisle 123", k=5)[0].doc_id in {f"note-{i:03d}.txt" for i in range(300)}
    # Update one document: a new segment holds the new vector, the old one stays in the first
    # segment, tombstoned (skipped by searches) until a merge or compaction drops it.
    (docs / "note-007.txt").write_text("Ticket 7 was closed: the forklift battery was replaced.")
    report = engine.index([docs])
    assert report.updated == 1
    info = engine.info()
    counts = info.manifest["counts"]
    masked = 1
    assert counts["chunks"] == 300 and counts["vectors"] == 300 + masked and counts["masked"] == masked
    assert info.masked == masked and [s.chunks for s in info.segments] == [300, 1]
    assert engine.check().problems == []
    hits = engine.search("forklift battery replaced", k=3)
    assert "note-007.txt" in [h.doc_id for h in hits]
    old = engine.search("fault code F007 in aisle 7", k=300)
    assert all("F007" not in h.text for h in old), "the replaced text must never come back"
    assert engine.compact() == masked
    counts = engine.info().manifest["counts"]
    assert counts["vectors"] == counts["chunks"] == 300 and counts["masked"] == 0
    assert len(engine.info().segments) == 1
    assert engine.check().problems == []
    assert "note-007.txt" in [h.doc_id for h in engine.search("forklift battery replaced", k=3)]


def test_an_index_type_that_cannot_train_on_so_few_vectors_says_so(make_engine, sample_docs):
    engine = make_engine(**{"index.factory": "IVF1024,Flat"})
    with pytest.raises(RagError, match="needs at least 1024 vectors to train"):
        engine.index([sample_docs])
    assert not engine.store.exists()


def test_bad_factory_string_names_the_setting(make_engine, sample_docs):
    with pytest.raises(RagError, match="index.factory = 'Bogus42'"):
        make_engine(**{"index.factory": "Bogus42"}).index([sample_docs])


def test_changing_the_index_type_of_an_existing_index_is_refused(make_engine, sample_docs):
    make_engine().index([sample_docs])
    with pytest.raises(RagError, match="is a 'Flat' index; index.factory is 'HNSW32'"):
        make_engine(**{"index.factory": "HNSW32"}).index([sample_docs])


def test_a_second_writer_is_told_who_holds_the_lock(make_engine, sample_docs, embedder):
    engine = make_engine()
    engine.index([sample_docs])
    writer = engine.store.open_writer(embedder.identity(), {})
    writer.lock.acquire()
    try:
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            make_engine().index([sample_docs])
    finally:
        writer.lock.release()


def test_readers_keep_their_snapshot_and_see_commits_without_restart(make_engine, sample_docs, tmp_path):
    writer = make_engine()
    writer.index([sample_docs])
    reader = make_engine()
    snapshot = reader.reader()
    (sample_docs / "extra.txt").write_text("The rooftop garden is open on Fridays.")
    writer.index([sample_docs])
    # The old snapshot still answers (its files are kept or still open) ...
    assert snapshot.chunks.catalog.counts()["documents"] == 9
    # ... and the engine moves to the new version on its next search.
    assert reader.search("rooftop garden", k=1)[0].doc_id == "extra.txt"


def test_old_versions_are_retired(make_engine, sample_docs):
    engine = make_engine(**{"index.keep_versions": 1})
    for i in range(4):
        (sample_docs / "counter.txt").write_text(f"Visitor counter shows {i}.")
        engine.index([sample_docs])
    assert engine.store.versions() == ["v000003", "v000004"]


def test_corrupt_manifest_is_reported_not_misread(make_engine, sample_docs):
    engine = make_engine()
    engine.index([sample_docs])
    current = engine.store.path / engine.store.current_version()
    (current / "manifest.json").write_text("{ broken")
    with pytest.raises(RagError, match="manifest.json cannot be read"):
        make_engine().search("vacation")


def test_a_bad_jsonl_line_is_reported_at_its_line_without_repeating_the_file(make_engine, tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "faq.jsonl").write_text('{"id": "a", "text": "Badges are replaced at reception."}\n{broken\n')
    report = make_engine().index([kb])
    assert report.added == 1 and report.failed == 1
    (problem,) = report.problems
    assert problem.path == "faq.jsonl line 2"
    assert problem.reason.startswith("not valid JSON") and "faq.jsonl" not in problem.reason


def test_copies_of_a_hit_are_found_through_an_index_and_listed_in_order(make_engine, tmp_path):
    """Search results name the other ids of a hit's content; finding them once scanned every
    document per hit (4 ms of a 9 ms SciFact search)."""

    docs = tmp_path / "copies"
    docs.mkdir()
    for name in ("m.txt", "a.txt", "z.txt", "b.txt"):
        (docs / name).write_text("The loading dock closes at 17:00 on Fridays.\n", encoding="utf-8")
    engine = make_engine()
    engine.index([docs])
    hit = engine.search("When does the loading dock close?", k=1)[0]
    assert hit.doc_id == "a.txt" and hit.metadata["also_in"] == ["b.txt", "m.txt", "z.txt"]
    # Through the view over the version's segments, as searches ask it.
    plan = engine.reader().chunks.conn.execute("EXPLAIN QUERY PLAN SELECT content_of, doc_id FROM documents "
                                               "WHERE collection = ? AND content_of IN (?, ?)", ("default", "a", "b"))
    assert "documents_by_content" in str(plan.fetchall())


def test_a_run_reports_its_stages_and_dedupes_against_the_batch_being_embedded(make_engine, tmp_path, monkeypatch):
    """Embedding runs on its own thread while the next batch is read and chunked: a document whose
    content is in the batch being embedded is still stored once, and the report says where the
    time went."""
    import rag.indexing.batches

    monkeypatch.setattr(rag.indexing.batches, "EMBED_FLUSH_CHUNKS", 2)  # a batch every two chunks
    docs = tmp_path / "batches"
    docs.mkdir()
    texts = {"a.txt": "The loading dock closes at 17:00 on Fridays.",
             "b.txt": "Visitors sign in at reception on the ground floor.",
             "c.txt": "The loading dock closes at 17:00 on Fridays.",  # a's content, a's batch in flight
             "d.txt": "Parking permits are renewed every January."}
    for name, text in texts.items():
        (docs / name).write_text(text + "\n", encoding="utf-8")
    report = make_engine().index([docs])
    assert report.documents == 4 and report.chunks == 3
    assert set(report.stages) == {"load", "parse", "chunk", "embed", "write"}
    assert all(seconds >= 0 for seconds in report.stages.values())
    assert report.as_dict()["stages"].keys() == report.stages.keys()
    hit = make_engine().search("When does the loading dock close?", k=1)[0]
    assert (hit.doc_id, hit.metadata["also_in"]) == ("a.txt", ["c.txt"])


def test_a_small_search_leaves_the_threads_of_its_caller_as_they_were():
    """FAISS searches a few queries on one OpenMP thread; torch reads the same per-thread setting,
    and a generator answering on that thread after a search ran on one core at half the speed."""
    import faiss
    import numpy as np
    import torch

    from rag.index.vectors import VectorIndex

    index = VectorIndex.create("Flat", 8, use_gpu=False)
    vectors = np.random.default_rng(0).standard_normal((50, 8)).astype("float32")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index.add(vectors, np.arange(50, dtype=np.int64))
    torch.set_num_threads(2)
    before = (faiss.omp_get_max_threads(), torch.get_num_threads())
    scores, ids = index.search(vectors[:1], 3, nprobe=1, ef_search=16)
    assert ids[0][0] == 0
    assert (faiss.omp_get_max_threads(), torch.get_num_threads()) == before == (2, 2)


def test_documents_prepared_elsewhere_are_written_with_their_chunks_vectors_and_tokens(make_engine, tmp_path, embedder):
    """What a Ray worker hands the writer (rag.indexing.Prepared) is written as given: the writer
    neither chunks, embeds nor tokenizes it again."""
    from rag.indexing import Indexer, LocalPreparer, Prepared
    from rag.records import Chunk, Document, Section

    class Given(LocalPreparer):
        def files(self, files):
            for src in files:
                document = Document("given.txt", [Section("ignored")], {"sha256": "x" * 64, "source": "given.txt"},
                                    size=10, origin=str(src.real))
                chunk = Chunk("given.txt", 0, "The heat pump in hall 4 was serviced.", "The heat pump ...", {})
                yield [Prepared(document, [chunk], np.full((1, 384), 1 / np.sqrt(384), np.float32), ["zzqx"])]

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "given.txt").write_text("whatever the file says")
    engine = make_engine()
    report = Indexer(engine.settings, embedder, engine.store, preparer=lambda settings, origin: Given(settings, None)
                     ).run([tmp_path / "docs"])
    assert report.added == 1 and report.chunks == 1
    rows = engine.reader().chunks.conn.execute("SELECT text, tokens FROM chunks").fetchall()
    assert rows == [("The heat pump in hall 4 was serviced.", "zzqx")]
    assert engine.search("zzqx", k=1, mode="bm25")[0].doc_id == "given.txt"
    stored = engine.reader().segments[0].vectors.reconstruct(engine.reader().segments[0].ids)
    assert np.allclose(stored, 1 / np.sqrt(384))


@pytest.mark.parametrize("factory", ["IVF16,PQ8", "IVF16,Flat", "OPQ8,IVF16,PQ8", "IVF16,SQ8"])
def test_vectors_encoded_elsewhere_are_stored_exactly_as_added_ones(factory, tmp_path):
    """What a Ray worker does for a trained IVF index (VectorIndex.encode on a copy of its
    template) and the writer stores (add_codes) is what adding the vectors stores."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 5 + 11
    trained = VectorIndex.create(factory, 64, use_gpu=False)
    trained.train(x[:2000])
    template = trained.empty_copy()
    template.save(tmp_path / "trained.faiss")
    worker = VectorIndex.from_bytes(np.fromfile(tmp_path / "trained.faiss", dtype=np.uint8), factory)
    codes = worker.encode(x)
    assert codes.dtype == np.uint8 and codes.shape == (3000, template.code_size)
    added, stored = template.empty_copy(), template.empty_copy()
    added.add(x, ids)
    stored.add_codes(codes[:1000], ids[:1000])
    stored.move_lists_to_disk(tmp_path / ON_DISK_FILE)  # codes land in on-disk lists as well
    stored.add_codes(codes[1000:], ids[1000:])
    assert stored.ntotal == added.ntotal == 3000
    queries = x[::60]
    a, b = added.search(queries, 20, 8, 0), stored.search(queries, 20, 8, 0)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])
    assert np.array_equal(added.reconstruct(ids[::7]), stored.reconstruct(ids[::7]))
    added.remove(ids[:10].tolist())
    stored.remove(ids[:10].tolist())  # the id map add_codes keeps finds them
    assert np.array_equal(added.search(queries, 20, 8, 0)[1], stored.search(queries, 20, 8, 0)[1])
