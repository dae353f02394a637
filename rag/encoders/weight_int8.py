"""8-bit weights for an exported encoder run by OpenVINO, made in memory when it is compiled.

A query is a dozen tokens: its forward pass reads every weight once and does little with each,
so on a 2-core CPU it waits on memory (MiniLM-L6: 3.0 ms in fp32, 1.6 ms with these weights).
Each matrix product's constant weights become unsigned 8-bit per output column (a scale and a
zero point each) behind the decompression pattern OpenVINO's CPU plugin runs natively, which
also quantizes the activations row by row (dynamic quantization). Unlike ONNX Runtime's dynamic
quantization, which scales a whole batch's activations together (a text's vector moved by up to
0.04 with the texts batched with it), a text's vector changes only with the padding its batch
adds, by at most about 0.002 (cosine above 0.9999).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LEVELS = 255


def quantize_columns(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, zero points, scales) of a [in, out] matrix, asymmetric per output column, so
    that (codes - zero points) * scales is within half a step of each weight."""
    low = np.minimum(weights.min(axis=0, keepdims=True), 0.0)
    high = np.maximum(weights.max(axis=0, keepdims=True), 0.0)
    scales = np.maximum(high - low, np.finfo(np.float32).tiny) / LEVELS
    zero = np.clip(np.round(-low / scales), 0, LEVELS)
    codes = np.clip(np.round(weights / scales + zero), 0, LEVELS)
    return codes.astype(np.uint8), zero.astype(np.uint8), scales.astype(np.float32)


def compress_matmul_weights(model: Any) -> int:
    """Rewrites, in place, every MatMul of `model` (an openvino.Model) whose second input is a
    constant [in, out] fp32 matrix into u8 codes decompressed on the fly. Returns how many."""
    import openvino as ov
    import openvino.opset13 as ops

    count = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "MatMul" or node.get_transpose_b():
            continue
        constant = node.input_value(1).get_node()
        if constant.get_type_name() != "Constant" or constant.get_element_type() != ov.Type.f32 \
                or len(constant.get_output_shape(0)) != 2:
            continue
        codes, zero, scales = quantize_columns(constant.get_data().astype(np.float32))
        weights = ops.multiply(ops.subtract(ops.convert(ops.constant(codes, ov.Type.u8), ov.Type.f32),
                                            ops.convert(ops.constant(zero, ov.Type.u8), ov.Type.f32)),
                               ops.constant(scales))
        node.input(1).replace_source_output(weights.output(0))
        count += 1
    return count
