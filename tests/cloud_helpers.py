"""Helper of the cloud tests: a small valid ONNX classifier built without torch."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["linear_classifier_onnx"]


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
