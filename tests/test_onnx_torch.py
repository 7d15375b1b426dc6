"""The verifier's ONNX -> torch converter against onnxruntime on exported classifiers."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from cloud_stub.verification.onnx_torch import UnsupportedOnnxError, onnx_to_torch
from edge_sdk.sessions import cpu_session
from exporters.onnx_export import module_to_onnx


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.LeakyReLU(0.1),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5, stride=2, padding=2, groups=2),
        nn.ReLU(),
        nn.AvgPool2d(3, 1, 1),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(16 * 49, 32),
        nn.Tanh(),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    ).eval()


def _export(module: nn.Module, x: torch.Tensor, *, dynamo: bool) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            return module_to_onnx(module, x).SerializeToString()
        buffer = io.BytesIO()
        torch.onnx.export(
            module,
            (x,),
            buffer,
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}},
        )
        return buffer.getvalue()


@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "legacy"])
def test_converted_model_matches_onnxruntime_and_trains(dynamo: bool) -> None:
    module = _cnn()
    x = torch.rand(5, 1, 28, 28)
    data = _export(module, x[:2], dynamo=dynamo)
    converted = onnx_to_torch(data)
    session = cpu_session(data)
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(converted(x).detach().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(expected, module(x).detach().numpy(), atol=1e-5)
    # Every conv and dense weight is a trainable parameter of the conversion (BN may be folded in).
    dense = sum(p.numel() for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear) for p in m.parameters())
    assert sum(p.numel() for p in converted.parameters()) >= dense
    before = converted(x).detach()
    optimizer = torch.optim.SGD(converted.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(converted(x), torch.arange(5))
    loss.backward()
    optimizer.step()
    assert not torch.allclose(converted(x), before)


def test_unsupported_operators_are_named() -> None:
    node = helper.make_node("Einsum", ["image", "image"], ["logits"], equation="bi,bj->bj")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(UnsupportedOnnxError, match="Einsum"):
        onnx_to_torch(model)
    with pytest.raises(UnsupportedOnnxError, match="auto_pad"):
        conv = helper.make_node("Conv", ["image", "w"], ["logits"], auto_pad="SAME_UPPER")
        weight = onnx.numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 4, 4])
        logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 4, 4])
        graph = helper.make_graph([conv], "g", [image], [logits], initializer=[weight])
        onnx_to_torch(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))(torch.ones(1, 1, 4, 4))
