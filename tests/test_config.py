import tomllib
from pathlib import Path

import pytest

from rag.config import DEFAULT_CONFIG_FILE, Settings, load_settings, settings_as_flat_dict
from rag.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config.toml"


def test_packaged_defaults_are_the_repository_config_toml():
    assert DEFAULT_CONFIG_FILE.read_bytes() == REPO_CONFIG.read_bytes()
    with REPO_CONFIG.open("rb") as fh:
        data = tomllib.load(fh)
    flat = settings_as_flat_dict(Settings.load(environ={}))
    assert flat["index.path"] == data["index"]["path"]
    assert flat["chunking.chunk_size"] == data["chunking"]["chunk_size"]
    # Every setting in the file is a field and every field is in the file.
    assert set(flat) == {f"{s}.{k}" for s, section in data.items() for k in section}


def test_layers_override_in_order_and_record_their_origin(tmp_path):
    user = tmp_path / "mine.toml"
    user.write_text("[search]\nk = 7\n[chunking]\nchunk_size = 120\n")
    settings, origins = load_settings(
        user, overrides={"chunking.chunk_size": 150, "index.path": None},
        environ={"RAG_SEARCH_K": "9", "RAG_INGEST_EXCLUDE": '["*.tmp", "drafts/*"]'},
    )
    assert settings.search.k == 9 and origins["search.k"].layer == "env"
    assert settings.chunking.chunk_size == 150 and origins["chunking.chunk_size"].layer == "flag"
    assert settings.ingest.exclude == ["*.tmp", "drafts/*"]
    assert origins["index.path"].layer == "default"  # a None override means "flag not given"


def test_rag_config_env_names_a_user_file(tmp_path):
    user = tmp_path / "c.toml"
    user.write_text("[index]\nfactory = 'HNSW32'\n")
    settings = Settings.load(environ={"RAG_CONFIG": str(user)})
    assert settings.index.factory == "HNSW32"


@pytest.mark.parametrize(
    "environ, words",
    [
        ({"RAG_CHUNKING_CHUNK_SIZE": "99999"}, ["chunking.chunk_size", "8192", "RAG_CHUNKING_CHUNK_SIZE"]),
        ({"RAG_EMBEDDING_BATCH_SIZE": "zero"}, ["embedding.batch_size", "integer"]),
        ({"RAG_CHUNKING_CHUNK_OVERLAP": "300"}, ["chunk_overlap (300) must be smaller than chunk_size (200)"]),
        ({"RAG_INDEX_DEVICE": "tpu"}, ["index.device", "'auto' or 'cpu'"]),
    ],
)
def test_bad_values_name_the_key_and_the_allowed_range(environ, words):
    with pytest.raises(ConfigError) as info:
        Settings.load(environ=environ)
    for word in words:
        assert word in str(info.value)


def test_unknown_keys_are_refused(tmp_path):
    user = tmp_path / "c.toml"
    user.write_text("[chunking]\nchunk_sise = 100\n")
    with pytest.raises(ConfigError, match="unknown setting 'chunking.chunk_sise'"):
        Settings.load(user, environ={})
    with pytest.raises(ConfigError, match="unknown setting 'search.kk'"):
        Settings.load(overrides={"search.kk": 3}, environ={})


def test_broken_toml_names_the_file(tmp_path):
    user = tmp_path / "broken.toml"
    user.write_text("[search\nk=1")
    with pytest.raises(ConfigError, match="broken.toml: not valid TOML"):
        Settings.load(user, environ={})


def test_a_template_field_the_prompt_never_fills_is_named_when_settings_load():
    with pytest.raises(ConfigError, match=r"prompt\.examples_en .*unknown template field \{answer\}"):
        Settings.load(overrides={"prompt.examples_en": [["Which room?", "room {answer} [1]"]]}, environ={})
    with pytest.raises(ConfigError, match=r"prompt\.system_en .*unknown template field \{qestion\}"):
        Settings.load(overrides={"prompt.system_en": "Answer {qestion} or say {idk}"}, environ={})
    with pytest.raises(ConfigError, match=r"prompt\.chat_passage_zh"):
        Settings.load(overrides={"prompt.chat_passage_zh": "[{number}] {title"}, environ={})
    assert Settings.load(overrides={"prompt.examples_en": [["Q?", "{{literal}} {idk}"]]}, environ={})
