"""Every filter route against a brute-force oracle (tests/filter_oracle.py), over generated
documents whose collections, ids and metadata are full of digits, dots, dashes, glob and range
characters, with content shared between ids: the chunks a search may return, the documents a
listing shows and a delete removes, the document a shared chunk is shown as, and the upload
check of a key's collection filters."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from filter_oracle import glob, matches
from rag.errors import ConfigError
from rag.filters import document_matches, exact_expression, parse_filters
from rag.index.chunkstore import ChunkStore
from rag.records import Chunk, Document

PROPERTY = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Values that read as numbers, dates, prefixes of each other, globs and ranges.
TRICKY = ["2024", "2024-private", "02024", "2024.hr", "2024.0", "1", "001", "1-notes", "1.0", "x", "xylophone",
          "a..z", "x*", "[^f]", "f", "-1", "1e3", "true", "2026-01-05", "2026-01-05T10:00:00Z", "a b", "é"]
text_values = st.one_of(st.sampled_from(TRICKY),
                        st.text(alphabet="0129.-_*?[]^!azé ", min_size=1, max_size=6).map(str.strip).filter(bool))
stored_values = st.one_of(text_values, st.integers(-3000, 3000), st.sampled_from([1.0, 2024.0, -0.5, 1e3]),
                          st.booleans(), st.none(), st.lists(st.integers(0, 3), max_size=2))
META_KEYS = ["dept", "priority", "a.b"]


@st.composite
def documents(draw) -> list[dict]:
    """Documents of a few collections; some share the content of an earlier one (an alias)."""
    out: list[dict] = []
    for i in range(draw(st.integers(1, 7))):
        collection = draw(st.sampled_from(["2024", "2024-private", "02024", "c"]))
        doc_id = draw(text_values)
        if any((d["collection"], d["doc_id"]) == (collection, doc_id) for d in out):
            continue
        holders = [d for d in out if d["collection"] == collection and d["content_of"] is None]
        document = {
            "collection": collection, "doc_id": doc_id, "source": draw(text_values),
            "title": draw(st.one_of(st.none(), text_values)), "format": draw(st.sampled_from(["md", "record", "2024"])),
            "mtime": draw(st.one_of(st.none(), st.sampled_from([0.0, 1767571200.0, 1767607200.0]))),
            "fields": draw(st.dictionaries(st.sampled_from(META_KEYS), stored_values, max_size=2)),
            "extra": draw(st.dictionaries(st.sampled_from(META_KEYS), stored_values, max_size=1)),
            "content_of": draw(st.sampled_from(holders)).get("doc_id") if holders and draw(st.booleans()) else None,
            "chunks": [draw(st.dictionaries(st.sampled_from(["page", *META_KEYS]), stored_values, max_size=2))
                       for _ in range(draw(st.integers(1, 2)))],
            "n": i,
        }
        out.append(document)
    return out


keys = st.sampled_from(["collection", "doc_id", "source", "title", "format", "mtime", "page", *META_KEYS])
ops = st.sampled_from(["=", ">=", "<=", ">", "<"])


@st.composite
def expressions(draw, docs: list[dict]) -> str:
    key = draw(keys)
    seen = [str(v) for d in docs for v in (d.get(key), d["fields"].get(key), d["extra"].get(key))
            if v is not None and not isinstance(v, list)]
    value = draw(st.one_of(text_values, st.sampled_from(seen or TRICKY), st.integers(-5, 3000).map(str)))
    if key == "mtime":
        value = draw(st.sampled_from(["2026-01-05", "2026-01-05T10:00:00Z", "2026-01-05T11:00+01:00", "0",
                                      "1767571200", "1e3"]))
    if draw(st.booleans()) and "*" not in value:  # a range, either end may be left out
        other = draw(st.one_of(st.just(""), text_values))
        return f"{key}={value}..{other}" if draw(st.booleans()) else f"{key}={other}..{value}"
    return f"{key}{draw(ops)}{value}"


def _store(tmp_path: Path, docs: list[dict]) -> tuple[ChunkStore, dict[int, tuple[dict, dict]]]:
    """The documents in a real chunks.sqlite; chunk id -> (its holder's stored fields, chunk metadata)."""
    store = ChunkStore.create(tmp_path / "chunks.sqlite")
    chunk_rows: dict[int, tuple[dict, dict]] = {}
    for d in docs:
        metadata = {"source": d["source"], "title": d["title"], "mtime": d["mtime"], "sha256": str(d["n"]),
                    "format": d["format"], "fields": d["fields"], **d["extra"]}
        store.rows.put_document(Document(d["doc_id"], [], metadata), d["collection"], d["content_of"])
        if d["content_of"] is None:
            chunks = [Chunk(d["doc_id"], n, f"text {d['n']}.{n}", "", meta) for n, meta in enumerate(d["chunks"])]
            for cid, meta in zip(store.rows.add_chunks(chunks, [None] * len(chunks), d["collection"]), d["chunks"]):
                chunk_rows[cid] = (d, meta)
    store.commit()
    for d in docs:  # what the filters read: the stored row, indexed_at included
        d["indexed_at"] = store.conn.execute("SELECT indexed_at FROM documents WHERE collection = ? AND doc_id = ?",
                                             (d["collection"], d["doc_id"])).fetchone()[0]
        d["metadata"] = {"fields": d["fields"], **d["extra"]}
    return store, chunk_rows


def _sharing(docs: list[dict], holder: dict) -> list[dict]:
    """The documents a holder's chunks are found under: itself, then its aliases by id."""
    return [holder] + sorted((d for d in docs if d["collection"] == holder["collection"]
                              and d["content_of"] == holder["doc_id"]), key=lambda d: d["doc_id"])


@PROPERTY
@given(st.data())
def test_every_filter_route_equals_the_documented_meaning(tmp_path_factory, data):
    docs = data.draw(documents())
    wanted = data.draw(st.lists(expressions(docs), min_size=1, max_size=3))
    try:
        filters = parse_filters(wanted)
    except ConfigError as exc:
        assert "--filter" in str(exc)
        assume(False)
    store, chunks = _store(tmp_path_factory.mktemp("filters"), docs)
    try:
        expected_chunks = {cid for cid, (holder, meta) in chunks.items()
                           if any(matches(wanted, d, meta) for d in _sharing(docs, holder))}
        assert set(store.rows.matching_chunk_ids(filters).tolist()) == expected_chunks, wanted

        def listed(d: dict) -> bool:
            holder = next(h for h in docs if h["collection"] == d["collection"]
                          and h["doc_id"] == (d["content_of"] or d["doc_id"]))
            return any(matches(wanted, d, meta) for cid, (h, meta) in chunks.items() if h is holder)
        expected_documents = sorted((d["collection"], d["doc_id"]) for d in docs if listed(d))
        total, page = store.catalog.list_documents(filters, 0, 1000)
        assert (total, [(p.collection, p.doc_id) for p in page]) == (len(expected_documents), expected_documents)
        assert store.catalog.matching_documents(filters) == expected_documents

        # A shared chunk is shown as the first document the filters allow; also_in names only allowed ones.
        for cid, row in store.rows.get_chunks(expected_chunks, filters).items():
            holder, meta = chunks[cid]
            allowed = [d["doc_id"] for d in _sharing(docs, holder) if matches(wanted, d, meta)]
            assert [row.doc_id, *row.metadata.get("also_in", [])] == allowed, (wanted, cid)
            shown = next(d for d in docs if (d["collection"], d["doc_id"]) == (holder["collection"], allowed[0]))
            assert (row.source, row.title) == (shown["source"], shown["title"])
    finally:
        store.close()


@PROPERTY
@given(st.lists(st.sampled_from(["collection"]), min_size=1, max_size=2).flatmap(
    lambda ks: st.tuples(st.lists(st.tuples(ops, text_values), min_size=len(ks), max_size=len(ks)), text_values)))
def test_the_upload_check_means_what_a_read_means(case):
    """A key limited by collection filters may upload into exactly the collections it can read."""
    conditions, collection = case
    wanted = [f"collection{op}{value}" for op, value in conditions]
    try:
        filters = parse_filters(wanted)
    except ConfigError:
        assume(False)
    assert document_matches(filters, {"collection": collection}) == matches(wanted, {"collection": collection}, {})


@PROPERTY
@given(text_values)
def test_an_exact_expression_selects_its_value_and_no_other(value):
    expression = exact_expression("doc_id", value)
    (only,) = [expression]
    for other in {value, value + "x", "x" + value, value.replace(".", "_"), "2024", "1"}:
        assert matches([only], {"doc_id": other}, {}) == (other == value), (expression, other)


@pytest.mark.parametrize("pattern, text, expected", [
    ("[^f]", "g", True), ("[^f]", "f", False), ("[!f]", "g", True), ("[!f]", "f", False), ("[!f]", "!", True), ("[]]", "]", True),
    ("[a-c]", "b", True), ("[-a]", "-", True), ("[a-]", "-", True), ("x*", "xylophone", True), ("?", "é", True),
    ("[z-a]", "m", False), ("*.md", "a.md", True), ("a[.]b", "a.b", True), ("a[.]b", "axb", False),
])
def test_the_oracle_and_sqlite_agree_on_glob_corners(tmp_path, pattern, text, expected):
    """The oracle's glob is SQLite's own, checked on the corners where shells and fnmatch differ."""
    assert glob(pattern, text) is expected
    if "[!" not in pattern:  # SQLite's own operator (which reads "[!" as a set holding "!")
        assert bool(sqlite3.connect(":memory:").execute("SELECT ? GLOB ?", (text, pattern)).fetchone()[0]) is expected
    (f,) = parse_filters([f"doc_id={pattern}"])
    assert document_matches([f], {"doc_id": text}) is expected


def test_number_like_values_compare_as_their_type(tmp_path):
    """The reported cases: a key limited to collection 2024 sees only 2024; doc_id=1 only 1;
    a metadata number 1 matches 1 and 1.0 stored as numbers and "1" stored as text, nothing else."""
    docs = [{"collection": c, "doc_id": i, "source": "s", "title": None, "format": "md", "mtime": None,
             "fields": {"priority": p}, "extra": {}, "content_of": None, "chunks": [{}], "n": n}
            for n, (c, i, p) in enumerate([("2024", "1", 1), ("2024-private", "001", 1.0), ("02024", "1-notes", "1"),
                                           ("2024.hr", "x", "01"), ("2024", "10", "1-urgent")])]
    store, _ = _store(tmp_path, docs)
    try:
        def listed(*expressions: str) -> list[tuple[str, str]]:
            return [(d.collection, d.doc_id) for d in store.catalog.list_documents(parse_filters(list(expressions)), 0, 100)[1]]
        assert listed("collection=2024") == [("2024", "1"), ("2024", "10")]
        assert listed("doc_id=1") == [("2024", "1")]
        assert listed("priority=1") == [("02024", "1-notes"), ("2024", "1"), ("2024-private", "001")]
        assert listed("priority>=1", "collection=2024") == [("2024", "1"), ("2024", "10")]
        assert listed("collection=2024.0") == []
    finally:
        store.close()


def test_filters_that_cannot_mean_anything_are_refused_naming_the_filter():
    for bad, why in (("source=[abc", "never closed"), ("mtime=2026-*", "globs"), ("page=x", "number"),
                     ("indexed_at>=5", "date"), ("opened>=2026-13-45", "not a valid date")):
        with pytest.raises(ConfigError, match=why) as error:
            parse_filters([bad])
        assert json.dumps(bad)[1:-1] in str(error.value)


def test_a_record_with_nan_or_infinity_is_refused_and_metadata_filters_keep_working(make_engine):
    """Python's json reads NaN and Infinity; stored, they made every metadata filter fail in SQLite."""
    import io

    engine = make_engine()
    stream = b"".join(json.dumps(r, allow_nan=True).encode() + b"\n" for r in (
        {"id": "nan", "text": "Badge office hours.", "metadata": {"p": float("nan")}},
        {"id": "inf", "text": "Badge office rules.", "p": [1, float("inf")]},
        {"id": "ok", "text": "Badge office place.", "p": 2}))
    report = engine.index_jsonl(io.BytesIO(stream), "in.jsonl")
    assert report.failed == 2 and all("NaN or Infinity" in p.reason for p in report.problems)
    assert [h.doc_id for h in engine.search("badge office", filters=["p>=1"])] == ["ok"]
