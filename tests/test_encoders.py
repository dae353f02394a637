"""The embedding backends: the ONNX export run by OpenVINO and ONNX Runtime against torch's
sentence-transformers, the export's cache and its checks, and what a fresh process imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rag import Settings
from rag.chunk import HFTokenCounter
from rag.embed import Embedder
from rag.encoders.onnx_export import export_folder
from rag.errors import ConfigError

TEXTS = [
    "How many days of annual leave do employees in Lisbon get?",
    "VPN",
    "Chapter 2: error code E-451 means the lidar sensor is blocked; clean the lens with a dry cloth.",
    "Oxidative phosphorylation couples electron transport to ATP synthesis. " * 50,  # truncated at 256
    "员工每年有二十天带薪年假。",
]


def _embedder(cache: Path, **overrides: object) -> Embedder:
    settings = Settings.load(overrides={f"embedding.{k}": v for k, v in overrides.items()}, environ={})
    e = Embedder(settings.embedding, cache)
    e.warm_up()
    return e


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def reference(cache: Path) -> np.ndarray:
    return _embedder(cache, backend="torch", precision="fp32").embed_passages(TEXTS)


@pytest.mark.parametrize("backend, precision, minimum", [
    ("openvino", "fp32", 0.9999), ("openvino", "bf16", 0.999), ("onnxruntime", "fp32", 0.9999),
])
def test_compiled_backends_agree_with_torch(cache, reference, backend, precision, minimum):
    e = _embedder(cache, backend=backend, precision=precision)
    assert (e.backend, e.precision) == (backend, precision)
    # one at a time and batched (padded to the longest): the same vectors either way
    one_by_one = np.stack([e.embed_passages([t])[0] for t in TEXTS])
    batched = e.embed_passages(TEXTS)
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    assert (one_by_one * reference).sum(axis=1).min() >= minimum
    assert (batched * reference).sum(axis=1).min() >= minimum
    assert e.dimension == 384 and e.max_seq_length == 256


def test_int8_weights_on_openvino_are_close_and_nearly_independent_of_the_batch(cache, reference):
    e = _embedder(cache, precision="int8")
    assert (e.backend, e.precision) == ("openvino", "int8")
    one_by_one = np.stack([e.embed_passages([t])[0] for t in TEXTS])
    batched = e.embed_passages(TEXTS)
    cosine = (batched * reference).sum(axis=1)
    assert 0.999 <= cosine.min() and cosine.max() < 0.99999  # quantized: close, and really not fp32
    # Activations are quantized row by row: batched with longer texts, a text's vector moves only
    # with its padding (ONNX Runtime's 8-bit model, which scales the batch together, moved 0.04).
    assert np.abs(one_by_one - batched).max() < 5e-3
    assert (one_by_one * batched).sum(axis=1).min() > 0.9999


def test_int8_on_onnxruntime_is_its_own_export(cache, reference):
    e = _embedder(cache, backend="onnxruntime", precision="int8")
    assert (e.backend, e.precision) == ("onnxruntime", "int8")
    cosine = (e.embed_passages(TEXTS) * reference).sum(axis=1)
    assert 0.95 <= cosine.min() < 0.99999
    record = json.loads((export_folder(e.name, e.path, cache) / "export.json").read_text())
    assert set(record["files"]) == {"model.onnx", "model-int8.onnx", "model.xml", "model.bin"}


@pytest.mark.parametrize("flags, backend, expected", [
    ({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}, "auto", ("openvino", "bf16")),
    ({"avx2", "amx_bf16", "amx_int8"}, "auto", ("openvino", "bf16")),
    ({"avx2", "avx512f", "avx512_vnni"}, "auto", ("openvino", "int8")),
    ({"avx2", "avx512f", "avx512_vnni"}, "onnxruntime", ("onnxruntime", "fp32")),
    ({"avx2", "avx512f", "avx512_vnni"}, "torch", ("torch", "fp32")),
    ({"avx2", "fma", "avx512f"}, "auto", ("openvino", "fp32")),
    ({"avx2", "fma"}, "auto", ("openvino", "fp32")),
])
def test_auto_precision_follows_the_cpus_flags(cache, monkeypatch, flags, backend, expected):
    """bf16 where the CPU runs it natively; 8-bit weights on OpenVINO where it has 8-bit dot
    products (not ONNX Runtime's 8-bit model, whose vectors move with the batch); fp32 elsewhere."""
    monkeypatch.setattr("rag.embed.cpu_flags", lambda: frozenset(flags))
    e = _embedder(cache, backend=backend)
    assert (e.backend, e.precision) == expected
    assert {k: e.identity()[k] for k in ("backend", "precision")} == dict(zip(("backend", "precision"), expected))


def test_the_export_keeps_an_openvino_ir_whose_pages_go_back_after_loading(cache):
    """The IR copy is verified like the ONNX file; a damaged one is not read (the ONNX is)."""
    from rag.encoders.onnx_export import openvino_ir

    e = _embedder(cache, backend="openvino", precision="fp32")
    folder = export_folder(e.name, e.path, cache)
    assert openvino_ir(folder / "model.onnx") == folder / "model.xml"
    e.embed_queries(["warm"])
    mapped = [line for line in Path("/proc/self/maps").read_text().splitlines() if str(folder) in line]
    assert mapped, "the IR's weights are mapped from the file"
    data = bytearray((folder / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "damaged.bin").write_bytes(bytes(data))  # a new file: live mappings keep the old one
    (folder / "damaged.bin").replace(folder / "model.bin")
    assert openvino_ir(folder / "model.onnx") is None


def test_auto_picks_openvino_on_a_cpu(cache):
    e = _embedder(cache)
    assert e.backend == "openvino"


def test_a_damaged_export_is_made_again_not_read(cache, reference):
    e = _embedder(cache, backend="onnxruntime", precision="fp32")
    onnx = export_folder(e.name, e.path, cache) / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights: still a loadable graph
    onnx.write_bytes(bytes(data))
    again = _embedder(cache, backend="onnxruntime", precision="fp32")
    assert (again.embed_passages(TEXTS) * reference).sum(axis=1).min() >= 0.9999
    assert json.loads((onnx.parent / "export.json").read_text())["files"]["model.onnx"]["size"] == onnx.stat().st_size


def test_a_model_the_export_cannot_hold_stays_on_torch(tmp_path, cache):
    """MiniLM with a Dense projection: auto keeps it on torch; naming openvino is refused."""
    from sentence_transformers import SentenceTransformer, models

    from rag.embed import resolve_model

    minilm = SentenceTransformer(str(resolve_model("all-MiniLM-L6-v2")[1]), device="cpu", local_files_only=True)
    dense = models.Dense(in_features=384, out_features=32, bias=False)
    folder = tmp_path / "minilm-32"
    SentenceTransformer(modules=[minilm[0], minilm[1], dense], device="cpu").save(str(folder))
    e = _embedder(cache, model=str(folder))
    assert e.backend == "torch" and e.dimension == 32
    with pytest.raises(ConfigError, match=r"embedding.backend = 'openvino' cannot run minilm-32: its modules are"):
        _embedder(cache, model=str(folder), backend="openvino")


def test_an_unusable_cache_leaves_auto_on_torch_and_fails_a_named_backend(tmp_path):
    """A cache folder that cannot be written (here: a file where the folder should be)."""
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    assert _embedder(blocked).backend == "torch"
    with pytest.raises(ConfigError, match="embedding.backend 'openvino' failed to load .*use embedding.backend = 'torch'"):
        _embedder(blocked, backend="openvino")


def test_an_unusable_cache_on_a_cpu_without_bf16_falls_back_to_torch_in_fp32(tmp_path, monkeypatch):
    """auto's 8-bit choice is OpenVINO's: when the export cannot be made, torch runs fp32."""
    monkeypatch.setattr("rag.embed.cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_vnni"}))
    blocked = tmp_path / "cache"
    blocked.write_text("not a folder")
    e = _embedder(blocked)
    assert (e.backend, e.precision) == ("torch", "fp32")


