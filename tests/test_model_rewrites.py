"""What rag does to models before OpenVINO runs them, on small real graphs: Q6_K-style zero points
held as one number, 8-bit weights per output column for the embedder, and mapped weight pages
handed back to the page cache."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

ov = pytest.importorskip("openvino")
ops = pytest.importorskip("openvino.opset13")

from rag.encoders.weight_int8 import compress_matmul_weights, quantize_columns  # noqa: E402
from rag.generate.ovprepare import uniform_zero_points  # noqa: E402
from rag.mapped_files import release_mapped_weights  # noqa: E402


def _grouped_u8_matmul(zero: np.ndarray, rng: np.random.Generator) -> ov.Model:
    """x @ W.T where W = (codes - zero) * scale in groups of 16, as OpenVINO reads a GGUF's Q6_K."""
    rows, groups = 8, 4
    codes = rng.integers(0, 64, (rows, groups, 16), dtype=np.uint8)
    scale = rng.random((rows, groups, 1), dtype=np.float32).astype(np.float16)
    x = ops.parameter([1, groups * 16], ov.Type.f32, name="x")
    weights = ops.multiply(ops.subtract(ops.convert(ops.constant(codes, ov.Type.u8), ov.Type.f16),
                                        ops.convert(ops.constant(zero, ov.Type.u8), ov.Type.f16)), ops.constant(scale))
    weights = ops.convert(ops.reshape(weights, ops.constant(np.array([rows, groups * 16])), False), ov.Type.f32)
    return ov.Model([ops.matmul(x, weights, False, True)], [x])


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request().infer({0: x})[0].copy()


def test_uniform_zero_points_become_one_number_and_compute_the_same(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((1, 64), dtype=np.float32)
    uniform, varied = tmp_path / "uniform", tmp_path / "varied"
    for folder, zero in ((uniform, np.full((8, 4, 1), 32, np.uint8)),
                         (varied, rng.integers(0, 64, (8, 4, 1), dtype=np.uint8))):
        folder.mkdir()
        ov.save_model(_grouped_u8_matmul(zero, rng), folder / "openvino_model.xml", compress_to_fp16=False)
    before = _run(uniform / "openvino_model.xml", x)
    assert uniform_zero_points(uniform) == 1
    assert np.array_equal(_run(uniform / "openvino_model.xml", x), before)
    zeros = [node for node in ov.Core().read_model(uniform / "openvino_model.xml").get_ordered_ops()
             if node.get_type_name() == "Constant" and node.get_element_type() == ov.Type.u8]
    assert sorted(int(np.prod(z.get_output_shape(0))) for z in zeros) == [1, 8 * 4 * 16]
    # Zero points that differ are real information: left alone, the file untouched.
    bytes_before = (varied / "openvino_model.bin").read_bytes()
    assert uniform_zero_points(varied) == 0
    assert (varied / "openvino_model.bin").read_bytes() == bytes_before


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.tuples(st.integers(1, 12), st.integers(1, 12)),
              elements=st.floats(-8, 8, width=32, allow_nan=False)))
def test_8_bit_columns_reconstruct_every_weight_within_half_a_step(weights):
    codes, zero, scales = quantize_columns(weights)
    restored = (codes.astype(np.float32) - zero.astype(np.float32)) * scales
    assert codes.dtype == zero.dtype == np.uint8 and scales.shape == (1, weights.shape[1])
    assert np.all(np.abs(restored - weights) <= scales * 0.5 + 1e-6 * (1 + np.abs(weights)))
    assert np.all(restored[weights == 0] == 0)  # an exact zero stays exactly zero


def test_8_bit_weights_replace_constant_matmuls_only():
    rng = np.random.default_rng(1)
    x = ops.parameter([2, 6], ov.Type.f32, name="x")
    y = ops.parameter([6, 3], ov.Type.f32, name="y")
    constant = ops.matmul(x, ops.constant(rng.standard_normal((6, 3)).astype(np.float32)), False, False)
    between = ops.matmul(x, y, False, False)  # two activations: nothing to compress
    model = ov.Model([constant, between], [x, y])
    exact = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    inputs = {0: rng.standard_normal((2, 6)).astype(np.float32), 1: rng.standard_normal((6, 3)).astype(np.float32)}
    expected = [exact.create_infer_request().infer(inputs)[i].copy() for i in range(2)]
    assert compress_matmul_weights(model) == 1
    compressed = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = compressed.create_infer_request().infer(inputs)
    assert np.allclose(got[0], expected[0], atol=0.05) and not np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])


def test_released_pages_of_a_mapped_file_read_back_the_same(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    data = np.arange(4 << 20, dtype=np.uint8)
    (folder / "model.bin").write_bytes(data.tobytes())
    with open(folder / "model.bin", "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        view = np.frombuffer(mapped, dtype=np.uint8)
        assert int(view.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))  # every page read in
        assert release_mapped_weights(folder) >= data.nbytes
        assert release_mapped_weights(tmp_path / "elsewhere") == 0
        assert np.array_equal(view, data)  # read again from the file
        del view
        mapped.close()
