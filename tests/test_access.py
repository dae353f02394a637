"""Access lists (issue 33, first part): a person sees exactly the documents their user id, groups
and the collections' defaults allow, in searches and listings alike, failing closed."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rag.errors import IngestError
from rag.filters import Access

USERS = ["ana", "rui", "mei", "tom", "' OR 1=1 --", "*"]
GROUPS = ["hr", "board", "eng", "sales", "%"]


def _records(rng: random.Random) -> list[dict]:
    records = []
    for number in range(48):
        kind = number % 4
        if kind == 0:
            acl = "public"
        elif kind == 1:
            acl = {"users": rng.sample(USERS, rng.randint(0, 2)), "groups": rng.sample(GROUPS, rng.randint(0, 2))}
        elif kind == 2:
            acl = {"groups": rng.sample(GROUPS, 1)}
        else:
            acl = None  # the collection's default decides
        record = {"id": f"doc-{number:02d}", "text": f"Policy note {number} about the travel budget."}
        if acl is not None:
            record["acl"] = acl
        records.append(record)
    return records


def may_read(record: dict, collection: str, access: Access, private: set[str]) -> bool:
    """The brute-force oracle."""
    acl = record.get("acl")
    if acl is None:
        return collection not in private
    if acl == "public":
        return True
    return access.user in acl.get("users", []) or bool(set(access.groups) & set(acl.get("groups", [])))


@pytest.fixture(scope="module")
def access_index(tmp_path_factory, embedder):
    from rag import Engine, Settings

    folder = tmp_path_factory.mktemp("access")
    records = _records(random.Random(33))
    engine = Engine(Settings.load(overrides={"index.path": str(folder / "index"), "access.collections": {"hr": "private"}},
                                  environ={}), embedder=embedder)
    for collection, part in (("open", records[:24]), ("hr", records[24:])):
        engine.settings.ingest.collection = collection
        lines = [json.dumps(r).encode() + b"\n" for r in part]
        assert engine.index_jsonl(lines, f"{collection}.jsonl").documents == len(part)
    truth = {("open", r["id"]): r for r in records[:24]} | {("hr", r["id"]): r for r in records[24:]}
    yield engine, truth
    engine.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.sampled_from(USERS + ["nobody"]), groups=st.lists(st.sampled_from(GROUPS + ["x"]), max_size=3))
def test_a_person_sees_exactly_what_the_oracle_allows(access_index, user, groups):
    engine, truth = access_index
    access = Access(user, tuple(groups))
    allowed = {key for key, record in truth.items() if may_read(record, key[0], access, {"hr"})}
    listed = {(d.collection, d.doc_id) for d in engine.documents(access=access, limit=1000).documents}
    assert listed == allowed
    found = {(h.metadata["collection"], h.doc_id) for h in engine.search("travel budget policy note", k=100,
                                                                          mode="bm25", access=access)}
    assert found == allowed  # k=100 > 48: every readable document, and nothing else
    if allowed:
        (hit,) = engine.search("travel budget policy note", k=1, access=access)
        assert (hit.metadata["collection"], hit.doc_id) in allowed  # filtered inside retrieval, not after


def test_no_access_means_the_operator_and_a_private_collections_unlisted_documents_stay_hidden(access_index):
    engine, truth = access_index
    assert engine.documents(limit=1000).total == len(truth)  # no person: an operator sees all
    stranger = Access("nobody")
    visible = {(d.collection, d.doc_id) for d in engine.documents(access=stranger, limit=1000).documents}
    unlisted_hr = {key for key, r in truth.items() if key[0] == "hr" and "acl" not in r}
    assert unlisted_hr and not visible & unlisted_hr
    facets = engine.facets(access=stranger)
    assert sum(c.documents for c in facets.collections) == len(visible)  # counts leak nothing either


def test_an_access_list_that_cannot_be_understood_is_refused_not_opened(make_engine):
    from rag.ingest.acl import access_list

    for bad in ("everyone", ["ana"], {"users": "ana"}, {"users": [""]}, {"roles": ["hr"]}, {"groups": [1]}):
        with pytest.raises(IngestError, match="acl"):
            access_list(bad)
    engine = make_engine()
    report = engine.index_jsonl([b'{"id": "a", "text": "Salary bands.", "acl": {"user": ["ana"]}}\n'], "kb.jsonl")
    assert report.documents == 0 and report.failed == 1 and "acl" in report.problems[0].reason


@pytest.fixture(scope="module")
def shared_content_index(tmp_path_factory, embedder):
    """Documents whose text repeats under other ids and lists (stored once, shown as each), in a
    public and a private collection, with lists of every shape the SQL can meet."""
    from rag import Engine, Settings

    folder = tmp_path_factory.mktemp("access-shared")
    engine = Engine(Settings.load(overrides={"index.path": str(folder / "index"),
                                             "access.collections": {"hr": "private"}}, environ={}), embedder=embedder)
    rng = random.Random(7)
    for collection in ("open", "hr"):
        records = []
        for number in range(30):
            acl = rng.choice([None, "public", {"users": rng.sample(USERS, rng.randint(0, 2))},
                              {"groups": rng.sample(GROUPS, rng.randint(1, 2))},
                              {"users": rng.sample(USERS, 1), "groups": rng.sample(GROUPS, 1)}])
            record = {"id": f"{collection}-{number}", "text": f"Shared memo {number % 7} on the travel budget."}
            records.append(record | ({"acl": acl} if acl is not None else {}))
        engine.index_jsonl([json.dumps(r).encode() + b"\n" for r in records], f"{collection}.jsonl",
                           collection=collection)
    yield engine
    engine.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.sampled_from(USERS + ["nobody"]), groups=st.lists(st.sampled_from(GROUPS + ["x"]), max_size=3),
       default=st.sampled_from(["public", "private"]))
def test_the_in_memory_access_map_allows_exactly_what_the_sql_filter_allows(shared_content_index, user, groups,
                                                                             default):
    import numpy as np

    from rag.filters import access_filter

    rows = shared_content_index.reader().chunks.rows
    condition = access_filter(Access(user, tuple(groups)), {"hr": "private", "open": "public"}, default)
    fast = rows.access_map().allowed(*condition.value)
    assert np.array_equal(fast, np.sort(rows.matching_chunk_ids([condition])))