def test_int8_on_a_backend_without_it_is_refused(cache):
    with pytest.raises(ConfigError, match="int8"):
        _embedder(cache, backend="torch", precision="int8")


def test_token_counts_match_the_transformers_tokenizer(cache):
    fast = HFTokenCounter(_embedder(cache, backend="openvino").tokenizer)
    slow = HFTokenCounter(_embedder(cache, backend="torch").tokenizer)
    assert fast.special_tokens == slow.special_tokens == 2
    assert fast.count_many(TEXTS) == slow.count_many(TEXTS)
    assert fast.offsets(TEXTS[2]) == slow.offsets(TEXTS[2])


def test_the_chunkers_token_ids_embed_as_their_text_does(cache):
    """Indexing hands the encoder the ids the chunker already made: the same vectors, one
    tokenization fewer. Headings, a table and a long section (cut into windows) among them."""
    from rag.indexing import make_chunker
    from rag.records import Document, Section

    e = _embedder(cache, backend="openvino", precision="fp32")
    document = Document("d", [
        Section(TEXTS[2], headings=("Manual", "Errors")),
        Section(TEXTS[3]),
        Section("", table_header="part,price", table_rows=tuple(f"P-{i},{i}.50" for i in range(40))),
        Section(TEXTS[4], page=3),
    ])
    chunks = make_chunker(Settings.load(environ={}), e).chunk(document)
    assert len(chunks) > 4 and all(c.token_ids for c in chunks)
    texts = [c.embed_text for c in chunks]
    assert np.array_equal(e.embed_passages(texts, [c.token_ids for c in chunks]), e.embed_passages(texts))


def _imported_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_help_and_a_search_import_nothing_heavy(make_engine, sample_docs, tmp_path):
    """What keeps `rag --help` near 0.1 s and a fresh `rag search` near 1 s (benchmarks/startup_bench.py)."""
    helped = _imported_after("import sys; sys.argv = ['rag', '--help']\nfrom rag.cli import main\n"
                             "try:\n    main()\nexcept SystemExit:\n    pass")
    assert not helped & {"rag.engine", "rag.config", "pydantic", "numpy", "torch", "rich.progress", "rich.markdown"}
    make_engine().index([sample_docs])
    searched = _imported_after(
        "from rag import Engine, Settings\n"
        f"Engine(Settings.load(overrides={{'index.path': {str(tmp_path / 'index')!r}}}, environ={{}}))"
        ".search('paid vacation days')")
    assert "rag.embed" in searched and not searched & {"torch", "transformers", "sentence_transformers"}


def test_a_questions_sentences_stay_on_the_latency_compilation(cache):
    """Answering embeds a question's few dozen sentences (rag.focus): on the latency compilation,
    which is faster for them, so that a server never builds the throughput one (200 MB)."""
    e = _embedder(cache, backend="openvino", precision="fp32")
    e.embed_passages([f"Sentence {i} of a passage about annual leave." for i in range(60)])
    runner = e.encoder._run  # type: ignore[attr-defined]
    assert runner._request is not None and runner._queue is None
