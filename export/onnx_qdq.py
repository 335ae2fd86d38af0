"""ONNX Q/DQ graphs from NNCF-quantized models, in the form TensorRT and ONNX Runtime expect
(export-time graph transforms of the INT8 ONNX and OpenVINO exports)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from torch import nn

from baryir.quantize.scheme import quantizers


@contextmanager
def qdq_export_mode(model: nn.Module) -> Iterator[None]:
    """Within the block, the model's quantizers trace to QuantizeLinear/DequantizeLinear pairs
    (instead of NNCF's FakeQuantize custom op); the previous modes come back afterwards."""
    from nncf.torch.quantization.layers import QuantizerExportMode

    found = quantizers(model)
    if not found:
        raise ValueError("the model has no NNCF quantizers; int8 export needs `baryir quantize` output")
    before = [q._export_mode for _, q in found]
    for _, q in found:
        q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    try:
        yield
    finally:
        for (_, q), mode in zip(found, before):
            q.set_export_mode(mode)


def fold_weight_quantizers(model):
    """Replace ``QuantizeLinear(constant float weight)`` by the int8 weight it computes, so the
    graph stores int8 weights feeding DequantizeLinear (4x smaller; the pattern TensorRT and
    ONNX Runtime fuse into integer convolutions). Other nodes are untouched."""
    from onnx import numpy_helper

    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants = [n for n in graph.node if n.op_type == "Constant" and n.attribute]
    values.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in constants})
    kept, folded = [], []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in values:
            kept.append(node)
            continue
        w, scale = values[node.input[0]], values[node.input[1]]
        zero = values[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros((), np.uint8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1:  # per channel: broadcast along ``axis``
            shape = [1] * w.ndim
            shape[axis % w.ndim] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        info = np.iinfo(zero.dtype)
        q = np.clip(np.rint(w / scale) + zero.astype(np.int32), info.min, info.max).astype(zero.dtype)
        folded.append(numpy_helper.from_array(q, node.output[0]))
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(folded)
    return model


#: x86 CPUs without VNNI (AVX2 only) compute int8 convolutions with ``vpmaddubsw``: it adds two
#: u8 x s8 products into int16 and saturates (2 x 255 x 127 > 32767), so full-range weights give
#: wrong pixels. Weights in [-64, 63] keep every pair sum in range on every x86 CPU class.
CPU_WEIGHT_LEVELS = (-64, 63)


def _int8_weights(graph):
    """(DequantizeLinear node, its int8 initializer as an array) for every int8 weight of ``graph``."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            q = numpy_helper.to_array(inits[node.input[0]])
            if q.dtype == np.int8:
                yield node, q


def weights_not_7bit(model) -> list[str]:
    """What would make an INT8 graph wrong on CPUs without VNNI: int8 weights feeding a
    DequantizeLinear outside :data:`CPU_WEIGHT_LEVELS`, and quantizers that are not Q/DQ pairs
    (NNCF's own FakeQuantize op, whose weights cannot be requantized here). Empty when right."""
    low, high = CPU_WEIGHT_LEVELS
    wrong = [f"{n.name or n.op_type}: a {n.op_type} op" for n in model.graph.node if n.op_type == "FakeQuantize"]
    for node, q in _int8_weights(model.graph):
        if q.size and (q.min() < low or q.max() > high):
            wrong.append(f"{node.input[0]}: int8 weights in [{q.min()}, {q.max()}]")
    return wrong


def halve_weight_range(model) -> int:
    """Requantize every int8 weight initializer feeding a DequantizeLinear to 7 bits
    (``q / 2`` rounded into :data:`CPU_WEIGHT_LEVELS`, scale doubled: the same real values,
    one bit coarser). Returns how many weights were changed."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    low, high = CPU_WEIGHT_LEVELS
    changed = 0
    for node, q in list(_int8_weights(graph)):
        if uses[node.input[0]] != 1 or uses[node.input[1]] != 1:
            continue
        scale = numpy_helper.to_array(inits[node.input[1]])
        q7 = np.clip(np.rint(q.astype(np.float32) / 2), low, high).astype(np.int8)
        inits[node.input[0]].CopyFrom(numpy_helper.from_array(q7, node.input[0]))
        inits[node.input[1]].CopyFrom(numpy_helper.from_array((scale * 2).astype(scale.dtype), node.input[1]))
        changed += 1
    return changed
