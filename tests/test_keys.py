"""API keys of the service: printed once, stored as hashes, scoped, filter-limited, revocable, and
kept across index writes. The real CLI and the real key store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rag import RagError
from rag.serve.keys import KeyStore, keys_path


def test_a_key_is_returned_once_stored_as_a_hash_and_verified_in_constant_time(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    key, token = store.add("hr-portal", "read", ["source=hr/*", "collection=hr"])
    secret = token.split("_", 2)[2]
    assert secret.encode() not in (tmp_path / "keys.sqlite").read_bytes(), "only the hash is stored"
    assert (tmp_path / "keys.sqlite").stat().st_mode & 0o777 == 0o600
    found = store.verify(token)
    assert found == key and found.filters == ("source=hr/*", "collection=hr")
    for wrong in (token[:-1] + ("A" if token[-1] != "A" else "B"), "rag_000000000000_" + secret, "", "Bearer x",
                  token + "x", token.replace("rag_", "RAG_")):
        assert store.verify(wrong) is None, wrong


def test_scopes_include_the_ones_below_and_revocation_is_immediate(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    tokens = {scope: store.add(f"k-{scope}", scope)[1] for scope in ("read", "write", "admin")}
    allowed = {scope: [n for n in ("read", "write", "admin") if store.verify(t).allows(n)]
               for scope, t in tokens.items()}
    assert allowed == {"read": ["read"], "write": ["read", "write"], "admin": ["read", "write", "admin"]}
    assert store.revoke("k-write") and store.verify(tokens["write"]) is None
    assert not store.revoke("k-write"), "already revoked"
    assert [k.name for k in store.list()] == ["k-admin", "k-read"]
    # The name is free again; the old token stays dead.
    _, again = store.add("k-write", "write")
    assert store.verify(again).name == "k-write" and store.verify(tokens["write"]) is None


@pytest.mark.parametrize("name, scope, filters, message", [
    ("bad name", "read", [], "key name 'bad name': use 1-64 letters"),
    ("ok", "owner", [], "scope 'owner': use one of read, write, admin"),
    ("ok", "read", ["mtime>=soon"], "--filter 'mtime>=soon': mtime is a date"),
])
def test_bad_keys_are_refused_with_a_reason(tmp_path, name, scope, filters, message):
    store = KeyStore(tmp_path / "keys.sqlite")
    with pytest.raises(RagError, match=message):
        store.add(name, scope, filters)
    assert store.list() == []


def test_a_second_active_key_of_one_name_is_refused(tmp_path):
    store = KeyStore(tmp_path / "keys.sqlite")
    store.add("portal", "read")
    with pytest.raises(RagError, match="a key named 'portal' exists; revoke it first"):
        store.add("portal", "admin")


def test_keys_live_beside_the_index_versions_and_survive_writes(make_engine, sample_docs):
    engine = make_engine()
    engine.index([sample_docs])
    store = KeyStore(keys_path(engine.store.path))
    _, token = store.add("portal", "read")
    (sample_docs / "new.md").write_text("A new page about parking.")
    engine.index([sample_docs])
    engine.delete(["new.md"])
    assert store.verify(token).name == "portal"
    assert engine.check().problems == []


def test_rag_keys_cli_prints_the_key_once_and_never_lists_it(cli_env, tmp_path):
    rag = [sys.executable, "-m", "rag", "keys"]
    index = ["--index", str(tmp_path / "idx")]
    added = subprocess.run([*rag, "add", "hr-portal", "--scope", "write", "--filter", "source=hr/*", *index],
                           env=cli_env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert token.startswith("rag_") and "only time it is shown" in added.stderr
    listed = subprocess.run([*rag, "list", "--json", *index], env=cli_env, capture_output=True, text=True, timeout=120)
    assert token not in listed.stdout and token.split("_", 2)[2] not in listed.stdout
    assert [(k["name"], k["scope"], k["filters"]) for k in json.loads(listed.stdout)] == \
        [("hr-portal", "write", ["source=hr/*"])]
    assert KeyStore(tmp_path / "idx" / "keys.sqlite").verify(token).scope == "write"
    gone = subprocess.run([*rag, "revoke", "hr-portal", *index], env=cli_env, capture_output=True, text=True,
                          timeout=120)
    assert gone.returncode == 0 and KeyStore(tmp_path / "idx" / "keys.sqlite").verify(token) is None
    again = subprocess.run([*rag, "revoke", "hr-portal", *index], env=cli_env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1 and "no active key named 'hr-portal'" in again.stderr


def test_on_behalf_keys_are_marked_never_admin_and_older_key_files_gain_the_column(tmp_path):
    import sqlite3

    path = tmp_path / "keys.sqlite"
    with sqlite3.connect(path) as conn:  # a key store written before --on-behalf existed
        conn.executescript("""CREATE TABLE keys (key_id TEXT PRIMARY KEY, name TEXT NOT NULL, scope TEXT NOT NULL,
            filters TEXT NOT NULL, digest TEXT NOT NULL, created_at TEXT NOT NULL, revoked_at TEXT);
            INSERT INTO keys VALUES ('0123456789ab', 'old', 'read', '[]',
            '0000000000000000000000000000000000000000000000000000000000000000', '2026-01-01T00:00:00+00:00', NULL);""")
    store = KeyStore(path)
    assert [k.on_behalf for k in store.list()] == [False]  # read as before, without a write
    key, token = store.add("portal", "write", ["collection=kb"], on_behalf=True)
    assert key.on_behalf and store.verify(token).on_behalf and store.verify(token).filters == ("collection=kb",)
    assert {k.name: k.on_behalf for k in store.list()} == {"old": False, "portal": True}
    with pytest.raises(RagError, match="never admins"):
        store.add("portal-admin", "admin", on_behalf=True)
