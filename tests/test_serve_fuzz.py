"""The service fuzzed from its own OpenAPI schema (schemathesis): every operation, with valid and
invalid requests generated from the schema, sent through real HTTP to a real `rag serve` with an
admin key (the widest surface: uploads and deletes included). No request may get a 500, and
every answer must fit the schema the service publishes."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from rag.serve.keys import KeyStore
from serving import build_knowledge, running_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, embedder):
    """A server of its own: the fuzzer deletes and uploads at random."""
    root = tmp_path_factory.mktemp("fuzz")
    index = build_knowledge(root, embedder)
    _, token = KeyStore(index / "keys.sqlite").add("fuzzer", "admin")
    with running_server(index, root / "server.log", env={"RAG_ANSWER_GENERATOR": "extractive",
                                                         "RAG_SERVE_UPLOAD_DIR": str(root / "spool")}) as server:
        server.tokens["fuzzer"] = token
        yield server


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    return schemathesis.openapi.from_url(f"{fuzzed.base}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_500_or_an_answer_outside_the_schema(case, fuzzed):
    case.call_and_validate(base_url=fuzzed.base, headers=fuzzed.auth("fuzzer"), timeout=60,
                           checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
