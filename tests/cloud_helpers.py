"""Helper of the cloud tests: a small valid ONNX classifier built without torch."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["linear_classifier_onnx", "memory_bomb_onnx"]


def linear_classifier_onnx(input_shape: tuple[int, ...], classes: int, *, seed: int = 0) -> bytes:
    """A small, valid ONNX classifier (Flatten + Gemm) built with onnx.helper."""
    rng = np.random.default_rng(seed)
    features = int(np.prod(input_shape))
    weight = numpy_helper.from_array(rng.normal(size=(classes, features)).astype(np.float32) * 0.01, "weight")
    bias = numpy_helper.from_array(np.zeros(classes, np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["image"], ["flat"]),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"], transB=1),
        ],
        "classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def memory_bomb_onnx(input_shape: tuple[int, ...], classes: int, *, channels: int, copies: int) -> bytes:
    """A classifier whose run holds ``copies`` tensors of ``(N, channels, H, W)`` at once.

    Every tensor is within the upload's static size cap, so only the worker's memory
    limit stops it: ``Expand`` the image to ``channels`` planes, ``copies`` scaled copies
    of that, their ``Sum``, a spatial mean and a ``MatMul`` to the classes.
    """
    _, height, width = input_shape
    scaled = [f"scaled{i}" for i in range(copies)]
    nodes = [helper.make_node("Expand", ["image", "wide_shape"], ["wide"])]
    nodes += [helper.make_node("Mul", ["wide", f"scale{i}"], [name]) for i, name in enumerate(scaled)]
    nodes += [
        helper.make_node("Sum", scaled, ["total"]),
        helper.make_node("ReduceMean", ["total"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "weight"], ["logits"]),
    ]
    initializer = [
        numpy_helper.from_array(np.array([1, channels, height, width], np.int64), "wide_shape"),
        numpy_helper.from_array(np.ones((channels, classes), np.float32), "weight"),
        *(numpy_helper.from_array(np.array(i + 1.0, np.float32), f"scale{i}") for i in range(copies)),
    ]
    graph = helper.make_graph(
        nodes,
        "memory-bomb",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=initializer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()
