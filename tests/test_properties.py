"""Property-based tests of the three readers of untrusted text: whatever the input, the outcome is
a result or a RagError with a message, never another exception."""

from __future__ import annotations

import json
import tomllib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rag import RagError
from rag.config import Settings, known_keys, load_settings
from rag.filters import parse_filters, to_sql
from rag.ingest.json_records import iter_jsonl_lines
from rag.records import Document

INGEST = Settings.load(environ={}).ingest
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
records = st.fixed_dictionaries({}, optional={
    "id": json_values, "text": json_values, "title": json_values, "metadata": json_values,
}) | json_values
lines = st.one_of(
    records.map(lambda r: json.dumps(r).encode() + b"\n"),
    records.map(lambda r: json.dumps(r).encode()[: len(json.dumps(r)) // 2] + b"\n"),  # cut short
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@FAST
@given(st.lists(lines, max_size=6), st.booleans())
def test_jsonl_reader_yields_documents_or_errors_only(stream, whole_lines):
    for item in iter_jsonl_lines(stream, "in.jsonl", "in.jsonl", INGEST, None, "stream", whole_lines):
        assert isinstance(item, (Document, RagError))
        if isinstance(item, RagError):
            assert str(item).startswith("in.jsonl line ") and len(str(item)) > 20
        else:
            assert isinstance(item.doc_id, str) and item.doc_id and item.text


filter_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, op, v: f"{k}{op}{v}",
              st.sampled_from(["mtime", "page", "indexed_at", "source", "doc_id", "collection", "dept", "a.b", "é"]),
              st.sampled_from(["=", ">=", "<=", ">", "<", "==", "=>"]),
              st.one_of(st.text(max_size=20), st.dates().map(str), st.integers().map(str),
                        st.builds(lambda a, b: f"{a}..{b}", st.text(max_size=8), st.text(max_size=8)))),
)


@FAST
@given(st.lists(filter_text, max_size=3))
def test_filter_parser_gives_filters_or_an_error_naming_the_filter(expressions):
    try:
        filters = parse_filters(expressions)
    except RagError as exc:
        assert "--filter" in str(exc)
        return
    where, params = to_sql(filters)
    assert where.count("?") == len(params)


toml_scalars = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=15), st.lists(st.text(max_size=5), max_size=3))


def _toml(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(known_keys() + ["index.nope", "nosection"]), toml_scalars, max_size=4),
       st.dictionaries(st.sampled_from(known_keys()), st.text(max_size=15), max_size=3),
       st.text(max_size=30))
def test_settings_loader_gives_settings_or_an_error_naming_the_key(tmp_path_factory, file_values, env_values, junk):
    folder = tmp_path_factory.mktemp("config")
    body = "\n".join(f"{key.split('.')[0]}.{key.split('.', 1)[-1]} = {_toml(value)}" if "." in key
                     else f"{key} = {_toml(value)}" for key, value in file_values.items())
    for text in (body, body + "\n" + junk):
        path = folder / "user.toml"
        path.write_text(text, encoding="utf-8")
        environ = {"RAG_" + key.replace(".", "_").upper(): value for key, value in env_values.items()}
        try:
            loaded = load_settings(path, environ=environ)[0]
        except RagError as exc:
            assert str(exc).strip()
            continue
        assert isinstance(loaded, Settings)
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise AssertionError("a file that is not TOML was accepted") from None
